use super::*;
use crate::image::PackageName;
use std::collections::BTreeMap;

fn sp(hash: char, name: &str) -> StorePath {
    StorePath::parse(&format!("/nix/store/{}-{name}", hash.to_string().repeat(32))).unwrap()
}

fn license(id: Option<&str>) -> License {
    License { spdx_id: id.map(str::to_owned), name: Some("x".into()) }
}

fn inventory(committed: Option<i64>) -> Inventory {
    let (curl, lib, dev) = (sp('a', "curl-8.0-bin"), sp('b', "openssl-3.0.13"), sp('c', "curl-8.0-dev"));
    let meta = |output: &str, licenses: Vec<License>| PathMeta {
        pname: Some("curl".into()),
        version: Some("8.0".into()),
        output: Some(output.into()),
        licenses,
        homepage: Some("https://curl.se".into()),
        description: Some("A tool".into()),
    };
    let paths = BTreeMap::from([
        (
            curl.clone(),
            PathFacts {
                nar_hash: Some("ab".repeat(32)),
                nar_size: 1,
                references: vec![lib.clone()],
                meta: Some(meta("bin", vec![license(Some("curl"))])),
            },
        ),
        (lib.clone(), PathFacts { nar_hash: None, nar_size: 2, references: vec![], meta: None }),
        (
            dev.clone(),
            PathFacts {
                nar_hash: None,
                nar_size: 3,
                references: vec![curl.clone()],
                meta: Some(meta("dev", vec![license(Some("MIT")), license(None)])),
            },
        ),
    ]);
    Inventory {
        arch: Arch::Amd64,
        name: "curl".into(),
        source: SourceInfo {
            description: "the package set repository https://***@git.example/pkgs".into(),
            revision: Some("c".repeat(40)),
            committed,
        },
        requested: vec![RequestedPackage {
            name: PackageName::parse("curl").unwrap(),
            attr: "curl".into(),
            outputs: vec![curl],
        }],
        paths,
    }
}

fn package<'a>(doc: &'a Document, file: &str) -> &'a Package {
    doc.packages.iter().find(|p| p.package_file_name.as_deref().is_some_and(|f| f.ends_with(file))).unwrap()
}

#[test]
fn one_package_per_store_path_with_name_version_hash_and_license() {
    let digest = Digest::of(b"manifest");
    let doc = for_manifest(&digest, &inventory(Some(1_600_000_000)), &Author::default());
    assert_eq!(doc.packages.len(), 4, "the image and three store paths");
    let curl = package(&doc, "curl-8.0-bin");
    assert_eq!(
        (curl.name.as_str(), curl.version_info.as_deref()),
        ("curl", Some("8.0")),
        "the output suffix is dropped"
    );
    assert_eq!(curl.checksums[0].checksum_value, "ab".repeat(32));
    assert_eq!(curl.license_declared, "curl");
    assert_eq!(curl.homepage.as_deref(), Some("https://curl.se"));
    assert!(curl.comment.as_deref().unwrap().contains("attribute curl"), "marked as requested");
    let lib = package(&doc, "openssl-3.0.13");
    assert_eq!((lib.name.as_str(), lib.version_info.as_deref()), ("openssl", Some("3.0.13")));
    assert_eq!(lib.license_declared, NOASSERTION, "no meta: nothing asserted");
    assert!(lib.checksums.is_empty() && lib.comment.is_none());
    assert_eq!(package(&doc, "curl-8.0-dev").license_declared, NOASSERTION, "one license without an SPDX id");
    assert_eq!(doc.creation_info.created, "2020-09-13T12:26:40Z");
    assert!(doc.document_namespace.ends_with(&digest.hex()));
    let has = |from: &str, kind: &str, to: &str| {
        doc.relationships.iter().any(|r| {
            r.spdx_element_id.contains(from) && r.relationship_type == kind && r.related_spdx_element.contains(to)
        })
    };
    assert!(has("DOCUMENT", "DESCRIBES", "SPDXRef-Image"));
    assert!(has("SPDXRef-Image", "DESCRIBES", "curl-8.0-bin"));
    assert!(!has("SPDXRef-Image", "DESCRIBES", "openssl"), "only requested packages are described");
    assert!(has("SPDXRef-Image", "CONTAINS", "openssl"));
    assert!(has("curl-8.0-bin", "DEPENDS_ON", "openssl"));
    assert!(has("curl-8.0-dev", "DEPENDS_ON", "curl-8.0-bin"));
}

