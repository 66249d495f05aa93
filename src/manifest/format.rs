//! Which manifest format a client gets: Docker schema 2 or OCI, from its `Accept` values,
//! the layers' compression and, for zstd, whether the client can read them at all.

use super::accept::{Match, MediaRange};
use crate::compression::Compression;
use oci_spec::image::{MediaType, ToDockerV2S2};

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

/// Why no manifest is served to a client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unservable {
    /// The client refused (`q=0`) every format a manifest can be served in.
    #[error("the Accept header refuses both manifest formats this registry serves: {DOCKER_MANIFEST}, {OCI_MANIFEST}")]
    Refused,
    #[error(transparent)]
    Unreadable(#[from] Unreadable),
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
    /// Chooses from the client's `Accept` values (all header lines, already split at
    /// commas); `None` when the client refuses both formats.
    ///
    /// RFC 9110 §12.5.1: each format takes the q-value of the most specific media range that
    /// matches it (the type itself, then `application/*`, then `*/*`); a format no range
    /// matches is not acceptable, and `q=0` refuses it (§12.4.2). Among acceptable formats:
    /// 1. the higher q-value wins;
    /// 2. on equal q, a format the client names outranks one it reaches by a wildcard
    ///    (`OCI, */*` prefers OCI, as a client listing only OCI types got OCI before);
    /// 3. then Docker schema 2, what clients that accept both have always been served.
    ///
    /// When neither is acceptable but neither is refused (no `Accept`, or only other types
    /// such as manifest lists), the header is disregarded (§12.5.1 allows that) and Docker
    /// is served; when one is refused, the other. Values that are no media range (no `/`,
    /// a malformed or out-of-range `q`, `*/json`) are ignored, not fatal.
    pub fn negotiate<'a>(accepted: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let (matched, _) = Self::matches(accepted);
        let rank = |m: Option<Match>| m.filter(|m| m.q > 0).map(|m| (m.q, m.specificity));
        let refused = |m: Option<Match>| m.is_some_and(|m| m.q == 0);
        let [docker, oci] = matched;
        match (rank(docker), rank(oci)) {
            (Some(d), Some(o)) if o > d => Some(ManifestFormat::Oci),
            (Some(_), _) => Some(ManifestFormat::Docker),
            (None, Some(_)) => Some(ManifestFormat::Oci),
            (None, None) if !refused(docker) => Some(ManifestFormat::Docker),
            (None, None) if !refused(oci) => Some(ManifestFormat::Oci),
            (None, None) => None,
        }
    }

    /// [`Self::negotiate`] for layers compressed with `compression`. gzip: as negotiated,
    /// [`Unservable::Refused`] when both formats are refused. zstd: OCI if the client accepts
    /// it (q > 0, by name or wildcard) or names no media range at all, and is not a Docker
    /// engine before 23 (by its `User-Agent`); any other client could not read the layers,
    /// whatever it were sent.
    pub fn negotiate_for<'a>(
        accepted: impl IntoIterator<Item = &'a str>,
        user_agent: Option<&str>,
        compression: Compression,
    ) -> Result<Self, Unservable> {
        if compression.docker_media_type().is_some() {
            return Self::negotiate(accepted).ok_or(Unservable::Refused);
        }
        let ([_, oci], listed) = Self::matches(accepted);
        if let Some(major) = user_agent.and_then(docker_major).filter(|&major| major < DOCKER_WITH_ZSTD) {
            return Err(Unreadable::DockerTooOld { compression, major }.into());
        }
        match oci {
            Some(m) if m.q > 0 => Ok(ManifestFormat::Oci),
            None if !listed => Ok(ManifestFormat::Oci),
            _ => Err(Unreadable::NoOciManifests(compression).into()),
        }
    }

    /// The best match of each format ([Docker, OCI]) among `accepted`, and whether any value
    /// was a media range at all.
    fn matches<'a>(accepted: impl IntoIterator<Item = &'a str>) -> ([Option<Match>; 2], bool) {
        let formats = [ManifestFormat::Docker, ManifestFormat::Oci];
        let mut matched: [Option<Match>; 2] = [None, None];
        let mut listed = false;
        for range in accepted.into_iter().filter_map(MediaRange::parse) {
            listed = true;
            for (format, best) in formats.iter().zip(&mut matched) {
                let Some(specificity) = range.specificity_for(format.media_type()) else { continue };
                let this = Match { specificity, q: range.q };
                // The most specific range decides; equally specific ones, the highest q.
                if best.is_none_or(|b| (this.specificity, this.q) > (b.specificity, b.q)) {
                    *best = Some(this);
                }
            }
        }
        (matched, listed)
    }

    /// The formats that can describe layers compressed with `compression` (Docker schema 2
    /// has no zstd layer type).
    pub fn for_compression(compression: Compression) -> &'static [ManifestFormat] {
        match compression.docker_media_type() {
            Some(_) => &[ManifestFormat::Docker, ManifestFormat::Oci],
            None => &[ManifestFormat::Oci],
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            ManifestFormat::Docker => DOCKER_MANIFEST,
            ManifestFormat::Oci => OCI_MANIFEST,
        }
    }

    pub(super) fn typed(self, oci: MediaType) -> MediaType {
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

#[cfg(test)]
mod tests {
    use super::super::accept::qvalue;
    use super::*;

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
        use ManifestFormat::{Docker, Oci};
        let skopeo = [OCI_MANIFEST, DOCKER_MANIFEST, "application/vnd.docker.distribution.manifest.v1+prettyjws"];
        assert_eq!(ManifestFormat::negotiate(skopeo), Some(Docker));
        let containerd =
            [DOCKER_MANIFEST, "application/vnd.docker.distribution.manifest.list.v2+json", OCI_MANIFEST, "*/*"];
        assert_eq!(ManifestFormat::negotiate(containerd), Some(Docker));
        assert_eq!(ManifestFormat::negotiate([OCI_MANIFEST, "application/vnd.oci.image.index.v1+json"]), Some(Oci));
        assert_eq!(ManifestFormat::negotiate([format!("{OCI_MANIFEST}; q=0.5").as_str()]), Some(Oci));
        assert_eq!(ManifestFormat::negotiate([]), Some(Docker));
        assert_eq!(ManifestFormat::negotiate(["*/*"]), Some(Docker));
        assert_eq!(ManifestFormat::negotiate(["application/*"]), Some(Docker));
        assert_eq!(
            ManifestFormat::negotiate(["application/vnd.docker.distribution.manifest.list.v2+json"]),
            Some(Docker)
        );
    }

    #[test]
    fn q_values_order_and_zero_refuses() {
        use ManifestFormat::{Docker, Oci};
        let negotiate = |values: &[&str]| ManifestFormat::negotiate(values.iter().copied());
        let (d, o) = (DOCKER_MANIFEST, OCI_MANIFEST);
        let q = |t: &str, q: &str| format!("{t};q={q}");
        // q=0 is never chosen.
        assert_eq!(negotiate(&[&q(d, "0"), o]), Some(Oci));
        assert_eq!(negotiate(&[&q(d, "0")]), Some(Oci), "Docker refused, OCI not: OCI");
        assert_eq!(negotiate(&[&q(d, "0.000"), "*/*"]), Some(Oci), "the exact type outranks */*");
        assert_eq!(negotiate(&["*/*;q=0"]), None);
        assert_eq!(negotiate(&[&q(d, "0"), &q(o, "0")]), None);
        assert_eq!(negotiate(&[&q(o, "0"), "*/*"]), Some(Docker));
        // Higher q wins; ties go to the named type, then to Docker.
        assert_eq!(negotiate(&[&q(d, "0.5"), o]), Some(Oci));
        assert_eq!(negotiate(&[d, &q(o, "0.9")]), Some(Docker));
        assert_eq!(negotiate(&[&q(d, "0.8"), &q(o, "0.8")]), Some(Docker));
        assert_eq!(negotiate(&[o, "*/*"]), Some(Oci));
        assert_eq!(negotiate(&[&q(o, "0.5"), "*/*"]), Some(Docker), "*/* gives Docker q=1");
        assert_eq!(negotiate(&[o, "application/*;q=0.2"]), Some(Oci));
        // Case-insensitive types and parameter names, spaces around `;` and `=`.
        assert_eq!(
            negotiate(&[&d.to_uppercase().replace("V2", "v2"), "application/VND.OCI.IMAGE.MANIFEST.V1+JSON ; Q = 1"]),
            Some(Docker)
        );
        assert_eq!(negotiate(&[&format!("{d} ; Q=0"), o]), Some(Oci));
    }

    #[test]
    fn malformed_accept_values_are_ignored() {
        use ManifestFormat::{Docker, Oci};
        let negotiate = |values: &[&str]| ManifestFormat::negotiate(values.iter().copied());
        for bad in ["garbage", "", ";q=0", "*/json", "/", "application/", "a b/c"] {
            assert_eq!(MediaRange::parse(bad), None, "{bad:?}");
        }
        for bad_q in ["2", "1.5", "0.1234", "-1", "abc", "", ".5", "1.001"] {
            assert_eq!(qvalue(bad_q), None, "{bad_q:?}");
            // A refusal with a broken q is no refusal: the element is dropped.
            assert_eq!(negotiate(&[&format!("{DOCKER_MANIFEST};q={bad_q}"), OCI_MANIFEST]), Some(Oci), "{bad_q:?}");
        }
        assert_eq!(qvalue("0.5"), Some(500));
        assert_eq!(qvalue("1.000"), Some(1000));
        assert_eq!(qvalue("0."), Some(0));
        assert_eq!(negotiate(&["garbage", "*/json;q=0", "*/*;q=oops"]), Some(Docker));
        assert_eq!(negotiate(&[&format!("{DOCKER_MANIFEST};q")]), Some(Docker), "no refusal");
    }

    #[test]
    fn gzip_layers_follow_the_negotiation() {
        let gzip = |accepted: &[&str]| ManifestFormat::negotiate_for(accepted.iter().copied(), None, Compression::Gzip);
        assert_eq!(gzip(&SKOPEO), Ok(ManifestFormat::Docker));
        assert_eq!(gzip(&[OCI_MANIFEST, "application/vnd.oci.image.index.v1+json"]), Ok(ManifestFormat::Oci));
        assert_eq!(gzip(&[format!("{OCI_MANIFEST}; q=0.5").as_str()]), Ok(ManifestFormat::Oci));
        assert_eq!(gzip(&[]), Ok(ManifestFormat::Docker));
        assert_eq!(gzip(&["*/*"]), Ok(ManifestFormat::Docker));
        assert_eq!(gzip(&[DOCKER_MANIFEST]), Ok(ManifestFormat::Docker));
        let docker = ManifestFormat::negotiate_for(DOCKER_20, Some(DOCKER_20_AGENT), Compression::Gzip);
        assert_eq!(docker, Ok(ManifestFormat::Docker), "old Docker reads gzip layers");
    }

    #[test]
    fn zstd_layers_get_oci_manifests_or_a_reason() {
        let zstd = |accepted: &[&str]| ManifestFormat::negotiate_for(accepted.iter().copied(), None, Compression::Zstd);
        // containerd's one line (Docker, lists, OCI, */*), skopeo's and podman's lines.
        let containerd = [DOCKER_MANIFEST, "application/vnd.docker.distribution.manifest.list.v2+json", OCI_MANIFEST];
        assert_eq!(zstd(&containerd), Ok(ManifestFormat::Oci));
        assert_eq!(zstd(&SKOPEO), Ok(ManifestFormat::Oci));
        assert_eq!(zstd(&[OCI_MANIFEST]), Ok(ManifestFormat::Oci));
        // Anything, or nothing said: anything is acceptable.
        assert_eq!(zstd(&["*/*"]), Ok(ManifestFormat::Oci));
        assert_eq!(zstd(&[]), Ok(ManifestFormat::Oci));
        // q=0 on OCI refuses it; a gzip client refusing both gets Refused.
        let refused = format!("{OCI_MANIFEST};q=0");
        let zstd_refused = ManifestFormat::negotiate_for([refused.as_str(), "*/*"], None, Compression::Zstd);
        assert_eq!(zstd_refused, Err(Unreadable::NoOciManifests(Compression::Zstd).into()));
        assert_eq!(ManifestFormat::negotiate_for(["*/*;q=0"], None, Compression::Gzip), Err(Unservable::Refused));
        // A client that names what it reads, and not OCI, is told why.
        let err = zstd(&[DOCKER_MANIFEST, "application/vnd.docker.distribution.manifest.list.v2+json"]).unwrap_err();
        assert_eq!(err, Unreadable::NoOciManifests(Compression::Zstd).into());
        assert!(err.to_string().starts_with("this registry's layers are zstd-compressed"), "{err}");
    }

    #[test]
    fn docker_before_23_is_told_it_cannot_read_zstd_layers() {
        let zstd = |agent: &str| ManifestFormat::negotiate_for(DOCKER_20, Some(agent), Compression::Zstd);
        let err = zstd(DOCKER_20_AGENT).unwrap_err();
        assert_eq!(err, Unreadable::DockerTooOld { compression: Compression::Zstd, major: 20 }.into());
        assert!(err.to_string().contains("this is Docker 20: pull with Docker 23 or later"), "{err}");
        assert_eq!(zstd("docker/23.0.0 go/go1.19.5 git-commit/d7573ab"), Ok(ManifestFormat::Oci));
        assert_eq!(zstd("docker/28.2.2 go/go1.24"), Ok(ManifestFormat::Oci));
        // Other clients are judged by what they accept, whatever their version numbers.
        assert_eq!(zstd("containerd/1.6.20"), Ok(ManifestFormat::Oci));
        assert_eq!(zstd("containers/5.23.1 (github.com/containers/image)"), Ok(ManifestFormat::Oci));
        assert_eq!(zstd("docker/unknown"), Ok(ManifestFormat::Oci));
        assert_eq!(docker_major("docker/9.1"), Some(9));
        assert_eq!(docker_major("Docker-Client/20.10"), None);
        assert_eq!(
            zstd("docker/20.10.24"),
            Err(Unreadable::DockerTooOld { compression: Compression::Zstd, major: 20 }.into())
        );
    }
}
