//! skopeo copies an image into an OCI layout and umoci unpacks it: the proof that the
//! layers make a working filesystem, whose programs [`Unpacked`] runs with `chroot`.

use std::fmt::Write as _;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use super::process::{require_tool, run_checked, which};
use super::registry::Registry;
use super::temp_dir;

/// An image copied with skopeo into an OCI layout and unpacked with umoci; removed when
/// dropped.
pub struct Unpacked {
    _dir: TempDir,
    /// The image's filesystem (the umoci bundle's `rootfs`).
    pub rootfs: PathBuf,
}

/// `skopeo [skopeo_args] copy --src-tls-verify=false docker://ADDR/NAME:TAG oci:LAYOUT:TAG`
/// then `umoci unpack --image LAYOUT:TAG BUNDLE`. `name_and_tag` is e.g.
/// `"shell/hello:latest"`; `skopeo_args` go before `copy`, e.g.
/// `&["--override-arch", "arm64"]`. Failures panic with the server log.
pub fn pull_and_unpack(server: &impl Registry, name_and_tag: &str, skopeo_args: &[&str]) -> Unpacked {
    pull_and_unpack_with(server, name_and_tag, skopeo_args, &[])
}

/// [`pull_and_unpack`] with `copy_args` after `copy`, e.g. `&["--src-creds", "alice:pw"]`.
pub fn pull_and_unpack_with(
    server: &impl Registry,
    name_and_tag: &str,
    skopeo_args: &[&str],
    copy_args: &[&str],
) -> Unpacked {
    require_tool(&["skopeo", "umoci"]);
    let tag = name_and_tag.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
    let dir = temp_dir("unpack");
    let layout = dir.path().join("layout");
    let bundle = dir.path().join("bundle");
    server.run(
        Command::new("skopeo")
            .args(skopeo_args)
            .arg("copy")
            .args(copy_args)
            .arg("--src-tls-verify=false")
            .arg(format!("docker://{}", server.image(name_and_tag)))
            .arg(format!("oci:{}:{tag}", layout.display())),
    );
    server.run(
        Command::new("umoci").arg("unpack").arg("--image").arg(format!("{}:{tag}", layout.display())).arg(&bundle),
    );
    let rootfs = bundle.join("rootfs");
    if !rootfs.is_dir() {
        server.fail(&format!("umoci unpack produced no {}", rootfs.display()));
    }
    Unpacked { _dir: dir, rootfs }
}

impl Unpacked {
    /// `chroot ROOTFS /bin/sh -c SCRIPT` (at most 60 s); stdout, or a panic with the
    /// command's output, the top of the rootfs and the server log.
    pub fn sh(&self, server: &impl Registry, script: &str) -> String {
        self.chroot(server, &["/bin/sh", "-c", script])
    }

    /// `chroot ROOTFS ARGS...` (at most 60 s); stdout, or a panic as for [`Unpacked::sh`].
    pub fn chroot(&self, server: &impl Registry, args: &[&str]) -> String {
        // The host's chroot, resolved here: the child's PATH is the image's.
        let chroot = which("chroot").unwrap_or_else(|| PathBuf::from("/usr/sbin/chroot"));
        let mut cmd = Command::new(chroot);
        cmd.arg(&self.rootfs).args(args).env_clear().env("PATH", "/bin:/usr/bin");
        run_checked(&mut cmd, Duration::from_secs(60)).unwrap_or_else(|e| {
            server.fail(&format!("in the unpacked image: {e}\n--- rootfs top level ---\n{}", self.listing()))
        })
    }

    /// `ls -l`-like listing of the rootfs top level and /bin, for messages.
    pub fn listing(&self) -> String {
        let mut s = String::new();
        for sub in ["", "bin"] {
            let d = self.rootfs.join(sub);
            let Ok(rd) = fs::read_dir(&d) else {
                let _ = writeln!(s, "{}: (cannot read)", d.display());
                continue;
            };
            let mut names: Vec<String> = rd
                .flatten()
                .map(|e| {
                    let p = e.path();
                    match fs::read_link(&p) {
                        Ok(t) => format!("{} -> {}", e.file_name().to_string_lossy(), t.display()),
                        Err(_) => e.file_name().to_string_lossy().into_owned(),
                    }
                })
                .collect();
            names.sort();
            let _ = writeln!(s, "/{sub}: {}", names.join(", "));
        }
        s
    }

    /// Resolves `path` (absolute, as seen inside the image) to a host path under the rootfs,
    /// following symlinks the way the image would (absolute targets are taken relative to
    /// the rootfs). `None` if something on the way does not exist.
    pub fn resolve(&self, path: &str) -> Option<PathBuf> {
        resolve_in(&self.rootfs, Path::new(path), 0)
    }
}

/// [`Unpacked::resolve`] in the root filesystem `root`, `depth` symlinks deep.
fn resolve_in(root: &Path, path: &Path, depth: u32) -> Option<PathBuf> {
    if depth > 40 {
        return None;
    }
    let mut cur = PathBuf::from("/"); // path inside the image
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                cur.pop();
            }
            Component::Normal(n) => {
                let next = cur.join(n);
                let host = root.join(next.strip_prefix("/").unwrap());
                let meta = fs::symlink_metadata(&host).ok()?;
                if meta.file_type().is_symlink() {
                    let target = fs::read_link(&host).ok()?;
                    let target_in_image = if target.is_absolute() { target } else { cur.join(target) };
                    let resolved = resolve_in(root, &target_in_image, depth + 1)?;
                    cur = PathBuf::from("/").join(resolved.strip_prefix(root).ok()?);
                } else {
                    cur = next;
                }
            }
        }
    }
    Some(root.join(cur.strip_prefix("/").unwrap()))
}
