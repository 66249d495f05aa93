//! Images behave like a normal system: programs that look users up (busybox's `whoami` and
//! `id -un`, as git and ssh do) find root in `/etc/passwd`; `nonroot` images run as user
//! 1000 under containerd, podman and docker, with a writable home; an image whose one
//! requested package declares `meta.mainProgram` runs it when given no command.
//!
//! The test package `whoami` links busybox's `whoami` and `id` and declares
//! `meta.mainProgram = "whoami"`; without a user database busybox prints "unknown uid 0".

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::harness::{Containerd, Docker, Podman, Server, nonce, pull_and_unpack, require_tool};

/// skopeo + umoci: the unpacked image has real passwd, group and nsswitch.conf files with
/// root, /root, and busybox's user look-ups work in it.
#[test]
fn images_have_root_in_a_user_database() {
    require_tool(&["skopeo", "umoci", "chroot"]);
    let server = Server::start();
    let img = pull_and_unpack(&server, "shell/whoami:latest", &[]);
    assert_eq!(img.chroot(&server, &["/bin/whoami"]).trim(), "root", "{}", server.context("whoami"));
    assert_eq!(img.chroot(&server, &["/bin/id", "-un"]).trim(), "root", "{}", server.context("id -un"));
    assert_eq!(img.chroot(&server, &["/bin/id", "-gn"]).trim(), "root", "{}", server.context("id -gn"));

    for file in ["etc/passwd", "etc/group", "etc/nsswitch.conf"] {
        let meta = fs::symlink_metadata(img.rootfs.join(file))
            .unwrap_or_else(|e| server.fail(&format!("no /{file} ({e})\n{}", img.listing())));
        assert!(meta.is_file(), "{}", server.context(&format!("/{file} is not a regular file")));
    }
    let passwd = fs::read_to_string(img.rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.lines().any(|l| l == "root:x:0:0:root:/root:/bin/bash"), "{}", server.context(&passwd));
    assert!(!passwd.contains("nonroot"), "{}", server.context(&passwd));
    let root = fs::symlink_metadata(img.rootfs.join("root")).unwrap_or_else(|e| server.fail(&format!("no /root: {e}")));
    assert!(root.is_dir());
    assert_eq!(root.permissions().mode() & 0o7777, 0o700);
}

/// containerd (`ctr run`, as the kubelet runs containers): a nonroot image runs as 1000
/// (`id -u`, `whoami`), its home is writable, and its default command (whoami's
/// meta.mainProgram) runs with no command given; a plain image runs as root.
#[test]
fn containerd_runs_nonroot_images_as_user_1000() {
    require_tool(&["containerd", "ctr", "runc"]);
    let server = Server::start();
    let containerd = Containerd::start();
    let run = |name: &str, args: &[&str]| {
        let image = server.image(name);
        containerd.ctr_ok(&server, &["images", "pull", "--plain-http", &image]);
        let id = format!("users-{}", nonce());
        let mut all = vec!["run", "--rm", image.as_str(), id.as_str()];
        all.extend_from_slice(args);
        containerd.try_ctr(&all, Duration::from_secs(120)).unwrap_or_else(|e| server.fail(&e)).trim().to_owned()
    };
    assert_eq!(run("nonroot/shell/whoami:latest", &["id", "-u"]), "1000", "{}", server.context("id -u"));
    assert_eq!(run("nonroot/shell/whoami:latest", &["whoami"]), "nonroot");
    let home = run(
        "nonroot/shell/whoami:latest",
        &["sh", "-c", "echo written > /home/nonroot/probe && cat /home/nonroot/probe && ls -dn /home/nonroot"],
    );
    assert!(home.starts_with("written\ndrwxr-xr-x"), "{}", server.context(&home));
    assert!(home.contains(" 1000 ") && home.ends_with("/home/nonroot"), "{}", server.context(&home));
    assert_eq!(run("nonroot/whoami:latest", &[]), "nonroot", "{}", server.context("default command"));
    assert_eq!(run("shell/whoami:latest", &["id", "-u"]), "0", "{}", server.context("root image"));
    assert_eq!(run("whoami:latest", &[]), "root", "{}", server.context("default command as root"));
}

/// podman: the same, and `$HOME` is the nonroot user's home, writable.
#[test]
fn podman_runs_nonroot_images_as_user_1000_with_a_writable_home() {
    require_tool(&["podman", "runc"]);
    let server = Server::start();
    let podman = Podman::new();
    let run = |name: &str, args: &[&str]| {
        let image = server.image(name);
        server.run(podman.cmd().args(["pull", "--tls-verify=false", &image]));
        server.run(podman.cmd().args(["run", "--rm", &image]).args(args)).trim().to_owned()
    };
    assert_eq!(run("nonroot/shell/whoami:latest", &["id", "-u"]), "1000", "{}", server.context("id -u"));
    assert_eq!(run("nonroot/shell/whoami:latest", &["id", "-un"]), "nonroot");
    let home = run("nonroot/shell/whoami:latest", &["sh", "-c", "echo $HOME; touch $HOME/probe && echo writable"]);
    assert_eq!(home, "/home/nonroot\nwritable", "{}", server.context(&home));
    assert_eq!(run("nonroot/whoami:latest", &[]), "nonroot", "{}", server.context("default command"));
    assert_eq!(run("shell/whoami:latest", &["id", "-u"]), "0", "{}", server.context("root image"));
    let root_home = run("shell/whoami:latest", &["sh", "-c", "echo $HOME; touch $HOME/probe && echo writable"]);
    assert_eq!(root_home, "/root\nwritable", "{}", server.context(&root_home));
}

/// docker (as users type it): no command runs the image's mainProgram; nonroot runs as 1000.
#[test]
fn docker_runs_the_main_program_and_nonroot_as_user_1000() {
    require_tool(&["dockerd", "docker", "runc"]);
    let server = Server::start();
    let docker = Docker::start();
    let image = server.image("whoami:latest");
    docker.pull(&server, &image);
    assert_eq!(docker.run(&server, &image, &[]).trim(), "root", "{}", server.context("default command"));
    let nonroot = server.image("nonroot/whoami:latest");
    docker.pull(&server, &nonroot);
    assert_eq!(docker.run(&server, &nonroot, &[]).trim(), "nonroot", "{}", server.context("nonroot default"));
    assert_eq!(docker.run(&server, &nonroot, &["id", "-u"]).trim(), "1000", "{}", server.context("id -u"));
    let user = docker.docker_ok(&server, &["image", "inspect", "--format", "{{.Config.User}}", &nonroot]);
    assert_eq!(user.trim(), "1000:1000");
}
