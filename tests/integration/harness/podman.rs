//! podman with private storage (vfs) and config in a temp dir, set up the way it works on
//! these machines (shared/CLIENTS.md).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use super::process::{output_timeout, require_tool, unmount_under};
use super::temp_dir;

/// containers.conf for podman here: host network, ulimits root can set here, cgroupfs,
/// file events, runc, and file locks plus a private tmp dir under `tmp_dir` so parallel
/// podmans never share state.
fn containers_conf(tmp_dir: &Path) -> String {
    format!(
        "[containers]\n\
         netns = \"host\"\n\
         default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
         [engine]\n\
         cgroup_manager = \"cgroupfs\"\n\
         events_logger = \"file\"\n\
         runtime = \"runc\"\n\
         lock_type = \"file\"\n\
         tmp_dir = \"{}\"\n",
        tmp_dir.display()
    )
}

/// podman with its own containers.conf and storage; containers a failed test left are
/// removed when dropped.
pub struct Podman {
    dir: TempDir,
}

impl Podman {
    /// Writes the private containers.conf; nothing runs yet.
    pub fn new() -> Podman {
        require_tool(&["podman", "runc"]);
        let dir = temp_dir("podman");
        fs::write(dir.path().join("containers.conf"), containers_conf(&dir.path().join("tmp")))
            .expect("write containers.conf");
        // podman refuses a REGISTRY_AUTH_FILE that does not exist.
        fs::write(dir.path().join("auth.json"), "{\"auths\":{}}").expect("write auth.json");
        Podman { dir }
    }

    /// `CONTAINERS_CONF=DIR/containers.conf REGISTRY_AUTH_FILE=DIR/auth.json podman --root
    /// DIR/root --runroot DIR/runroot --storage-driver vfs`, ready for a subcommand.
    pub fn cmd(&self) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", d.join("containers.conf"))
            // `podman login` writes here, not to the machine's shared auth file.
            .env("REGISTRY_AUTH_FILE", d.join("auth.json"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .args(["--storage-driver", "vfs"]);
        cmd
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Containers left by a failed test (best effort; podman run --rm leaves none).
        let _ = output_timeout(self.cmd().args(["rm", "--all", "--force"]), Duration::from_secs(30));
        unmount_under(self.dir.path());
    }
}
