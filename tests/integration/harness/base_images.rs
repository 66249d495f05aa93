//! The base images the Dockerfile's `FROM` lines name, made on this machine: there is no
//! Docker Hub here, only Debian's archive and crates.io.
//!
//! - `debian:<suite>-slim`: `debootstrap --variant=minbase <suite>` from deb.debian.org, made
//!   slim the way Debian's official images are (debuerreotype's minimizing config and
//!   slimify: dpkg keeps docs, man pages and translations out of every later install, apt
//!   keeps no package cache; no apt lists), then `docker import`ed with `CMD ["bash"]`. It
//!   comes out at the official image's size (79 MB for trixie), so the size of the image
//!   built on it means what it would with the real one.
//! - `rust:<version>-<suite>`: that image plus what the official Rust image offers a
//!   Dockerfile (gcc, libc6-dev, pkg-config, ca-certificates, `cargo` and `rustc` on `PATH`
//!   with `CARGO_HOME=/usr/local/cargo`), with this machine's toolchain copied in (rustc's
//!   sysroot without its documentation) and this machine's CA bundle over the image's own,
//!   so that cargo reaches crates.io from the build as this machine does. The machine's
//!   rustc must be the version the `FROM` line names.
//!
//! Each image is labelled ([`LABEL`]) with the key of what it was made from: the recipe
//! below, the suite and mirror, and for the Rust image the slim image's key, `rustc -vV`,
//! `cargo -V` and the CA bundle. An image whose label matches is used as it is, so on an
//! engine whose data root is kept (super::nixery_image) they are made once per machine and
//! again only when what they are made from changes.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::docker::Docker;
use super::process::{require_tool, run_checked};
use super::{nonce, sha256_hex};

