//! HTTP Basic authentication against an htpasswd file written by `htpasswd -B`, with the
//! clients users log in with: `docker login`, `podman login`, skopeo `--src-creds`, ctr
//! `--user`, and containerd sending an `Authorization` header from a `hosts.toml` (the closest
//! stand-in here for the kubelet's pull secrets). The server runs with
//! `NIXERY_ANONYMOUS=none`, so every pull needs the credentials.
//!
//! Then what an operator relies on: the file is re-read when it changes (a new user works, a
//! removed one stops working although it was verified a moment ago), and no password, hash or
//! `Authorization` value reaches the log.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rstest::rstest;

use crate::harness::client::printed;
use crate::harness::credentials::{basic, htpasswd};
use crate::harness::process::wait_until;
use crate::harness::{Client, Containerd, Server, run};

const USER: &str = "alice";
/// Distinctive, so that the log can be searched for it.
const PASSWORD: &str = "correct-horse-7Qx";

/// A server that needs alice's credentials for everything.
fn basic_server() -> (tempfile::TempDir, PathBuf, Server) {
    let dir = crate::harness::temp_dir("htpasswd");
    let file = htpasswd(dir.path(), &[(USER, PASSWORD)]);
    let server = Server::start_with(&[("NIXERY_AUTH_HTPASSWD", file.to_str().unwrap()), ("NIXERY_ANONYMOUS", "none")]);
    (dir, file, server)
}

/// Neither the password, nor its hash, nor an `Authorization` value is in the log.
fn assert_no_secret_logged(server: &Server, file: &Path) {
    let log = server.log();
    let hash = std::fs::read_to_string(file).unwrap();
    let hash = hash.lines().next().unwrap().split_once(':').unwrap().1;
    for secret in [PASSWORD, hash, &basic(USER, PASSWORD)[6..], "Basic ", "Bearer "] {
        assert!(!log.contains(secret), "{}", server.context(&format!("the log shows {secret:?}")));
    }
}

#[rstest]
#[case::docker(Client::Docker)]
#[case::podman(Client::Podman)]
#[case::skopeo(Client::SkopeoUmoci)]
#[case::containerd(Client::Containerd)]
fn each_client_logs_in_with_basic_auth_and_pulls(#[case] client: Client) {
    let (_dir, file, server) = basic_server();
    let mut session = client.start();

    let anonymous = session.pull_output(&server, "hello:latest");
    let text = printed(&anonymous);
    // Docker stops by itself at /v2/'s Basic challenge when it has no credentials; skopeo
    // and podman print `unauthorized` (not the message, for a 401), ctr the status line.
    let shown = match client {
        Client::Docker => text.contains("no basic auth credentials"),
        Client::SkopeoUmoci | Client::Podman => text.contains("unauthorized"),
        Client::Containerd => text.contains("401 Unauthorized"),
    };
    assert!(!anonymous.status.success() && shown, "{}", server.context(&format!("{client} anonymous:\n{text}")));

    let wrong = session.log_in(&server, USER, "wrong password");
    let refused = match wrong {
        Some(login) => !login.status.success(),
        None => {
            let pull = session.pull_output(&server, "hello:latest");
            let text = printed(&pull);
            !pull.status.success() && (text.contains("401") || text.contains("invalid username or password"))
        }
    };
    assert!(refused, "{}", server.context(&format!("{client} got in with a wrong password")));

    if let Some(login) = session.log_in(&server, USER, PASSWORD) {
        assert!(login.status.success(), "{}", server.context(&format!("{client} login:\n{}", printed(&login))));
        assert!(printed(&login).contains("Login Succeeded"), "{}", printed(&login));
    }
    let out = session.pull_and_run(&server, "hello:latest", "hello");
    assert_eq!(out.trim(), "Hello, world!", "{}", server.context(&format!("{client} ran hello")));
    if client == Client::SkopeoUmoci {
        // `inspect` takes `--creds` (`copy` takes `--src-creds`); `--no-creds` is refused.
        let image = format!("docker://{}", server.image("hello:latest"));
        let inspect = |creds: &[&str]| {
            let mut cmd = Command::new("skopeo");
            cmd.args(["inspect", "--tls-verify=false"]).args(creds).arg(&image);
            crate::harness::process::output_timeout(&mut cmd, Duration::from_secs(120)).unwrap()
        };
        let creds = format!("{USER}:{PASSWORD}");
        let inspected = inspect(&["--creds", &creds]);
        assert!(printed(&inspected).contains("\"Digest\""), "{}", server.context(&printed(&inspected)));
        assert!(!inspect(&["--no-creds"]).status.success(), "{}", server.context("skopeo --no-creds got in"));
    }
    assert!(server.metric_labelled("nixery_refusals_total", "reason=\"credentials\"") >= 1);
    assert_no_secret_logged(&server, &file);
}