#[test]
fn the_bytes_depend_only_on_the_inputs() {
    let digest = Digest::of(b"manifest");
    let a = render(&for_manifest(&digest, &inventory(None), &Author::default()));
    assert_eq!(a, render(&for_manifest(&digest, &inventory(None), &Author::default())));
    let doc: Document = serde_json::from_slice(&a).unwrap();
    assert_eq!(doc.creation_info.created, "1970-01-01T00:00:00Z", "unknown commit time: a fixed time");
    let named = for_manifest(&digest, &inventory(None), &Author { registry: Some("registry.example".into()) });
    assert_eq!(named.document_namespace, format!("https://registry.example/spdx/sha256-{}", digest.hex()));
    assert!(named.creation_info.creators.contains(&"Organization: registry.example".to_owned()));
}

#[test]
fn licenses_become_expressions_only_when_every_part_has_an_id() {
    assert_eq!(license_expression(&[]), NOASSERTION);
    assert_eq!(license_expression(&[license(Some("MIT"))]), "MIT");
    assert_eq!(license_expression(&[license(Some("MIT")), license(Some("Apache-2.0"))]), "MIT AND Apache-2.0");
    assert_eq!(license_expression(&[license(Some("GPL-2.0+"))]), "GPL-2.0+");
    assert_eq!(license_expression(&[license(Some("MIT")), license(None)]), NOASSERTION);
    assert_eq!(license_expression(&[license(Some("MIT OR x)"))]), NOASSERTION, "not an id");
    // nixpkgs 20.09's lib.licenses: llvm-exception comes beside asl20; the classpath one is deprecated.
    assert_eq!(license_expression(&[license(Some("Apache-2.0")), license(Some("LLVM-exception"))]), NOASSERTION);
    assert_eq!(license_expression(&[license(Some("GPL-2.0-with-classpath-exception"))]), NOASSERTION);
}

#[test]
fn names_split_like_parse_drv_name() {
    assert_eq!(name_and_version("hello", None), ("hello".into(), None));
    assert_eq!(name_and_version("hello-2.12.1", None), ("hello".into(), Some("2.12.1".into())));
    assert_eq!(name_and_version("iana-etc-20200729", None), ("iana-etc".into(), Some("20200729".into())));
    assert_eq!(name_and_version("curl-8.0-dev", Some("dev")), ("curl".into(), Some("8.0".into())));
    assert_eq!(name_and_version("curl-8.0-dev", None), ("curl".into(), Some("8.0-dev".into())));
    assert_eq!(name_and_version("hello-lib", Some("out")), ("hello-lib".into(), None));
}

#[test]
fn an_index_holds_its_platforms_images_once_each() {
    let author = Author::default();
    let amd = Digest::of(b"amd");
    let mut arm_inventory = inventory(None);
    arm_inventory.arch = Arch::Arm64;
    let arm = Digest::of(b"arm");
    let platforms = [
        (Arch::Amd64, amd.clone(), for_manifest(&amd, &inventory(None), &author)),
        (Arch::Arm64, arm.clone(), for_manifest(&arm, &arm_inventory, &author)),
    ];
    let index = for_index(&Digest::of(b"index"), "curl", &platforms, &author);
    let ids: Vec<&str> = index.packages.iter().map(|p| p.spdx_id.as_str()).collect();
    assert_eq!(ids.iter().filter(|id| id.starts_with("SPDXRef-Image-")).count(), 2);
    assert_eq!(ids.len(), 1 + 2 + 3, "the index, two images, the shared store paths once");
    let unique: BTreeSet<&&str> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len());
    for arch in ["amd64", "arm64"] {
        let image = format!("SPDXRef-Image-{arch}");
        assert!(
            index.relationships.iter().any(|r| r.spdx_element_id == "SPDXRef-Index" && r.related_spdx_element == image)
        );
        assert!(index.relationships.iter().any(|r| r.spdx_element_id == image && r.relationship_type == "DESCRIBES"));
    }
    assert!(
        !index
            .relationships
            .iter()
            .any(|r| r.spdx_element_id == "SPDXRef-Image" || r.related_spdx_element == "SPDXRef-Image")
    );
}
