use super::*;

fn subject() -> Subject {
    Subject {
        digest: Digest::of(b"image"),
        media_type: "application/vnd.docker.distribution.manifest.v2+json".into(),
        size: 5,
    }
}

fn json(doc: &Document) -> Value {
    serde_json::from_slice(&doc.bytes).unwrap()
}

#[test]
fn an_sbom_is_an_oci_1_1_artifact_of_its_subject() {
    let spdx = Document::new(br#"{"spdxVersion":"SPDX-2.3"}"#.to_vec());
    let a = sbom(&subject(), spdx.clone(), "2020-01-01T00:00:00Z");
    let m = json(&a.manifest);
    assert_eq!(m["mediaType"], MANIFEST_MEDIA_TYPE);
    assert_eq!(m["artifactType"], "application/spdx+json");
    assert_eq!(m["config"]["mediaType"], "application/vnd.oci.empty.v1+json");
    assert_eq!(m["config"]["digest"], "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
    assert_eq!(m["layers"][0]["digest"], spdx.digest.to_string());
    assert_eq!(m["layers"][0]["annotations"]["org.opencontainers.image.title"], "sbom.spdx.json");
    assert_eq!(m["subject"]["digest"], subject().digest.to_string());
    assert_eq!(m["subject"]["size"], 5);
    assert!(
        a.blobs.contains(&spdx) && a.blobs.iter().any(|b| &b.bytes[..] == b"{}"),
        "every named blob is handed over"
    );
}

#[test]
fn signatures_and_attestations_are_cosign_s_manifests_with_a_subject() {
    let s = signature(&subject(), b"payload".to_vec(), "c2ln".into());
    let m = json(&s.manifest);
    assert_eq!(m["layers"][0]["mediaType"], "application/vnd.dev.cosign.simplesigning.v1+json");
    assert_eq!(m["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"], "c2ln");
    assert_eq!(m["config"]["mediaType"], SIGNATURE_TYPE);
    let config: Value = serde_json::from_slice(&s.blobs[0].bytes).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"][0], Digest::of(b"payload").to_string());
    assert_eq!(s.blobs[1].bytes.as_ref(), b"payload");
    let a = attestation(&subject(), b"{}".to_vec());
    let m = json(&a.manifest);
    assert_eq!(m["layers"][0]["mediaType"], "application/vnd.dsse.envelope.v1+json");
    assert_eq!(m["layers"][0]["annotations"]["predicateType"], "https://spdx.dev/Document");
    assert_eq!(m["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"], "");
    assert_eq!(
        m["subject"],
        json!({ "mediaType": subject().media_type, "digest": subject().digest.to_string(), "size": 5 })
    );
}

#[test]
fn the_referrers_index_lists_and_filters_by_artifact_type() {
    let spdx = sbom(&subject(), Document::new(b"{}".to_vec()), "2020-01-01T00:00:00Z");
    let sig = signature(&subject(), b"p".to_vec(), "s".into());
    let all = json(&referrers(&[&spdx, &sig], None));
    assert_eq!(all["mediaType"], INDEX_MEDIA_TYPE);
    let entries = all["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["artifactType"], "application/spdx+json");
    assert_eq!(entries[0]["digest"], spdx.manifest.digest.to_string());
    assert_eq!(entries[0]["size"], spdx.manifest.bytes.len());
    assert_eq!(entries[0]["annotations"]["org.opencontainers.image.created"], "2020-01-01T00:00:00Z");
    assert_eq!(entries[1]["artifactType"], SIGNATURE_TYPE);
    let only = json(&referrers(&[&spdx, &sig], Some(SIGNATURE_TYPE)));
    assert_eq!(only["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(json(&referrers(&[&spdx], Some("x/y")))["manifests"], json!([]));
}
