//! Image configs and manifests, in Docker schema 2 (the default) or OCI form.
//!
//! The config is the same JSON for both forms; only media types differ. Docker schema 2 is
//! served unless the client accepts OCI manifests and not Docker's (skopeo and containerd
//! accept both and get Docker's). Layers compressed with zstd are the exception: Docker
//! schema 2 has no media type for them, so they are served in OCI manifests only, and a
//! client that cannot read them is told why ([`Unreadable`]) instead of being handed a
//! manifest whose layers it fails on: one that does not accept OCI manifests, and Docker
//! before 23, which accepts them but cannot decompress zstd (it fails with "Error processing
//! tar file: unexpected EOF"), recognised by the `docker/<version>` its daemon sends as
//! `User-Agent`. All JSON is rendered from typed structs (`oci-spec`) with
//! a fixed field order and no timestamps, so the same image always has the same digests.

use crate::archive::LayerBlob;
use crate::compression::Compression;
use crate::digest::Digest;
use crate::image::Arch;
use bytes::Bytes;
use oci_spec::image::{
    Arch as OciArch, ConfigBuilder, Descriptor, ImageConfigurationBuilder, ImageManifestBuilder, MediaType, Os,
    RootFsBuilder, ToDockerV2S2,
};

/// `Env` of every image: where the `cacert` package puts the CA bundle.
pub const SSL_CERT_ENV: &str = "SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt";
/// `PATH` of every image. containerd (and so Kubernetes) adds a default `PATH` only when an
/// image has no `Env` at all; with `SSL_CERT_FILE` set, `ctr run IMAGE hello` would find
/// nothing, so the image says where its programs are (the symlink forest's `/bin`).
pub const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Which manifest media types to answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ManifestFormat {
    Docker,
    Oci,
}

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Why a client cannot read this registry's layers.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unreadable {
    #[error(
        "this registry's layers are {0}-compressed, which only OCI image manifests can describe, and the \
         client does not accept those: pull with Docker 23 or later, containerd 1.5 or later, or podman"
    )]
    NoOciManifests(Compression),
    #[error(
        "this registry's layers are {compression}-compressed, which Docker reads from version 23 on, and \
         this is Docker {major}: pull with Docker 23 or later, containerd 1.5 or later, or podman"
    )]
    DockerTooOld { compression: Compression, major: u32 },
}

/// The first Docker engine that reads zstd layers (moby 23.0).
const DOCKER_WITH_ZSTD: u32 = 23;

/// The major version of a Docker engine from its `User-Agent` (`docker/20.10.24+dfsg1 go/…`),
/// `None` for any other client.
fn docker_major(user_agent: &str) -> Option<u32> {
    let version = user_agent.strip_prefix("docker/")?;
    let digits = version.find(|c: char| !c.is_ascii_digit()).unwrap_or(version.len());
    version[..digits].parse().ok()
}

impl ManifestFormat {
    /// Chooses from the client's `Accept` values (all header lines, already split) for layers
    /// compressed with `compression`. gzip: Docker schema 2 unless the client accepts OCI and
    /// not Docker. zstd: OCI if the client accepts it, or anything (`*/*`, or no `Accept` at
    /// all, which in HTTP means the same), and is not a Docker engine before 23 (by its
    /// `User-Agent`); any other client could not read the layers, whatever it were sent.
    pub fn negotiate<'a>(
        accepted: impl IntoIterator<Item = &'a str>,
        user_agent: Option<&str>,
        compression: Compression,
    ) -> Result<Self, Unreadable> {
        let (mut docker, mut oci, mut any, mut listed) = (false, false, false, false);
        for value in accepted {
            let media = value.split(';').next().unwrap_or("").trim();
            listed |= !media.is_empty();
            docker |= media == DOCKER_MANIFEST;
            oci |= media == OCI_MANIFEST;
            any |= media == "*/*" || media == "application/*";
        }
        let old_docker = user_agent.and_then(docker_major).filter(|&major| major < DOCKER_WITH_ZSTD);
        match (compression.docker_media_type(), old_docker) {
            (Some(_), _) if oci && !docker => Ok(ManifestFormat::Oci),
            (Some(_), _) => Ok(ManifestFormat::Docker),
            (None, Some(major)) => Err(Unreadable::DockerTooOld { compression, major }),
            (None, None) if oci || any || !listed => Ok(ManifestFormat::Oci),
            (None, None) => Err(Unreadable::NoOciManifests(compression)),
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            ManifestFormat::Docker => DOCKER_MANIFEST,
            ManifestFormat::Oci => OCI_MANIFEST,
        }
    }

    fn typed(self, oci: MediaType) -> MediaType {
        match self {
            ManifestFormat::Oci => oci,
            ManifestFormat::Docker => MediaType::Other(
                oci.to_docker_v2s2()
                    .expect("manifest, config and gzip layer types have Docker names; zstd layers negotiate OCI")
                    .to_owned(),
            ),
        }
    }
}

