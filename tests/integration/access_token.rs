//! Docker token authentication with a token service standing in for an external one
//! (harness/token_service.py: PyJWT signs, the server verifies with jsonwebtoken): each
//! client asks the realm for a token with the user's credentials and pulls with it; tokens
//! signed by a key the server does not trust, expired, for another service or without the
//! repository are refused, through the clients and on the wire; keys come from a PEM file, a
//! JWKS file or the service's JWKS URL, which is fetched again when a token names a new key.

use std::time::Duration;

use rstest::rstest;

use crate::harness::client::printed;
use crate::harness::process::wait_until;
use crate::harness::token_service::{Keys, SigningKey, TokenService, User};
use crate::harness::{Client, Server};

const PASSWORD: &str = "token-pw-4Zq";

fn alice() -> User {
    User::new("alice", PASSWORD, &["hello", "shell/*"])
}

/// A token service with `users` and a server that trusts it through `keys`.
fn token_server(users: &[User], keys: Keys, anonymous: &str) -> (TokenService, Server) {
    let service = TokenService::start(users);
    let mut env = service.server_env(keys);
    env.push(("NIXERY_ANONYMOUS", anonymous.to_owned()));
    let server = Server::start_with_env(&env);
    (service, server)
}

/// `GET path` with a bearer token.
fn with_token(server: &Server, path: &str, token: &str) -> crate::harness::http::Response {
    server.request("GET", path, &[("Authorization", &format!("Bearer {token}"))])
}

#[rstest]
#[case::docker(Client::Docker)]
#[case::podman(Client::Podman)]
#[case::skopeo(Client::SkopeoUmoci)]
#[case::containerd(Client::Containerd)]
fn each_client_gets_a_token_and_pulls(#[case] client: Client) {
    let (service, server) = token_server(&[alice()], Keys::Pem, "none");
    let mut session = client.start();

    // Without credentials the client gets an anonymous token (empty sub): no pull here.
    let anonymous = session.pull_output(&server, "hello:latest");
    let text = printed(&anonymous);
    assert!(!anonymous.status.success(), "{}", server.context(&format!("{client} pulled anonymously:\n{text}")));
    assert!(text.contains("unauthorized") || text.contains("401"), "{}", server.context(&text));

    if let Some(login) = session.log_in(&server, "alice", PASSWORD) {
        assert!(login.status.success(), "{}", server.context(&format!("{client} login:\n{}", printed(&login))));
    }
    let out = session.pull_and_run(&server, "hello:latest", "hello");
    assert_eq!(out.trim(), "Hello, world!", "{}", server.context(&format!("{client} ran hello")));
    assert!(service.requests_by("alice") >= 1, "alice never asked for a token:\n{}", service.log());

    // A repository the token service grants alice nothing on.
    let other = session.pull_output(&server, "hello-lib:latest");
    let text = printed(&other);
    let denied = text.contains("may not pull 'hello-lib'") || text.contains("403");
    assert!(!other.status.success() && denied, "{}", server.context(&format!("{client} hello-lib:\n{text}")));
    assert!(server.metric_labelled("nixery_refusals_total", "reason=\"access\"") >= 1);
    let log = server.log();
    assert!(!log.contains(PASSWORD) && !log.contains("eyJ"), "{}", server.context("a password or token is logged"));
}

