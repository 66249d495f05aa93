//! The reserved tags: `sha256-<hex>` (the distribution spec's referrers tag schema),
//! `sha256-<hex>.sig` and `sha256-<hex>.att` (cosign's). They name artifacts of the
//! manifest `sha256:<hex>` on every package source: never a branch, never a revision, so
//! they are told apart before a tag selects anything.

use super::ArtifactKind;
use crate::digest::Digest;

/// A tag that names artifacts of a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReservedTag {
    /// `sha256-<hex>`: the index of the manifest's referrers.
    Referrers(Digest),
    /// `sha256-<hex>.sig` / `.att`: cosign's signature or attestation.
    Artifact(Digest, ArtifactKind),
}

impl ReservedTag {
    /// The reserved tag `tag` is, if it is one: `sha256-` and 64 lower-case hex digits,
    /// alone or with `.sig` or `.att`.
    pub fn parse(tag: &str) -> Option<Self> {
        let rest = tag.strip_prefix("sha256-")?;
        let (hex, suffix) = rest.split_at_checked(64)?;
        let digest: Digest = format!("sha256:{hex}").parse().ok()?;
        match suffix {
            "" => Some(ReservedTag::Referrers(digest)),
            ".sig" => Some(ReservedTag::Artifact(digest, ArtifactKind::Signature)),
            ".att" => Some(ReservedTag::Artifact(digest, ArtifactKind::Attestation)),
            _ => None,
        }
    }

    pub fn digest(&self) -> &Digest {
        match self {
            ReservedTag::Referrers(d) | ReservedTag::Artifact(d, _) => d,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_tags_are_the_two_schemas_and_nothing_else() {
        let hex = "ab".repeat(32);
        let digest: Digest = format!("sha256:{hex}").parse().unwrap();
        assert_eq!(ReservedTag::parse(&format!("sha256-{hex}")), Some(ReservedTag::Referrers(digest.clone())));
        assert_eq!(
            ReservedTag::parse(&format!("sha256-{hex}.sig")),
            Some(ReservedTag::Artifact(digest.clone(), ArtifactKind::Signature))
        );
        assert_eq!(
            ReservedTag::parse(&format!("sha256-{hex}.att")),
            Some(ReservedTag::Artifact(digest, ArtifactKind::Attestation))
        );
        for not in [
            "latest".to_owned(),
            format!("sha256-{}", &hex[..63]),
            format!("sha256-{hex}0"),
            format!("sha256-{hex}.sbom"),
            format!("sha512-{hex}"),
            format!("sha256-{}", hex.to_uppercase()),
            format!("sha256-{}", "g".repeat(64)),
        ] {
            assert_eq!(ReservedTag::parse(&not), None, "{not}");
        }
    }
}
