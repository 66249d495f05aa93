//! Pulls with real registry clients (skopeo + umoci, containerd/ctr, podman, docker) and runs
//! programs from the pulled images. A pull by a real client is the proof that the
//! registry works; see shared/CLIENTS.md for how each client behaves on these machines.
//!
//! Every test starts its own server with fresh storage (the harness picks free ports and
//! unique temp dirs), so the tests can run in parallel processes under cargo-nextest.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use crate::harness::{
    Containerd, Docker, Podman, Server, nonce, pull_and_unpack, require_tool, sha256_digest, sha256_hex, temp_dir,
};
use serde_json::Value;

fn layers_of(server: &Server, manifest: &Value) -> Vec<Value> {
    manifest["layers"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| server.fail(&format!("manifest has no layers array: {manifest:#}")))
}

/// skopeo copy into an OCI layout, umoci unpack, and run programs from the rootfs with
/// chroot: the image must be a working filesystem with the packages' programs in /bin, a
/// CA bundle, /tmp (mode 1777) and /usr/bin/env.
#[test]
fn skopeo_umoci_chroot_runs_programs() {
    require_tool(&["skopeo", "umoci", "chroot"]);
    let server = Server::start();
    let img = pull_and_unpack(&server, "shell/hello:latest", &[]);

    let out = img.sh(&server, "hello");
    assert_eq!(
        out.trim(),
        "Hello, world!",
        "{}",
        server.context("`hello` in the unpacked shell/hello image printed something else")
    );

    let bin = img.chroot(&server, &["/bin/bash", "-c", "ls /bin"]);
    let names: Vec<&str> = bin.split_whitespace().collect();
    for want in ["hello", "bash", "sh", "ls", "cat", "env", "echo", "sponge", "nano"] {
        assert!(
            names.contains(&want),
            "{}",
            server.context(&format!("/bin of shell/hello lacks {want}; `ls /bin` gave: {bin}"))
        );
    }
    // Programs are symlinks into the store, not copies.
    let hello_link = fs::read_link(img.rootfs.join("bin/hello"))
        .unwrap_or_else(|e| server.fail(&format!("/bin/hello is not a symlink ({e})\n{}", img.listing())));
    assert!(
        hello_link.starts_with("/nix/store/"),
        "{}",
        server.context(&format!("/bin/hello points to {}, not into /nix/store", hello_link.display()))
    );

    // CA bundle, read through the image's own symlinks.
    let bundle = img.sh(&server, "cat /etc/ssl/certs/ca-bundle.crt");
    assert!(
        bundle.contains("# test CA bundle"),
        "{}",
        server.context(&format!("/etc/ssl/certs/ca-bundle.crt has unexpected content: {bundle:?}"))
    );

    // /tmp: a real directory with mode 1777.
    let tmp = fs::symlink_metadata(img.rootfs.join("tmp"))
        .unwrap_or_else(|e| server.fail(&format!("rootfs has no /tmp ({e})\n{}", img.listing())));
    assert!(tmp.is_dir(), "{}", server.context("/tmp in the image is not a directory"));
    assert_eq!(
        tmp.permissions().mode() & 0o7777,
        0o1777,
        "{}",
        server.context(&format!("/tmp has mode {:o}, want 1777", tmp.permissions().mode() & 0o7777))
    );
    img.sh(&server, "echo x > /tmp/probe && test \"$(cat /tmp/probe)\" = x");

    // /usr/bin/env works (shebangs like #!/usr/bin/env bash).
    let env_out = img.chroot(&server, &["/usr/bin/env", "echo", "env works"]);
    assert_eq!(env_out.trim(), "env works", "{}", server.context("/usr/bin/env echo printed something else"));
}

/// skopeo inspect reports amd64/linux and the manifest's layers.
#[test]
fn skopeo_inspect_reports_platform_and_layers() {
    require_tool(&["skopeo"]);
    let server = Server::start();
    let image = format!("docker://{}", server.image("shell/hello:latest"));
    let out = server.run(Command::new("skopeo").args(["inspect", "--tls-verify=false", &image]));
    let info: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| server.fail(&format!("skopeo inspect printed no JSON ({e}): {out}")));
    assert_eq!(info["Architecture"], "amd64", "{}", server.context(&format!("skopeo inspect: {info:#}")));
    assert_eq!(info["Os"], "linux", "{}", server.context(&format!("skopeo inspect: {info:#}")));

    let raw = server.run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", &image]));
    let manifest: Value = serde_json::from_str(&raw)
        .unwrap_or_else(|e| server.fail(&format!("skopeo inspect --raw printed no JSON ({e}): {raw}")));
    let manifest_layers = layers_of(&server, &manifest);
    assert!(!manifest_layers.is_empty(), "{}", server.context(&format!("manifest has no layers: {raw}")));
    let inspect_layers =
        info["Layers"].as_array().unwrap_or_else(|| server.fail(&format!("skopeo inspect has no Layers: {info:#}")));
    assert_eq!(
        inspect_layers.len(),
        manifest_layers.len(),
        "{}",
        server.context(&format!("skopeo inspect Layers {inspect_layers:?} vs manifest {raw}"))
    );
    let digests: Vec<&str> = manifest_layers.iter().filter_map(|l| l["digest"].as_str()).collect();
    for l in inspect_layers {
        assert!(
            digests.contains(&l.as_str().unwrap_or("")),
            "{}",
            server.context(&format!("inspect layer {l} is not in the manifest {raw}"))
        );
    }
}