/// Tokens that must not hold: signed by a key the server was not given, expired, for another
/// service (audience). `docker login` (which checks `/v2/` with a token) and skopeo are
/// refused; on the wire each answer says why, with the challenge.
#[test]
fn tokens_that_do_not_hold_are_refused() {
    let mallory = User { key: SigningKey::Other, ..User::new("mallory", PASSWORD, &["*"]) };
    let late = User { expires_in: -3600, ..User::new("late", PASSWORD, &["*"]) };
    let elsewhere = User { audience: Some("another.registry"), ..User::new("elsewhere", PASSWORD, &["*"]) };
    let users = [alice(), mallory, late, elsewhere];
    let (service, server) = token_server(&users, Keys::Pem, "none");

    let cases = [
        ("mallory", "the token is not signed by a key of the token service"),
        ("late", "the token has expired"),
        ("elsewhere", "the token is for another service"),
    ];
    for (user, why) in cases {
        let token = service.token(Some((user, PASSWORD)), "hello");
        let r = with_token(&server, "/v2/hello/manifests/latest", &token);
        assert_eq!(r.status, 401, "{user}: {}", server.context(&r.describe()));
        assert_eq!(r.json()["errors"][0]["message"], why, "{user}");
        assert!(r.expect_header("WWW-Authenticate").contains("scope=\"repository:hello:pull\""));
    }
    // A token for one repository opens only that one: not another's manifests or blobs.
    let token = service.token(Some(("alice", PASSWORD)), "hello");
    let r = with_token(&server, "/v2/hello/manifests/latest", &token);
    assert_eq!(r.status, 200, "{}", server.context(&r.describe()));
    let manifest = r.json();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    for path in ["/v2/hello-lib/manifests/latest".to_owned(), format!("/v2/hello-lib/blobs/{layer}")] {
        let r = with_token(&server, &path, &token);
        assert_eq!((r.status, r.json()["errors"][0]["code"].as_str()), (403, Some("DENIED")), "{path}");
    }

    let mut docker = Client::Docker.start();
    let mut skopeo = Client::SkopeoUmoci.start();
    for (user, _) in cases {
        let login = docker.log_in(&server, user, PASSWORD).expect("docker logs in");
        assert!(!login.status.success(), "{}", server.context(&format!("docker login as {user} succeeded")));
        skopeo.log_in(&server, user, PASSWORD);
        let pull = skopeo.pull_output(&server, "hello:latest");
        assert!(!pull.status.success(), "{}", server.context(&format!("skopeo as {user}:\n{}", printed(&pull))));
    }
    assert!(server.metric_labelled("nixery_refusals_total", "reason=\"credentials\"") >= 6);
}

/// Keys from a JWKS file and from the token service's JWKS URL, ES256 and RS256 alike; with
/// the URL, a token signed by a key published later is accepted once the service publishes
/// it (the server fetches the set again for a `kid` it does not know).
#[rstest]
#[case::jwks_file(Keys::JwksFile)]
#[case::jwks_url(Keys::JwksUrl)]
fn keys_from_a_jwk_set(#[case] keys: Keys) {
    let rsa = User { key: SigningKey::Rsa, ..User::new("rosa", PASSWORD, &["hello"]) };
    let next = User { key: SigningKey::Next, ..User::new("newton", PASSWORD, &["hello"]) };
    let (service, server) = token_server(&[alice(), rsa, next], keys, "none");
    for user in ["alice", "rosa"] {
        let token = service.token(Some((user, PASSWORD)), "hello");
        let r = with_token(&server, "/v2/hello/tags/list", &token);
        assert_eq!(r.status, 200, "{user}: {}", server.context(&r.describe()));
    }
    let unknown = |token: &str| with_token(&server, "/v2/hello/tags/list", token).status;
    let token = service.token(Some(("newton", PASSWORD)), "hello");
    assert_eq!(unknown(&token), 401, "{}", server.context("a key nobody published"));
    service.publish_next();
    if keys == Keys::JwksUrl {
        // At most one fetch per 10 s for unknown keys: within a few of those it is in.
        let accepted = wait_until(Duration::from_secs(30), || {
            let token = service.token(Some(("newton", PASSWORD)), "hello");
            unknown(&token) == 200
        });
        assert!(accepted, "{}", server.context("the rotated key was never fetched"));
    } else {
        assert_eq!(unknown(&token), 401, "a file does not change with the service");
    }
}

/// `NIXERY_ANONYMOUS=pull` with tokens: docker without a login gets the service's anonymous
/// token, which may pull what exists but not cause a build (401, with the reason); once alice
/// built the image, the anonymous pull works.
#[test]
fn anonymous_tokens_pull_what_exists() {
    let (service, server) = token_server(&[alice()], Keys::Pem, "pull");
    let docker = Client::Docker.start();
    let refused = docker.pull_output(&server, "hello:latest");
    let text = printed(&refused);
    eprintln!("docker pull, 401:\n{text}");
    assert!(!refused.status.success(), "{}", server.context(&text));
    assert!(text.contains("unauthorized: authentication required to build 'hello'"), "{}", server.context(&text));
    assert!(service.requests_by("(anonymous)") >= 1, "{}", service.log());

    let token = service.token(Some(("alice", PASSWORD)), "hello");
    let built = with_token(&server, "/v2/hello/manifests/latest", &token);
    assert_eq!(built.status, 200, "{}", server.context(&built.describe()));
    let out = docker.pull_and_run(&server, "hello:latest", "hello");
    assert_eq!(out.trim(), "Hello, world!", "{}", server.context("anonymous docker ran hello"));
    assert_eq!(server.metric("nixery_image_builds_total"), 1, "the anonymous pull built nothing");
}
