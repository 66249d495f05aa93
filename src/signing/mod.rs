//! Signing what the registry serves, in cosign's formats, with one configured key.
//!
//! - [`key`]: the key (`NIXERY_SIGNING_KEY`: cosign's encrypted key or a PKCS#8 PEM),
//!   ECDSA P-256, deterministic signatures (RFC 6979).
//! - [`cosign`]: what is signed and how cosign reads it: the simple-signing payload of an
//!   image signature, and the DSSE envelope of an in-toto statement (an attestation).
//!
//! The manifests that carry them to clients (the `sha256-<hex>.sig` and `.att` tags, and
//! referrers) are [`crate::artifact`]'s.

pub mod cosign;
pub mod key;

pub use key::{KeyError, SigningKey};