/// skopeo copy to `dir:` keeps the bytes as served: the manifest file hashes to the
/// Docker-Content-Digest the server gives, and every blob file hashes to its name.
#[test]
fn skopeo_copy_to_dir_keeps_digests() {
    require_tool(&["skopeo"]);
    let server = Server::start();
    let tmp = temp_dir("skopeo-dir");
    let dest = tmp.path().join("image");
    server.run(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}", server.image("shell/hello:latest")),
        &format!("dir:{}", dest.display()),
    ]));
    let manifest_bytes = fs::read(dest.join("manifest.json"))
        .unwrap_or_else(|e| server.fail(&format!("skopeo wrote no manifest.json ({e})")));
    let file_digest = sha256_digest(&manifest_bytes);

    let (resp, _) = server.manifest("shell/hello", "latest");
    let served = resp.expect_header("Docker-Content-Digest");
    assert_eq!(
        served,
        file_digest,
        "{}",
        server.context(&format!(
            "Docker-Content-Digest of GET manifests/latest differs from sha256 of the manifest \
             skopeo stored\n{}",
            resp.describe()
        ))
    );
    assert_eq!(
        resp.body,
        manifest_bytes,
        "{}",
        server.context("the manifest served now differs from the one skopeo stored (not stable)")
    );
    // The same manifest by digest.
    let (by_digest, _) = server.manifest("shell/hello", &file_digest);
    assert_eq!(
        by_digest.body,
        manifest_bytes,
        "{}",
        server.context(&format!("GET manifests/{file_digest} gave other bytes\n{}", by_digest.describe()))
    );

    let manifest: Value = serde_json::from_slice(&manifest_bytes)
        .unwrap_or_else(|e| server.fail(&format!("manifest.json is not JSON: {e}")));
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .unwrap_or_else(|| server.fail(&format!("manifest has no config digest: {manifest:#}")))
        .to_string();
    let mut blobs = vec![config_digest];
    blobs.extend(layers_of(&server, &manifest).iter().filter_map(|l| l["digest"].as_str().map(str::to_owned)));
    for digest in blobs {
        let hex =
            digest.strip_prefix("sha256:").unwrap_or_else(|| server.fail(&format!("not a sha256 digest: {digest}")));
        let bytes =
            fs::read(dest.join(hex)).unwrap_or_else(|e| server.fail(&format!("skopeo stored no blob {digest} ({e})")));
        assert_eq!(
            sha256_hex(&bytes),
            hex,
            "{}",
            server.context(&format!("blob {digest} content does not match its digest"))
        );
    }
}

/// containerd (the kubelet's path): HEAD by tag, GET by digest, blobs; then run a program
/// whose output comes from another store path in the image (hello-lib -> greeting).
#[test]
fn containerd_pulls_and_runs() {
    require_tool(&["containerd", "ctr", "runc"]);
    let server = Server::start();
    let containerd = Containerd::start();
    let image = server.image("shell/hello-lib:latest");
    containerd.ctr_ok(&server, &["images", "pull", "--plain-http", &image]);
    let id = format!("hello-lib-{}", nonce());
    let out =
        containerd.try_ctr(&["run", "--rm", &image, &id, "hello-lib"], Duration::from_secs(120)).unwrap_or_else(|e| {
            // A bare command name is looked up in the PATH of the image config's Env.
            let config = server.image_config("shell/hello-lib", "latest");
            server.fail(&format!(
                "{e}\n--- image config (Env must provide PATH for bare command names) ---\n{:#}",
                config["config"]
            ))
        });
    assert_eq!(
        out.trim(),
        "greetings from the nix store",
        "{}",
        server.context("`hello-lib` run by containerd printed something else")
    );
}

