//! Image configs and manifests, in Docker schema 2 (the default) or OCI form.
//!
//! The config is the same JSON for both forms; only media types differ. Which one a client
//! gets is [`ManifestFormat::negotiate`]d from its `Accept` header: Docker schema 2 unless the
//! client prefers OCI (skopeo, containerd and Docker accept both and get Docker's). Layers
//! compressed with zstd are the exception: Docker schema 2 has no media type for them, so
//! they are served in OCI manifests only, and a client that cannot read them is told why
//! ([`Unreadable`]) instead of being handed a manifest whose layers it fails on: one that
//! does not accept OCI manifests, and Docker before 23, which accepts them but cannot
//! decompress zstd (it fails with "Error processing tar file: unexpected EOF"), recognised by
//! the `docker/<version>` its daemon sends as `User-Agent`. All JSON is rendered from typed
//! structs (`oci-spec`) with a fixed field order and no timestamps, so the same image always
//! has the same digests.
//!
//! [`format`] chooses the manifest format for a client, reading its `Accept` values as RFC
//! 9110 says ([`accept`]); this module renders the documents.

mod accept;
mod format;

pub(crate) use accept::acceptance;
pub use format::{ManifestFormat, Unreadable, Unservable};

use crate::archive::LayerBlob;
use crate::compression::Compression;
use crate::digest::Digest;
use crate::image::Arch;
use bytes::Bytes;
use oci_spec::image::{
    Arch as OciArch, ConfigBuilder, Descriptor, ImageConfigurationBuilder, ImageManifestBuilder, MediaType, Os,
    RootFsBuilder,
};

/// `Env` of every image: where the `cacert` package puts the CA bundle.
pub const SSL_CERT_ENV: &str = "SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt";
/// `PATH` of every image. containerd (and so Kubernetes) adds a default `PATH` only when an
/// image has no `Env` at all; with `SSL_CERT_FILE` set, `ctr run IMAGE hello` would find
/// nothing, so the image says where its programs are (the symlink forest's `/bin`).
pub const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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
    pub(crate) fn new(bytes: Vec<u8>) -> Self {
        let digest = Digest::of(&bytes);
        Document { bytes: bytes.into(), digest }
    }
}

/// How an image runs: its default command (`Cmd`) and user (`User`, numeric `uid:gid`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Exec<'a> {
    pub cmd: Option<&'a [String]>,
    pub user: Option<&'a str>,
}

/// The image config: architecture, OS, diff_ids in layer order, `Env`, and the default
/// command and user of `exec`, when it has them. `config` is always an object, never null
/// (Kubernetes rejects null).
pub fn image_config(arch: Arch, layers: &[LayerBlob], exec: Exec) -> Document {
    let mut config = ConfigBuilder::default().env(vec![PATH_ENV.to_owned(), SSL_CERT_ENV.to_owned()]);
    if let Some(cmd) = exec.cmd {
        config = config.cmd(cmd.to_vec());
    }
    if let Some(user) = exec.user {
        config = config.user(user.to_owned());
    }
    let exec = config;
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

    #[test]
    fn config_lists_diff_ids_in_order_and_never_a_null_config() {
        let doc = image_config(Arch::Arm64, &[layer(1), layer(2)], Exec::default());
        let v: Value = serde_json::from_slice(&doc.bytes).unwrap();
        assert_eq!(v["architecture"], "arm64");
        assert_eq!(v["os"], "linux");
        assert_eq!(v["rootfs"]["type"], "layers");
        assert_eq!(v["rootfs"]["diff_ids"][0], layer(1).diff_id.to_string());
        assert_eq!(v["rootfs"]["diff_ids"][1], layer(2).diff_id.to_string());
        assert!(v["config"].is_object());
        assert_eq!(v["config"]["Env"], serde_json::json!([PATH_ENV, SSL_CERT_ENV]));
        assert!(v["config"].get("Cmd").is_none());
        assert!(v["config"].get("User").is_none(), "root is the runtimes' default");
        assert!(v.get("created").is_none(), "timestamps would break determinism");
        assert_eq!(doc.digest, Digest::of(&doc.bytes));

        let bash = ["bash".to_owned()];
        let exec = Exec { cmd: Some(&bash), user: Some("1000:1000") };
        let with_bash: Value = serde_json::from_slice(&image_config(Arch::Amd64, &[layer(1)], exec).bytes).unwrap();
        assert_eq!(with_bash["config"]["Cmd"], serde_json::json!(["bash"]));
        assert_eq!(with_bash["config"]["User"], "1000:1000");
        assert_eq!(with_bash["architecture"], "amd64");
    }

    #[test]
    fn manifests_in_both_formats_and_zstd_in_oci() {
        let config = image_config(Arch::Amd64, &[layer(1)], Exec::default());
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