/// The media type stored in a manifest's `mediaType` field, for serving it by digest.
pub fn media_type_of(manifest: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    serde_json::from_slice::<Probe>(manifest).ok()?.media_type
}

/// A JSON document and its digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    pub bytes: Bytes,
    pub digest: Digest,
}

impl Document {
    fn new(bytes: Vec<u8>) -> Self {
        let digest = Digest::of(&bytes);
        Document { bytes: bytes.into(), digest }
    }
}

/// The image config: architecture, OS, diff_ids in layer order, `Env`, and `Cmd ["bash"]`
/// when the image has bashInteractive. `config` is always an object, never null
/// (Kubernetes rejects null).
pub fn image_config(arch: Arch, layers: &[LayerBlob], has_bash: bool) -> Document {
    let mut exec = ConfigBuilder::default().env(vec![PATH_ENV.to_owned(), SSL_CERT_ENV.to_owned()]);
    if has_bash {
        exec = exec.cmd(vec!["bash".to_owned()]);
    }
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>())
        .build()
        .expect("rootfs fields are set");
    let arch = match arch {
        Arch::Amd64 => OciArch::Amd64,
        Arch::Arm64 => OciArch::ARM64,
    };
    let config = ImageConfigurationBuilder::default()
        .architecture(arch)
        .os(Os::Linux)
        .config(exec.build().expect("config fields are set"))
        .rootfs(rootfs)
        .build()
        .expect("image config fields are set");
    Document::new(serde_json::to_vec(&config).expect("config serialises"))
}

