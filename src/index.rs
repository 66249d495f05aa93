//! Image indexes: one tag, an image per platform (`NIXERY_PLATFORMS`).
//!
//! An index (OCI `application/vnd.oci.image.index.v1+json`, or Docker's manifest list
//! `application/vnd.docker.distribution.manifest.list.v2+json`, the same JSON shape) lists one
//! manifest per platform with its `platform` (`architecture`, `os`); the client pulls the
//! entry for its own platform, or the one it is told (`--platform`, `--override-arch`).
//!
//! # Negotiation
//!
//! The manifest format is negotiated first, exactly as for a single manifest
//! ([`ManifestFormat::negotiate`], and whatever overrides it, such as zstd layers needing
//! OCI), and the index type follows it: Docker manifests go in a Docker manifest list, OCI
//! manifests in an OCI index, so the entries always have the format the client asked for
//! and a rule that forces OCI manifests forces an OCI index with them. The index is served
//! when the client *names* that index type (a wildcard does not count) with a q-value above
//! 0 and at least the manifest's: every client that understands indexes names them (docker,
//! containerd, skopeo, podman, crane), while a tool that sends `*/*` or nothing may not parse
//! one, and by RFC 9110 a client that prefers manifests by q gets a manifest. A client that
//! does not get an index gets the default platform's manifest ([`crate::image::Platforms`]).

use crate::cache::CachedManifest;
use crate::image::Arch;
use crate::manifest::{self, Document, ManifestFormat};
use serde_json::json;

const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

impl ManifestFormat {
    /// The index type whose entries are manifests of this format.
    pub fn index_media_type(self) -> &'static str {
        match self {
            ManifestFormat::Docker => DOCKER_LIST,
            ManifestFormat::Oci => OCI_INDEX,
        }
    }

    /// Whether a client with these `Accept` values gets an index of manifests in this
    /// format rather than one manifest (see the module docs).
    pub fn index_accepted<'a>(self, accepted: impl IntoIterator<Item = &'a str> + Clone) -> bool {
        let index = manifest::acceptance(accepted.clone(), self.index_media_type());
        let Some((2, index_q)) = index.filter(|&(_, q)| q > 0) else { return false };
        let manifest_q = manifest::acceptance(accepted, self.media_type()).map_or(0, |(_, q)| q);
        index_q >= manifest_q
    }
}

/// The index of `entries` (each platform's manifest, in `format`), in `format`'s index type.
pub fn index(format: ManifestFormat, entries: &[(Arch, &CachedManifest)]) -> Document {
    let manifests: Vec<_> = entries
        .iter()
        .map(|(arch, m)| {
            json!({
                "mediaType": format.media_type(),
                "digest": m.digest.to_string(),
                "size": m.bytes.len(),
                "platform": { "architecture": arch.oci_name(), "os": "linux" },
            })
        })
        .collect();
    let doc = json!({ "schemaVersion": 2, "mediaType": format.index_media_type(), "manifests": manifests });
    Document::new(serde_json::to_vec(&doc).expect("an index serialises"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use ManifestFormat::{Docker, Oci};

    const DOCKER: &str = "application/vnd.docker.distribution.manifest.v2+json";
    const OCI: &str = "application/vnd.oci.image.manifest.v1+json";

    fn gets_index(accept: &[&str]) -> Option<(ManifestFormat, bool)> {
        let format = ManifestFormat::negotiate(accept.iter().copied())?;
        Some((format, format.index_accepted(accept.iter().copied())))
    }

    #[test]
    fn clients_that_name_an_index_get_one_in_the_negotiated_format() {
        // What the clients send (shared/CLIENTS.md).
        let containerd = [DOCKER, DOCKER_LIST, OCI, OCI_INDEX, "*/*"];
        assert_eq!(gets_index(&containerd), Some((Docker, true)));
        let skopeo = [OCI, DOCKER, DOCKER_LIST, OCI_INDEX, "application/vnd.docker.distribution.manifest.v1+prettyjws"];
        assert_eq!(gets_index(&skopeo), Some((Docker, true)));
        assert_eq!(gets_index(&[OCI, OCI_INDEX]), Some((Oci, true)));
        // The index type follows the manifest format: an OCI-only client is not sent a
        // Docker list, a Docker-only one no OCI index.
        assert_eq!(gets_index(&[OCI, DOCKER_LIST]), Some((Oci, false)));
        assert!(!Docker.index_accepted([DOCKER, OCI_INDEX]));
        assert!(Oci.index_accepted([DOCKER, OCI_INDEX]), "a forced OCI format takes the OCI index");
    }

    #[test]
    fn wildcards_refusals_and_lower_q_get_a_manifest() {
        assert_eq!(gets_index(&[]), Some((Docker, false)));
        assert_eq!(gets_index(&["*/*"]), Some((Docker, false)));
        assert_eq!(gets_index(&[DOCKER, "application/*"]), Some((Docker, false)));
        assert_eq!(gets_index(&[DOCKER]), Some((Docker, false)));
        assert_eq!(gets_index(&[DOCKER, &format!("{DOCKER_LIST};q=0")]), Some((Docker, false)));
        assert_eq!(gets_index(&[DOCKER, &format!("{DOCKER_LIST};q=0.5")]), Some((Docker, false)));
        assert_eq!(gets_index(&[&format!("{DOCKER};q=0.5"), DOCKER_LIST]), Some((Docker, true)));
        assert_eq!(gets_index(&[DOCKER_LIST]), Some((Docker, true)), "only a list: served, by q");
    }

    #[test]
    fn an_index_lists_each_platform_s_manifest() {
        let m = |text: &str| {
            let doc = Document::new(text.as_bytes().to_vec());
            CachedManifest::new(doc, DOCKER)
        };
        let (amd, arm) = (m("{\"a\":1}"), m("{\"b\":22}"));
        for format in [Docker, Oci] {
            let doc = index(format, &[(Arch::Amd64, &amd), (Arch::Arm64, &arm)]);
            let v: serde_json::Value = serde_json::from_slice(&doc.bytes).unwrap();
            assert_eq!(v["schemaVersion"], 2);
            assert_eq!(v["mediaType"], format.index_media_type());
            assert_eq!(manifest::media_type_of(&doc.bytes).as_deref(), Some(format.index_media_type()));
            assert_eq!(doc.digest, Digest::of(&doc.bytes));
            let entries = v["manifests"].as_array().unwrap();
            assert_eq!(entries.len(), 2);
            assert_eq!(entries[1]["mediaType"], format.media_type());
            assert_eq!(entries[1]["digest"], arm.digest.to_string());
            assert_eq!(entries[1]["size"], 8);
            assert_eq!(entries[1]["platform"], json!({ "architecture": "arm64", "os": "linux" }));
            assert_eq!(entries[0]["platform"]["architecture"], "amd64");
        }
    }
}