/// containerd with an `Authorization` header configured for the registry in a `hosts.toml`
/// (`ctr --hosts-dir`), as node configuration or the kubelet's pull secrets give it: the
/// header goes with every request, and a wrong one is refused.
#[test]
fn containerd_sends_the_header_of_its_hosts_toml() {
    let (dir, _file, server) = basic_server();
    let containerd = Containerd::start();
    let hosts = |name: &str, authorization: &str| {
        let hosts_dir = dir.path().join(name);
        let host_dir = hosts_dir.join(server.addr());
        std::fs::create_dir_all(&host_dir).unwrap();
        let url = server.url("");
        let toml = format!(
            "server = \"{url}\"\n\n[host.\"{url}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  [host.\"{url}\".header]\n    Authorization = [\"{authorization}\"]\n"
        );
        std::fs::write(host_dir.join("hosts.toml"), toml).unwrap();
        hosts_dir
    };
    let image = server.image("hello:latest");
    let pull = |hosts_dir: &Path| {
        containerd
            .try_ctr(&["images", "pull", "--hosts-dir", hosts_dir.to_str().unwrap(), &image], Duration::from_secs(300))
    };
    let wrong = pull(&hosts("wrong", &basic(USER, "nope")));
    assert!(wrong.is_err(), "{}", server.context("a wrong header was let in"));
    let pulled = pull(&hosts("right", &basic(USER, PASSWORD))).unwrap_or_else(|e| server.fail(&e));
    assert!(pulled.contains("done") || pulled.contains("unpacking"), "{}", server.context(&pulled));
    let id = format!("run-{}", crate::harness::nonce());
    let out = containerd.ctr_ok(&server, &["run", "--rm", &image, &id, "hello"]);
    assert_eq!(out.trim(), "Hello, world!");
}

/// The htpasswd file is re-read when it changes: a user added works without a restart, and a
/// user removed is refused at once, although the server verified them a moment ago.
#[test]
fn a_changed_htpasswd_file_applies_without_a_restart() {
    let (_dir, file, server) = basic_server();
    let as_user =
        |user: &str, password: &str| server.request("GET", "/v2/", &[("Authorization", &basic(user, password))]).status;
    assert_eq!(as_user(USER, PASSWORD), 200);
    assert_eq!(as_user("bob", "builder"), 401);

    run(Command::new("htpasswd").args(["-B", "-b", "-C", "5"]).arg(&file).args(["bob", "builder"]));
    let bob_in = wait_until(Duration::from_secs(10), || as_user("bob", "builder") == 200);
    assert!(bob_in, "{}", server.context("bob was added to the file and is still refused"));

    run(Command::new("htpasswd").arg("-D").arg(&file).arg(USER));
    let alice_out = wait_until(Duration::from_secs(10), || as_user(USER, PASSWORD) == 401);
    assert!(alice_out, "{}", server.context("alice was removed from the file and still gets in"));
    assert!(server.log().contains("re-read a changed file"), "{}", server.context("no log line for the re-read"));

    // A file that cannot be used keeps what was loaded: bob stays in.
    std::fs::write(&file, "bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n").unwrap();
    // (Files are looked at when a request needs them.)
    let noticed = wait_until(Duration::from_secs(10), || {
        as_user("bob", "builder") == 200 && server.log().contains("cannot be used")
    });
    assert!(noticed, "{}", server.context("the bad file was not noticed"));
    assert_eq!(as_user("bob", "builder"), 200, "{}", server.context("a bad file replaced the good one"));
}