/// The image label holding the key of what a base image was made from.
pub const LABEL: &str = "org.nixery-rs.test.base";
/// Where debootstrap and apt fetch packages.
const MIRROR: &str = "http://deb.debian.org/debian";
/// Changes every key when the recipes change in a way the texts below do not show.
const RECIPE_VERSION: &str = "1";
/// Longest a debootstrap or an apt-get install may take.
const MAKE_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// The CA bundle of this machine (Debian's), put into the Rust image.
const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Run in a debootstrapped root (`$1`): what debuerreotype does for Debian's slim images
/// (its minimizing config and `.slimify-excludes`/`.slimify-includes`).
const SLIMIFY: &str = r#"set -eu
root=$1
cat > "$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
EOF
echo force-unsafe-io > "$root/etc/dpkg/dpkg.cfg.d/docker-apt-speedup"
clean='"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true";'
cat > "$root/etc/apt/apt.conf.d/docker-clean" <<EOF
DPkg::Post-Invoke { $clean };
APT::Update::Post-Invoke { $clean };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
echo 'Acquire::GzipIndexes "true";' > "$root/etc/apt/apt.conf.d/docker-gzip-indexes"
echo 'Acquire::Languages "none";' > "$root/etc/apt/apt.conf.d/docker-no-languages"
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/groff/* \
  "$root"/usr/share/linda/* "$root"/usr/share/lintian/overrides/*
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
find "$root/var/log" -type f -delete
"#;

/// Run in a container of the slim image, with this machine's toolchain (rustc's sysroot) at
/// /mnt/toolchain and its CA bundle at /mnt/ca.crt.
const RUST_SETUP: &str = r#"set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends gcc libc6-dev pkg-config ca-certificates >/dev/null
rm -rf /var/lib/apt/lists/*
cp /mnt/ca.crt /etc/ssl/certs/ca-certificates.crt
mkdir -p /usr/local/rust /usr/local/cargo/bin
for part in bin lib libexec etc; do
  if [ -e "/mnt/toolchain/$part" ]; then cp -a "/mnt/toolchain/$part" /usr/local/rust/; fi
done
ln -s /usr/local/rust/bin/* /usr/local/cargo/bin/
/usr/local/cargo/bin/cargo --version
"#;

/// The image references of the `FROM` lines of a Dockerfile, without the stages it names
/// itself (`FROM build`), in order.
pub fn from_images(dockerfile: &str) -> Vec<String> {
    let mut stages: Vec<String> = Vec::new();
    let mut images = Vec::new();
    for line in dockerfile.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((first, rest)) = words.split_first() else { continue };
        if !first.eq_ignore_ascii_case("FROM") {
            continue;
        }
        let rest: Vec<&str> = rest.iter().copied().filter(|w| !w.starts_with("--")).collect();
        let Some(image) = rest.first() else { continue };
        if !stages.iter().any(|s| s == image) && !images.iter().any(|i| i == image) {
            images.push(image.to_string());
        }
        if let [_, as_, name] = rest.as_slice()
            && as_.eq_ignore_ascii_case("AS")
        {
            stages.push(name.to_string());
        }
    }
    images
}

/// A base image this module can make.
#[derive(Debug, PartialEq, Eq)]
enum Base {
    /// `debian:<suite>-slim`
    DebianSlim { suite: String },
    /// `rust:<version>-<suite>`
    Rust { version: String, suite: String },
}

impl Base {
    fn parse(reference: &str) -> Option<Base> {
        let (repo, tag) = reference.split_once(':')?;
        match repo {
            "debian" => Some(Base::DebianSlim { suite: tag.strip_suffix("-slim")?.to_owned() }),
            "rust" => {
                let (version, suite) = tag.split_once('-')?;
                Some(Base::Rust { version: version.to_owned(), suite: suite.to_owned() })
            }
            _ => None,
        }
    }
}

/// Makes every base image the Dockerfile at `dockerfile` names, unless the engine has it
/// made from the same inputs already; `scratch` is a directory for the root filesystems
/// on their way (on a disk with room for a few hundred MB).
pub fn ensure(docker: &Docker, dockerfile: &Path, scratch: &Path) {
    let text = fs::read_to_string(dockerfile).unwrap_or_else(|e| panic!("cannot read {}: {e}", dockerfile.display()));
    for image in from_images(&text) {
        match Base::parse(&image) {
            Some(Base::DebianSlim { suite }) => {
                ensure_slim(docker, &suite, scratch);
            }
            Some(Base::Rust { version, suite }) => {
                let slim_key = ensure_slim(docker, &suite, scratch);
                ensure_rust(docker, &image, &version, &suite, &slim_key);
            }
            None => panic!(
                "{} builds FROM {image}, which this test cannot make (no Docker Hub here): \
                 it makes debian:<suite>-slim and rust:<version>-<suite> (harness/base_images.rs)",
                dockerfile.display()
            ),
        }
    }
}

/// The key label of `image` in the engine, if it has the image.
fn label(docker: &Docker, image: &str) -> Option<String> {
    let format = format!("{{{{ index .Config.Labels \"{LABEL}\" }}}}");
    let out = docker.output(&["image", "inspect", "--format", &format, image]);
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `debian:<suite>-slim`; its key.
fn ensure_slim(docker: &Docker, suite: &str, scratch: &Path) -> String {
    let name = format!("debian:{suite}-slim");
    let key = sha256_hex(format!("{RECIPE_VERSION}\n{suite}\n{MIRROR}\n{SLIMIFY}").as_bytes());
    if label(docker, &name).as_deref() == Some(key.as_str()) {
        return key;
    }
    require_tool(&["debootstrap", "tar"]);
    let started = Instant::now();
    let rootfs = scratch.join(format!("rootfs-{suite}"));
    let tarball = scratch.join(format!("rootfs-{suite}.tar"));
    let _ = fs::remove_dir_all(&rootfs);
    fs::create_dir_all(scratch).unwrap_or_else(|e| panic!("cannot create {}: {e}", scratch.display()));
    let made = (|| {
        run_checked(
            Command::new("debootstrap").args(["--variant=minbase", suite]).arg(&rootfs).arg(MIRROR),
            MAKE_TIMEOUT,
        )?;
        run_checked(Command::new("sh").args(["-c", SLIMIFY, "slimify"]).arg(&rootfs), MAKE_TIMEOUT)?;
        run_checked(
            Command::new("tar").arg("-C").arg(&rootfs).args(["--numeric-owner", "-cf"]).arg(&tarball).arg("."),
            MAKE_TIMEOUT,
        )?;
        docker.try_docker(
            &[
                "import",
                "--change",
                r#"CMD ["bash"]"#,
                "--change",
                &format!("LABEL {LABEL}={key}"),
                &tarball.to_string_lossy(),
                &name,
            ],
            MAKE_TIMEOUT,
        )
    })();
    let _ = fs::remove_dir_all(&rootfs);
    let _ = fs::remove_file(&tarball);
    if let Err(e) = made {
        panic!("cannot make the base image {name}: {e}");
    }
    eprintln!("base image {name} made in {:.0?}", started.elapsed());
    key
}

/// `rust:<version>-<suite>` from `debian:<suite>-slim` (whose key is `slim_key`).
fn ensure_rust(docker: &Docker, name: &str, version: &str, suite: &str, slim_key: &str) {
    let rustc = run_checked(Command::new("rustc").arg("-vV"), Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("the Rust image needs this machine's rustc: {e}"));
    let release = rustc.lines().find_map(|l| l.strip_prefix("release: ")).unwrap_or_default().trim().to_owned();
    if release != version && !release.starts_with(&format!("{version}.")) {
        panic!(
            "the Dockerfile builds FROM {name}, but this machine's rustc is {release}: the test copies \
             this machine's toolchain into that image, so the versions must agree"
        );
    }
    let cargo = run_checked(Command::new("cargo").arg("-V"), Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("the Rust image needs this machine's cargo: {e}"));
    let ca = fs::read(HOST_CA_BUNDLE).unwrap_or_else(|e| panic!("cannot read {HOST_CA_BUNDLE}: {e}"));
    let key = sha256_hex(
        format!("{RECIPE_VERSION}\n{slim_key}\n{rustc}\n{cargo}\n{}\n{RUST_SETUP}", sha256_hex(&ca)).as_bytes(),
    );
    if label(docker, name).as_deref() == Some(key.as_str()) {
        return;
    }
    let started = Instant::now();
    let sysroot = run_checked(Command::new("rustc").args(["--print", "sysroot"]), Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"))
        .trim()
        .to_owned();
    let container = format!("nixery-test-rust-base-{}", nonce());
    let made = docker
        .try_docker(
            &[
                "run",
                "--name",
                &container,
                "--network",
                "host",
                "--volume",
                &format!("{sysroot}:/mnt/toolchain:ro"),
                "--volume",
                &format!("{HOST_CA_BUNDLE}:/mnt/ca.crt:ro"),
                &format!("debian:{suite}-slim"),
                "sh",
                "-c",
                RUST_SETUP,
            ],
            MAKE_TIMEOUT,
        )
        .and_then(|_| {
            docker.try_docker(
                &[
                    "commit",
                    "--change",
                    "ENV CARGO_HOME=/usr/local/cargo \
                     PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "--change",
                    &format!("ENV RUST_VERSION={release}"),
                    "--change",
                    &format!("LABEL {LABEL}={key}"),
                    &container,
                    name,
                ],
                MAKE_TIMEOUT,
            )
        });
    let _ = docker.output(&["rm", "--force", "--volumes", &container]);
    if let Err(e) = made {
        panic!("cannot make the base image {name}: {e}");
    }
    eprintln!("base image {name} made in {:.0?}", started.elapsed());
}

/// The parser of `FROM` lines, on a Dockerfile that uses every form it must handle.
#[test]
fn from_images_skips_stages_and_flags() {
    let dockerfile = "FROM rust:1.95-trixie AS build\nRUN x\nFROM --platform=linux/amd64 debian:trixie-slim\n\
                      COPY --from=build /a /b\nFROM build\n";
    assert_eq!(from_images(dockerfile), ["rust:1.95-trixie", "debian:trixie-slim"]);
    assert_eq!(Base::parse("rust:1.95-trixie"), Some(Base::Rust { version: "1.95".into(), suite: "trixie".into() }));
    assert_eq!(Base::parse("debian:trixie-slim"), Some(Base::DebianSlim { suite: "trixie".into() }));
    assert_eq!(Base::parse("alpine:3"), None);
}
