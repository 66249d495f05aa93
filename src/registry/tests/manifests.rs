//! Manifests: conditions, negotiation refusals, by digest, from storage, tags a source refuses.

use super::*;

#[tokio::test]
async fn conditional_requests_on_manifests() {
    let s = state();
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;
    let digest = Digest::of(manifest);
    s.storage.put(&ObjectKey::manifest(&digest), manifest.to_vec().into()).await.unwrap();
    let uri = format!("/v2/hello/manifests/{digest}");
    let etag = format!("\"{digest}\"");
    let (status, headers, body) = call(&s, "GET", &uri, &[("If-None-Match", &etag)]).await;
    assert_eq!((status, body.len()), (StatusCode::NOT_MODIFIED, 0));
    assert_eq!(headers[header::ETAG], etag.as_str());
    let (status, _, body) = call(&s, "GET", &uri, &[("If-Match", "\"other\"")]).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(error_code(&body), "UNSUPPORTED");
    let (status, _, body) = call(&s, "GET", &uri, &[("If-Match", &etag), ("If-None-Match", "\"other\"")]).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, manifest.as_slice()));
}

#[tokio::test]
async fn refusing_every_manifest_format_is_406_before_any_build() {
    let s = state();
    for accept in [
        "*/*;q=0",
        "application/vnd.docker.distribution.manifest.v2+json;q=0, application/vnd.oci.image.manifest.v1+json;q=0",
    ] {
        let (status, headers, body) = call(&s, "GET", "/v2/hello/manifests/latest", &[("Accept", accept)]).await;
        assert_eq!(status, StatusCode::NOT_ACCEPTABLE, "{accept}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(error_code(&body), "UNSUPPORTED");
    }
    assert!(s.metrics.render().contains("nixery_image_builds_total 0"), "{}", s.metrics.render());
}

#[tokio::test]
async fn manifests_by_digest_keep_their_media_type() {
    let s = state();
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#.to_vec();
    let digest = Digest::of(&manifest);
    s.storage.put(&ObjectKey::manifest(&digest), manifest.clone().into()).await.unwrap();
    for method in ["GET", "HEAD"] {
        let (status, headers, body) = call(&s, method, &format!("/v2/hello/manifests/{digest}"), &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(headers[header::CONTENT_LENGTH], manifest.len().to_string());
        assert_eq!(headers["Docker-Content-Digest"], digest.to_string());
        assert_eq!(body.is_empty(), method == "HEAD");
    }
}

/// A manifest of a commit, stored by a replica (or before a restart), is served by its
/// commit tag without Nix or git: first from storage, then from memory, GET and HEAD alike.
#[tokio::test]
async fn a_stored_commit_manifest_is_served_from_storage_then_memory() {
    use crate::cache::Outcome;
    use crate::manifest::ManifestFormat;

    let config = Config::parse_from(["nixery", "--pkgs-repo", "https://git.invalid/pkgs"]).unwrap();
    let s = AppState::in_memory(&config);

    let commit = "c".repeat(40);
    let key = commit_key(&config, "https://git.invalid/pkgs", &commit, "shell/hello");
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#;
    s.storage.put(&key.storage_key().unwrap(), manifest.to_vec().into()).await.unwrap();

    let uri = format!("/v2/hello/shell/manifests/{commit}");
    for (method, outcome) in [("GET", Outcome::Stored), ("GET", Outcome::Warm), ("HEAD", Outcome::Warm)] {
        let before = s.metrics.manifest_requests(outcome);
        let (status, headers, body) = call(&s, method, &uri, &[]).await;
        assert_eq!(status, StatusCode::OK, "{method}: {}", String::from_utf8_lossy(&body));
        assert_eq!(body.is_empty(), method == "HEAD");
        assert_eq!(headers[header::CONTENT_TYPE], ManifestFormat::Docker.media_type());
        assert_eq!(headers[header::CONTENT_LENGTH], manifest.len().to_string());
        assert_eq!(headers["Docker-Content-Digest"], Digest::of(manifest).to_string());
        assert_eq!(headers[header::ETAG], format!("\"{}\"", Digest::of(manifest)));
        assert_eq!(s.metrics.manifest_requests(outcome), before + 1, "{method} was not {outcome:?}");
    }
    assert_eq!((s.metrics.nix_invocations.get(), s.metrics.source_resolutions.get()), (0, 0));
}

#[tokio::test]
async fn zstd_layers_refuse_clients_without_oci_before_building() {
    let s = state_with(&["--layer-compression", "zstd"]);
    let docker_only = [
        ("Accept", "application/vnd.docker.distribution.manifest.v2+json"),
        ("Accept", "application/vnd.docker.distribution.manifest.list.v2+json"),
    ];
    // Docker 20.10 accepts OCI manifests, but not zstd layers.
    let docker_20 = [
        ("Accept", "application/vnd.oci.image.manifest.v1+json"),
        ("Accept", "application/vnd.docker.distribution.manifest.v2+json"),
        ("User-Agent", "docker/20.10.24+dfsg1 go/go1.19.8 git-commit/5d6db84 os/linux arch/amd64"),
    ];
    for (headers, says) in [(&docker_only[..], "OCI image manifests"), (&docker_20[..], "this is Docker 20")] {
        for method in ["GET", "HEAD"] {
            let (status, answer, body) = call(&s, method, "/v2/shell/hello/manifests/latest", headers).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{says}: {method}");
            assert_eq!(answer[header::CONTENT_TYPE], "application/json", "{says}: {method}");
            if method == "GET" {
                assert_eq!(error_code(&body), "MANIFEST_UNKNOWN");
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let message = v["errors"][0]["message"].as_str().unwrap();
                assert!(message.contains("zstd") && message.contains(says), "{message}");
            }
        }
    }
    // Nothing was built: the answer came before Nix (whose package set here is `/`).
    assert_eq!(s.metrics.image_builds.get(), 0);
    assert_eq!(s.metrics.nix_invocations.get(), 0);
}

#[tokio::test]
async fn reserved_tags_are_artifacts_on_a_path_source_too_and_unknown_digests_are_404() {
    // The state's source is a path, where any tag but latest is refused as a revision.
    let s = state();
    let hex = "ab".repeat(32);
    for tag in [format!("sha256-{hex}"), format!("sha256-{hex}.sig"), format!("sha256-{hex}.att")] {
        let (status, _, body) = call(&s, "GET", &format!("/v2/hello/manifests/{tag}"), &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{tag}");
        assert_eq!(error_code(&body), "MANIFEST_UNKNOWN", "{tag}");
        let message = String::from_utf8_lossy(&body);
        assert!(message.contains("served no manifest") && !message.contains("'latest'"), "{message}");
    }
    // Not reserved: a tag like any other, which a path source refuses as a revision.
    let (status, _, body) = call(&s, "GET", &format!("/v2/hello/manifests/sha256-{hex}.sbom"), &[]).await;
    assert_eq!((status, error_code(&body).as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "MANIFEST_UNKNOWN"));
    assert!(String::from_utf8_lossy(&body).contains("'latest'"));
}
