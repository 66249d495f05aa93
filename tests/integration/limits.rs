//! Limits on the work clients can make the server do, as a client meets them: when every Nix
//! job slot stays busy for NIX_TIMEOUT, the waiting image is refused with 503 and
//! `Retry-After` (the server's "ask again later"), not left waiting without end.

use crate::harness::http;
use crate::harness::{Server, nonce};
use std::time::Duration;

#[test]
fn a_full_nix_queue_answers_503_with_retry_after() {
    let timeout = 2;
    let server = Server::start_with(&[
        ("NIXERY_MAX_NIX_JOBS", "1"),
        ("NIX_TIMEOUT", &timeout.to_string()),
        ("NIXERY_TEST_NONCE", &nonce()),
    ]);
    // Three images that each need `slow` built (it sleeps far past NIX_TIMEOUT), one slot: the
    // first holds it until its deadline, the second may get it then, the third cannot get it
    // before its own wait (NIX_TIMEOUT) runs out.
    let requests: Vec<_> = ["slow", "slow/hello", "slow/nano"]
        .iter()
        .map(|name| {
            let url = server.url(&format!("/v2/{name}/manifests/latest"));
            std::thread::spawn(move || http::send("GET", &url, &[], Duration::from_secs(60)))
        })
        .collect();
    let answers: Vec<_> = requests.into_iter().map(|t| t.join().unwrap().unwrap_or_else(|e| server.fail(&e))).collect();
    let busy: Vec<_> = answers.iter().filter(|r| r.status == 503).collect();
    assert!(!busy.is_empty(), "no request found the queue full:\n{}", server.context(&answers[0].describe()));
    for r in &answers {
        assert!(r.status == 422 || r.status == 503, "{}", server.context(&r.describe()));
    }
    for r in busy {
        let retry: u64 = r.header("retry-after").and_then(|v| v.parse().ok()).unwrap_or_else(|| {
            panic!("no Retry-After in seconds:\n{}", r.describe());
        });
        assert!((timeout..=timeout + 1).contains(&retry), "Retry-After {retry} after a {timeout} s wait");
        let error = &r.json()["errors"][0];
        assert_eq!(error["code"], "UNKNOWN", "{}", r.describe());
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("no Nix job slot became free within"), "{}", r.describe());
    }
}