/// The manifest pointing at `config` and `layers` (in order, compressed with `compression`),
/// in `format`, which [`ManifestFormat::negotiate`] chose for that compression.
pub fn manifest(format: ManifestFormat, compression: Compression, config: &Document, layers: &[LayerBlob]) -> Document {
    let descriptor = |media: MediaType, size: u64, digest: &Digest| {
        let digest: oci_spec::image::Digest = digest.to_string().parse().expect("our digests are valid");
        Descriptor::new(media, size, digest)
    };
    let layer_type = format.typed(compression.oci_media_type());
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(format.typed(MediaType::ImageManifest))
        .config(descriptor(format.typed(MediaType::ImageConfig), config.bytes.len() as u64, &config.digest))
        .layers(layers.iter().map(|l| descriptor(layer_type.clone(), l.size, &l.digest)).collect::<Vec<_>>())
        .build()
        .expect("manifest fields are set");
    Document::new(serde_json::to_vec(&manifest).expect("manifest serialises"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn layer(n: u8) -> LayerBlob {
        LayerBlob { digest: Digest::of(&[n]), diff_id: Digest::of(&[n, n]), size: 100 + n as u64 }
    }

    const SKOPEO: [&str; 3] =
        [OCI_MANIFEST, DOCKER_MANIFEST, "application/vnd.docker.distribution.manifest.v1+prettyjws"];

    /// What Docker 20.10's daemon sends (six Accept lines, OCI's among them).
    const DOCKER_20: [&str; 6] = [
        "application/json",
        OCI_MANIFEST,
        DOCKER_MANIFEST,
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    ];
    const DOCKER_20_AGENT: &str = "docker/20.10.24+dfsg1 go/go1.19.8 git-commit/5d6db84 kernel/6.1 os/linux arch/amd64 \
        UpstreamClient(Docker-Client/28.2.2 \\(linux\\))";

    #[test]
    fn negotiation_prefers_docker_unless_only_oci_is_accepted() {
        let gzip = |accepted: &[&str]| ManifestFormat::negotiate(accepted.iter().copied(), None, Compression::Gzip);
        assert_eq!(gzip(&SKOPEO), Ok(ManifestFormat::Docker));
        assert_eq!(gzip(&[OCI_MANIFEST, "application/vnd.oci.image.index.v1+json"]), Ok(ManifestFormat::Oci));
        assert_eq!(gzip(&[format!("{OCI_MANIFEST}; q=0.5").as_str()]), Ok(ManifestFormat::Oci));
        assert_eq!(gzip(&[]), Ok(ManifestFormat::Docker));
        assert_eq!(gzip(&["*/*"]), Ok(ManifestFormat::Docker));
        assert_eq!(gzip(&[DOCKER_MANIFEST]), Ok(ManifestFormat::Docker));
        let docker = ManifestFormat::negotiate(DOCKER_20, Some(DOCKER_20_AGENT), Compression::Gzip);
        assert_eq!(docker, Ok(ManifestFormat::Docker), "old Docker reads gzip layers");
    }

    #[test]
    fn zstd_layers_get_oci_manifests_or_a_reason() {
        let zstd = |accepted: &[&str]| ManifestFormat::negotiate(accepted.iter().copied(), None, Compression::Zstd);
        // containerd's one line (Docker, lists, OCI, */*), skopeo's and podman's lines.
        let containerd = [DOCKER_MANIFEST, "application/vnd.docker.distribution.manifest.list.v2+json", OCI_MANIFEST];
        assert_eq!(zstd(&containerd), Ok(ManifestFormat::Oci));
        assert_eq!(zstd(&SKOPEO), Ok(ManifestFormat::Oci));
        assert_eq!(zstd(&[OCI_MANIFEST]), Ok(ManifestFormat::Oci));
        // Anything, or nothing said: anything is acceptable.
        assert_eq!(zstd(&["*/*"]), Ok(ManifestFormat::Oci));
        assert_eq!(zstd(&[]), Ok(ManifestFormat::Oci));
        // A client that names what it reads, and not OCI, is told why.
        let err = zstd(&[DOCKER_MANIFEST, "application/vnd.docker.distribution.manifest.list.v2+json"]).unwrap_err();
        assert_eq!(err, Unreadable::NoOciManifests(Compression::Zstd));
        assert!(err.to_string().starts_with("this registry's layers are zstd-compressed"), "{err}");
    }

    #[test]
    fn docker_before_23_is_told_it_cannot_read_zstd_layers() {
        let zstd = |agent: &str| ManifestFormat::negotiate(DOCKER_20, Some(agent), Compression::Zstd);
        let err = zstd(DOCKER_20_AGENT).unwrap_err();
        assert_eq!(err, Unreadable::DockerTooOld { compression: Compression::Zstd, major: 20 });
        assert!(err.to_string().contains("this is Docker 20: pull with Docker 23 or later"), "{err}");
        assert_eq!(zstd("docker/23.0.0 go/go1.19.5 git-commit/d7573ab"), Ok(ManifestFormat::Oci));
        assert_eq!(zstd("docker/28.2.2 go/go1.24"), Ok(ManifestFormat::Oci));
        // Other clients are judged by what they accept, whatever their version numbers.
        assert_eq!(zstd("containerd/1.6.20"), Ok(ManifestFormat::Oci));
        assert_eq!(zstd("containers/5.23.1 (github.com/containers/image)"), Ok(ManifestFormat::Oci));
        assert_eq!(zstd("docker/unknown"), Ok(ManifestFormat::Oci));
        assert_eq!(docker_major("docker/9.1"), Some(9));
        assert_eq!(docker_major("Docker-Client/20.10"), None);
    }

    #[test]
    fn config_lists_diff_ids_in_order_and_never_a_null_config() {
        let doc = image_config(Arch::Arm64, &[layer(1), layer(2)], false);
        let v: Value = serde_json::from_slice(&doc.bytes).unwrap();
        assert_eq!(v["architecture"], "arm64");
        assert_eq!(v["os"], "linux");
        assert_eq!(v["rootfs"]["type"], "layers");
        assert_eq!(v["rootfs"]["diff_ids"][0], layer(1).diff_id.to_string());
        assert_eq!(v["rootfs"]["diff_ids"][1], layer(2).diff_id.to_string());
        assert!(v["config"].is_object());
        assert_eq!(v["config"]["Env"], serde_json::json!([PATH_ENV, SSL_CERT_ENV]));
        assert!(v["config"].get("Cmd").is_none());
        assert!(v.get("created").is_none(), "timestamps would break determinism");
        assert_eq!(doc.digest, Digest::of(&doc.bytes));

        let with_bash: Value = serde_json::from_slice(&image_config(Arch::Amd64, &[layer(1)], true).bytes).unwrap();
        assert_eq!(with_bash["config"]["Cmd"], serde_json::json!(["bash"]));
        assert_eq!(with_bash["architecture"], "amd64");
    }

    #[test]
    fn manifests_in_both_formats_and_zstd_in_oci() {
        let config = image_config(Arch::Amd64, &[layer(1)], false);
        for (format, compression, layer_type, config_type) in [
            (
                ManifestFormat::Docker,
                Compression::Gzip,
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "application/vnd.docker.container.image.v1+json",
            ),
            (
                ManifestFormat::Oci,
                Compression::Gzip,
                "application/vnd.oci.image.layer.v1.tar+gzip",
                "application/vnd.oci.image.config.v1+json",
            ),
            (
                ManifestFormat::Oci,
                Compression::Zstd,
                "application/vnd.oci.image.layer.v1.tar+zstd",
                "application/vnd.oci.image.config.v1+json",
            ),
        ] {
            let m = manifest(format, compression, &config, &[layer(1), layer(2)]);
            let v: Value = serde_json::from_slice(&m.bytes).unwrap();
            assert_eq!(v["schemaVersion"], 2);
            assert_eq!(v["mediaType"], format.media_type());
            assert_eq!(media_type_of(&m.bytes).as_deref(), Some(format.media_type()));
            assert_eq!(v["config"]["mediaType"], config_type);
            assert_eq!(v["config"]["digest"], config.digest.to_string());
            assert_eq!(v["config"]["size"], config.bytes.len());
            assert_eq!(v["layers"][1]["mediaType"], layer_type);
            assert_eq!(v["layers"][1]["digest"], layer(2).digest.to_string());
            assert_eq!(v["layers"][1]["size"], 102);
            assert_eq!(v["layers"][0]["mediaType"], layer_type);
            assert_eq!(m, manifest(format, compression, &config, &[layer(1), layer(2)]));
        }
    }
}
