//! Access: challenges, credentials, the anonymous modes, token grants and links of manifests
//! to names, on stored manifests of a pinned source (no Nix, no git).

use super::*;
use crate::auth::Refusal;
use base64::Engine as _;

const REPO: &str = "https://git.invalid/pkgs";

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// A server on in-memory storage with a git source (commit tags need no resolution) and
/// `args` added, its guard opened as the server opens it.
async fn guarded(args: &[&'static str]) -> AppState {
    let argv = ["nixery", "--pkgs-repo", REPO].into_iter().chain(args.iter().copied());
    let config = Config::parse_from(argv).unwrap();
    let s = AppState::in_memory(&config);
    let guard = Guard::open(&config.access, s.storage.clone(), s.metrics.clone()).await.unwrap();
    AppState { guard: Arc::new(guard), ..s }
}

/// An htpasswd file with alice's password `secret` (bcrypt cost 4), kept for the test.
fn htpasswd() -> (tempfile::TempDir, &'static str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("htpasswd");
    std::fs::write(&path, format!("alice:{}\n", bcrypt::hash("secret", 4).unwrap())).unwrap();
    (dir, leak(path.display().to_string()))
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// Stores the Docker manifest of `name` at the commit `c…c` as a replica would have built it;
/// its digest.
async fn stored(s: &AppState, name: &str, body: &str) -> Digest {
    let config = Config::parse_from(["nixery", "--pkgs-repo", REPO]).unwrap();
    let key = commit_key(&config, REPO, &"c".repeat(40), name);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","x":"{body}"}}"#
    );
    let digest = Digest::of(manifest.as_bytes());
    s.storage.put(&key.storage_key().unwrap(), manifest.clone().into()).await.unwrap();
    s.storage.put(&ObjectKey::manifest(&digest), manifest.into()).await.unwrap();
    digest
}

fn message(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["errors"][0]["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn basic_auth_challenges_at_v2_and_checks_passwords() {
    let (_dir, file) = htpasswd();
    let s = guarded(&["--auth-htpasswd", file]).await;
    let (status, headers, body) = call(&s, "GET", "/v2/", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers[header::WWW_AUTHENTICATE], "Basic realm=\"nixery\"");
    assert_eq!(headers[API_VERSION], "registry/2.0");
    assert_eq!(error_code(&body), "UNAUTHORIZED");
    let (status, _, _) = call(&s, "GET", "/v2/", &[("Authorization", &basic("alice", "secret"))]).await;
    assert_eq!(status, StatusCode::OK);
    for wrong in [basic("alice", "wrong"), basic("bob", "secret"), "Bearer x.y.z".into(), "Basic !".into()] {
        let (status, headers, body) = call(&s, "GET", "/v2/", &[("Authorization", &wrong)]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong}");
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Basic realm=\"nixery\"");
        assert!(!String::from_utf8_lossy(&body).contains("secret"));
    }
    let (_, _, body) = call(&s, "GET", "/v2/hello/tags/list", &[("Authorization", &basic("alice", "x"))]).await;
    assert_eq!(message(&body), "invalid username or password");
    // Anonymous clients may still pull (NIXERY_ANONYMOUS=build): only /v2/ challenges them.
    let (status, _, _) = call(&s, "GET", "/v2/hello/tags/list", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.metrics.refusals(Refusal::Credentials), 5, "the /v2/ ping of a client without credentials is not");
}

#[tokio::test]
async fn anonymous_none_needs_credentials_everywhere() {
    let (_dir, file) = htpasswd();
    let s = guarded(&["--auth-htpasswd", file, "--anonymous", "none"]).await;
    let digest = stored(&s, "hello", "1").await;
    let commit = "c".repeat(40);
    let uris = [
        "/v2/hello/tags/list".to_owned(),
        format!("/v2/hello/manifests/{commit}"),
        format!("/v2/hello/blobs/{digest}"),
        format!("/v2/hello/referrers/{digest}"),
    ];
    for uri in &uris {
        let (status, headers, body) = call(&s, "GET", uri, &[]).await;
        assert_eq!((status, error_code(&body).as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"), "{uri}");
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Basic realm=\"nixery\"", "{uri}");
    }
    let alice = [("Authorization", basic("alice", "secret"))];
    let alice: Vec<(&str, &str)> = alice.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for uri in &uris[..3] {
        let (status, _, _) = call(&s, "GET", uri, &alice).await;
        assert_ne!(status, StatusCode::UNAUTHORIZED, "{uri}");
    }
    assert_eq!(s.metrics.refusals(Refusal::Anonymous), 4);
    // The pages too: the start page lists what was built.
    let (status, headers, _) = call(&s, "GET", "/", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers[header::WWW_AUTHENTICATE], "Basic realm=\"nixery\"");
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let (status, _, _) = call(&s, "GET", "/", &alice).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn anonymous_pull_gets_what_exists_and_a_challenge_for_builds() {
    let (_dir, file) = htpasswd();
    let s = guarded(&["--auth-htpasswd", file, "--anonymous", "pull"]).await;
    let digest = stored(&s, "shell/hello", "1").await;
    let commit = "c".repeat(40);
    for method in ["GET", "HEAD"] {
        let (status, headers, _) = call(&s, method, &format!("/v2/hello/shell/manifests/{commit}"), &[]).await;
        assert_eq!(status, StatusCode::OK, "{method}");
        assert_eq!(headers["Docker-Content-Digest"], digest.to_string());
    }
    let (status, headers, body) = call(&s, "GET", &format!("/v2/hello/manifests/{commit}"), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers[header::WWW_AUTHENTICATE], "Basic realm=\"nixery\"");
    assert!(message(&body).starts_with("authentication required to build 'hello'"), "{}", message(&body));
    assert_eq!(s.metrics.nix_invocations.get(), 0, "nothing was built");
    assert_eq!(s.metrics.refusals(Refusal::Anonymous), 1);
}

#[tokio::test]
async fn with_authentication_manifests_by_digest_are_served_under_their_names_only() {
    let (_dir, file) = htpasswd();
    let s = guarded(&["--auth-htpasswd", file, "--anonymous", "pull"]).await;
    let digest = stored(&s, "shell/hello", "1").await;
    let other = stored(&s, "hello", "2").await;
    let by_digest = |name: &str, d: &Digest| format!("/v2/{name}/manifests/{d}");
    // Never served by tag: not linked to any name yet.
    let (status, _, body) = call(&s, "GET", &by_digest("shell/hello", &digest), &[]).await;
    assert_eq!((status, error_code(&body).as_str()), (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"));

    call(&s, "GET", &format!("/v2/shell/hello/manifests/{}", "c".repeat(40)), &[]).await;
    for name in ["shell/hello", "hello/shell"] {
        let (status, _, _) = call(&s, "GET", &by_digest(name, &digest), &[]).await;
        assert_eq!(status, StatusCode::OK, "{name}: the same image");
    }
    let (status, _, body) = call(&s, "GET", &by_digest("hello", &digest), &[]).await;
    assert_eq!((status, error_code(&body).as_str()), (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"));
    assert_eq!(message(&body), format!("manifest {digest} is not known to this registry"), "as for any unknown digest");
    let (status, _, _) = call(&s, "GET", &by_digest("shell/hello", &other), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Without authentication every digest is served under every name, as before.
    let open = state_with(&[]);
    let digest = stored(&open, "shell/hello", "1").await;
    let (status, _, _) = call(&open, "GET", &by_digest("anything", &digest), &[]).await;
    assert_eq!(status, StatusCode::OK);
}

/// Blobs too: a layer or config by digest only under a name whose manifest references it,
/// once that manifest was served for the name.
#[tokio::test]
async fn with_authentication_blobs_are_served_under_their_images_names_only() {
    let (_dir, file) = htpasswd();
    let s = guarded(&["--auth-htpasswd", file, "--anonymous", "pull"]).await;
    let (config, layer) = (b"{\"os\":\"linux\"}".as_slice(), b"layer bytes".as_slice());
    let (config_digest, layer_digest) = (Digest::of(config), Digest::of(layer));
    s.storage.put(&ObjectKey::blob(&config_digest), config.to_vec().into()).await.unwrap();
    s.storage.put(&ObjectKey::blob(&layer_digest), layer.to_vec().into()).await.unwrap();
    let body = format!(r#"","config":{{"digest":"{config_digest}"}},"layers":[{{"digest":"{layer_digest}"}}],"y":""#);
    stored(&s, "shell/hello", &body).await;
    let blob = |name: &str, d: &Digest| format!("/v2/{name}/blobs/{d}");

    let (status, _, body) = call(&s, "GET", &blob("shell/hello", &layer_digest), &[]).await;
    assert_eq!((status, error_code(&body).as_str()), (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"), "not served yet");
    let (status, _, _) = call(&s, "GET", &format!("/v2/shell/hello/manifests/{}", "c".repeat(40)), &[]).await;
    assert_eq!(status, StatusCode::OK);
    for d in [&config_digest, &layer_digest] {
        let (status, _, _) = call(&s, "GET", &blob("hello/shell", d), &[]).await;
        assert_eq!(status, StatusCode::OK, "{d} under its image's name");
        let (status, _, body) = call(&s, "GET", &blob("hello", d), &[]).await;
        assert_eq!((status, error_code(&body).as_str()), (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"), "{d} elsewhere");
    }

    // Collected, with a recipe: making it again is a build, which an anonymous client in
    // `pull` mode may not cause; it is asked to log in, as for a new image by tag.
    let manifest = Digest::of(b"the image's manifest");
    let recipe = crate::cache::recipes::RecipeRecord::Config { manifest };
    crate::cache::recipes::keep(&s.storage, &config_digest, &recipe).await.unwrap();
    s.storage.delete(&[ObjectKey::blob(&config_digest)]).await.unwrap();
    let (status, headers, body) = call(&s, "GET", &blob("shell/hello", &config_digest), &[]).await;
    assert_eq!((status, error_code(&body).as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    assert_eq!(headers[header::WWW_AUTHENTICATE], "Basic realm=\"nixery\"");

    let open = state_with(&[]);
    open.storage.put(&ObjectKey::blob(&layer_digest), layer.to_vec().into()).await.unwrap();
    let (status, _, _) = call(&open, "GET", &blob("anything", &layer_digest), &[]).await;
    assert_eq!(status, StatusCode::OK, "without authentication every blob under every name");
}

mod tokens {
    use super::*;
    use crate::auth::test_keys::*;
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

    const REALM: &str = "http://auth.test/token";

    async fn token_state(anonymous: &'static str) -> (tempfile::TempDir, AppState) {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys.pem");
        std::fs::write(&keys, EC_PUBLIC).unwrap();
        let keys = leak(keys.display().to_string());
        let args = [
            "--auth-token-realm",
            REALM,
            "--auth-token-service",
            "nixery.test",
            "--auth-token-issuer",
            "auth.test",
            "--auth-token-keys",
            keys,
            "--anonymous",
            anonymous,
        ];
        (dir, guarded(&args).await)
    }

    fn token(sub: &str, names: &[&str], exp_in: i64) -> String {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let access: Vec<serde_json::Value> =
            names.iter().map(|n| serde_json::json!({"type": "repository", "name": n, "actions": ["pull"]})).collect();
        let claims = serde_json::json!({"iss": "auth.test", "sub": sub, "aud": "nixery.test", "exp": now + exp_in,
                                        "access": access});
        let key = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap();
        format!("Bearer {}", encode(&Header::new(Algorithm::ES256), &claims, &key).unwrap())
    }

    #[tokio::test]
    async fn the_challenge_names_the_realm_service_and_scope() {
        let (_dir, s) = token_state("none").await;
        let (status, headers, _) = call(&s, "GET", "/v2/", &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers[header::WWW_AUTHENTICATE], format!("Bearer realm=\"{REALM}\",service=\"nixery.test\""));
        let (status, headers, _) = call(&s, "GET", "/v2/shell/hello/tags/list", &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            headers[header::WWW_AUTHENTICATE],
            format!("Bearer realm=\"{REALM}\",service=\"nixery.test\",scope=\"repository:shell/hello:pull\"")
        );
        // Any valid token opens /v2/, as `docker login` checks.
        let (status, _, _) = call(&s, "GET", "/v2/", &[("Authorization", &token("alice", &[], 300))]).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn tokens_grant_the_names_they_list() {
        let (_dir, s) = token_state("none").await;
        let alice = token("alice", &["shell/hello"], 300);
        let (status, _, _) = call(&s, "GET", "/v2/shell/hello/tags/list", &[("Authorization", &alice)]).await;
        assert_eq!(status, StatusCode::OK);
        let (status, headers, body) = call(&s, "GET", "/v2/secret/tags/list", &[("Authorization", &alice)]).await;
        assert_eq!((status, error_code(&body).as_str()), (StatusCode::FORBIDDEN, "DENIED"));
        assert!(headers.get(header::WWW_AUTHENTICATE).is_none());
        assert_eq!(message(&body), "'alice' may not pull 'secret': the token grants no pull access to it");
        let expired = token("alice", &["shell/hello"], -3600);
        let (status, _, body) = call(&s, "GET", "/v2/shell/hello/tags/list", &[("Authorization", &expired)]).await;
        assert_eq!((status, message(&body).as_str()), (StatusCode::UNAUTHORIZED, "the token has expired"));
        // Docker's anonymous token is no credential: NIXERY_ANONYMOUS=none refuses it.
        let anonymous = token("", &["shell/hello"], 300);
        let (status, _, _) = call(&s, "GET", "/v2/shell/hello/tags/list", &[("Authorization", &anonymous)]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            (s.metrics.refusals(Refusal::Access), s.metrics.refusals(Refusal::Credentials)),
            (1, 1),
            "{}",
            s.metrics.render()
        );
    }

    #[tokio::test]
    async fn an_anonymous_token_gets_what_anonymous_clients_get() {
        let (_dir, s) = token_state("pull").await;
        let anonymous = token("", &[], 300);
        let (status, _, _) = call(&s, "GET", "/v2/shell/hello/tags/list", &[("Authorization", &anonymous)]).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, _) = call(&s, "GET", "/v2/", &[("Authorization", &anonymous)]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "/v2/ wants a login");
    }
}