/// podman pull and run.
#[test]
fn podman_pulls_and_runs() {
    require_tool(&["podman", "runc"]);
    let server = Server::start();
    let podman = Podman::new();
    let image = server.image("shell/hello:latest");
    server.run(podman.cmd().args(["pull", "--tls-verify=false", &image]));
    let out = server.run(podman.cmd().args(["run", "--rm", &image, "hello"]));
    assert_eq!(out.trim(), "Hello, world!", "{}", server.context("`hello` run by podman printed something else"));
    // The config podman read: default command bash.
    let cmd = server.run(podman.cmd().args(["image", "inspect", "--format", "{{json .Config.Cmd}}", &image]));
    assert_eq!(cmd.trim(), r#"["bash"]"#, "{}", server.context("podman sees another default command than [\"bash\"]"));
    let out = server.run(podman.cmd().args(["run", "--rm", &image, "bash", "-c", "echo from bash"]));
    assert_eq!(out.trim(), "from bash", "{}", server.context("`bash -c` run by podman printed something else"));
}

/// docker pull and run, as users type them, against a private Docker engine: the image
/// config (default command, PATH) is what the engine reads, and a program from one store
/// path reads a file from another (hello-lib -> greeting).
#[test]
fn docker_pulls_and_runs() {
    require_tool(&["dockerd", "docker", "runc"]);
    let server = Server::start();
    let docker = Docker::start();
    let image = server.image("shell/hello-lib:latest");
    let pulled = docker.pull(&server, &image);
    assert!(
        pulled.contains(&format!("Downloaded newer image for {image}")),
        "{}",
        server.context(&format!("docker pull did not report a new image:\n{pulled}"))
    );
    let out = docker.run(&server, &image, &["hello-lib"]);
    assert_eq!(
        out.trim(),
        "greetings from the nix store",
        "{}",
        server.context("`hello-lib` run by docker printed something else")
    );
    let cmd = docker.docker_ok(&server, &["image", "inspect", "--format", "{{json .Config.Cmd}}", &image]);
    assert_eq!(cmd.trim(), r#"["bash"]"#, "{}", server.context("docker sees another default command than [\"bash\"]"));
    let out = docker.run(&server, &image, &["bash", "-c", "echo from bash"]);
    assert_eq!(out.trim(), "from bash", "{}", server.context("`bash -c` run by docker printed something else"));

    // A failed pull shows the registry's message to the user.
    let failed = docker.output(&["pull", &server.image("hello/nosuchpkg:latest")]);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "{}", server.context(&format!("pulling a missing package succeeded: {stderr}")));
    assert!(
        stderr.contains("packages not found: nosuchpkg"),
        "{}",
        server.context(&format!("docker did not show the registry's message: {stderr}"))
    );
}

/// `arm64/hello` is an image for linux/arm64 whose packages were built for aarch64-linux.
#[test]
fn arm64_image_is_for_aarch64() {
    require_tool(&["skopeo", "umoci"]);
    let server = Server::start();
    let image = format!("docker://{}", server.image("arm64/hello:latest"));
    let out =
        server.run(Command::new("skopeo").args(["--override-arch", "arm64", "inspect", "--tls-verify=false", &image]));
    let info: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| server.fail(&format!("skopeo inspect printed no JSON ({e}): {out}")));
    assert_eq!(info["Architecture"], "arm64", "{}", server.context(&format!("skopeo inspect: {info:#}")));
    assert_eq!(info["Os"], "linux", "{}", server.context(&format!("skopeo inspect: {info:#}")));

    // The config blob, straight from the registry (its digest is checked).
    let config = server.image_config("arm64/hello", "latest");
    assert_eq!(config["architecture"], "arm64", "{}", server.context(&format!("config: {config:#}")));
    assert_eq!(config["os"], "linux", "{}", server.context(&format!("config: {config:#}")));

    // The package inside was asked for aarch64-linux.
    let img = pull_and_unpack(&server, "arm64/hello:latest", &["--override-arch", "arm64"]);
    let link = fs::read_link(img.rootfs.join("bin/hello"))
        .unwrap_or_else(|e| server.fail(&format!("/bin/hello is not a symlink ({e})\n{}", img.listing())));
    // /nix/store/HASH-hello/bin/hello -> /nix/store/HASH-hello
    let package = link
        .parent()
        .and_then(|p| p.parent())
        .unwrap_or_else(|| server.fail(&format!("odd /bin/hello target {}", link.display())));
    let system_path = format!("{}/nix-support/system", package.display());
    let host = img
        .resolve(&system_path)
        .unwrap_or_else(|| server.fail(&format!("{system_path} is not in the image\n{}", img.listing())));
    let system = fs::read_to_string(&host).unwrap_or_else(|e| server.fail(&format!("cannot read {system_path}: {e}")));
    assert_eq!(
        system.trim(),
        "aarch64-linux",
        "{}",
        server.context(&format!("{system_path} says the package was built for {system:?}"))
    );
}
