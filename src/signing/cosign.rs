//! cosign's signed documents, byte for byte as `cosign verify` and `cosign
//! verify-attestation` (sigstore/cosign 2.x, `pkg/cosign/verify.go`) read them.
//!
//! **An image signature** signs the *simple-signing payload* (containers/image's "atomic
//! container signature", media type `application/vnd.dev.cosign.simplesigning.v1+json`):
//!
//! ```json
//! {"critical":{"identity":{"docker-reference":"registry.example/shell/git"},
//!              "image":{"docker-manifest-digest":"sha256:…"},
//!              "type":"cosign container image signature"},
//!  "optional":null}
//! ```
//!
//! cosign verifies the ECDSA signature (base64 of ASN.1 DER, in the layer annotation
//! `dev.cosignproject.cosign/signature`) over these exact bytes, then checks that
//! `docker-manifest-digest` is the digest it resolved (`SimpleClaimVerifier`); the
//! `docker-reference` is informational for cosign, and names the image by its repository
//! (with `NIXERY_REGISTRY_NAME` in front when set): never the `Host` a request came with, so
//! every replica signs the same bytes.
//!
//! **An attestation** is a DSSE envelope (`application/vnd.dsse.envelope.v1+json`) whose
//! payload (`payloadType` `application/vnd.in-toto+json`) is an in-toto statement v0.1 with
//! the SBOM as predicate, as `cosign attest --type spdxjson` writes it:
//!
//! ```json
//! {"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://spdx.dev/Document",
//!  "subject":[{"name":"registry.example/shell/git","digest":{"sha256":"…"}}],
//!  "predicate":{…the SPDX document…}}
//! ```
//!
//! The signature is over DSSE's pre-authentication encoding, `DSSEv1 <len> <payloadType>
//! <len> <payload>` (lengths in decimal bytes), and sits in `signatures[0].sig` (base64);
//! cosign checks it, that `payloadType` is in-toto's, and that a subject's `sha256` is the
//! image's digest (`IntotoSubjectClaimVerifier`). `verify-attestation --type spdxjson` then
//! keeps the statements whose `predicateType` is SPDX's.
//!
//! JSON here is rendered by serde_json from `json!` values, whose objects are sorted maps:
//! the key order is fixed, and with deterministic signatures so is every byte.

use super::SigningKey;
use crate::digest::Digest;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

/// The simple-signing payload's media type (the signature layer's).
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The DSSE envelope's media type (the attestation layer's).
pub const DSSE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
/// An in-toto statement's DSSE payload type.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The predicate type of an SPDX document (`cosign attest --type spdxjson`).
pub const SPDX_PREDICATE_TYPE: &str = "https://spdx.dev/Document";

/// The simple-signing payload naming `reference` as the image with `digest`.
pub fn simple_signing_payload(reference: &str, digest: &Digest) -> Vec<u8> {
    let payload = json!({
        "critical": {
            "identity": { "docker-reference": reference },
            "image": { "docker-manifest-digest": digest.to_string() },
            "type": "cosign container image signature",
        },
        "optional": null,
    });
    serde_json::to_vec(&payload).expect("JSON serialises")
}

/// The base64 signature of `payload`, for the layer annotation.
pub fn sign_payload(key: &SigningKey, payload: &[u8]) -> String {
    STANDARD.encode(key.sign(payload))
}

/// The in-toto statement that `reference` with `digest` has the SPDX document `sbom`.
pub fn spdx_statement(reference: &str, digest: &Digest, sbom: &[u8]) -> Vec<u8> {
    let predicate: Value = serde_json::from_slice(sbom).expect("the SBOM is JSON this registry wrote");
    let statement = json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": SPDX_PREDICATE_TYPE,
        "subject": [{ "name": reference, "digest": { "sha256": digest.hex() } }],
        "predicate": predicate,
    });
    serde_json::to_vec(&statement).expect("JSON serialises")
}

/// The DSSE envelope of `payload` (of `payload_type`), signed with `key`.
pub fn dsse_envelope(key: &SigningKey, payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let signature = key.sign(&pae(payload_type, payload));
    let envelope = json!({
        "payloadType": payload_type,
        "payload": STANDARD.encode(payload),
        "signatures": [{ "keyid": "", "sig": STANDARD.encode(signature) }],
    });
    serde_json::to_vec(&envelope).expect("JSON serialises")
}

/// DSSE's pre-authentication encoding (DSSE v1.0 "Protocol").
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Verifier;
    use p256::ecdsa::{DerSignature, VerifyingKey};
    use p256::pkcs8::DecodePublicKey;

    fn key() -> SigningKey {
        SigningKey::from_pem(include_str!("testdata/pkcs8.pem"), None).unwrap()
    }

    fn verify(key: &SigningKey, message: &[u8], b64: &str) -> bool {
        let public = VerifyingKey::from_public_key_pem(key.public_pem()).unwrap();
        let der = DerSignature::try_from(STANDARD.decode(b64).unwrap().as_slice()).unwrap();
        public.verify(message, &der).is_ok()
    }

    #[test]
    fn the_simple_signing_payload_is_cosign_s() {
        let digest = Digest::of(b"m");
        let payload = simple_signing_payload("registry.example/shell/git", &digest);
        let expected = format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"registry.example/shell/git"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
        );
        assert_eq!(String::from_utf8(payload.clone()).unwrap(), expected);
        let key = key();
        let sig = sign_payload(&key, &payload);
        assert!(verify(&key, &payload, &sig));
        assert_eq!(sig, sign_payload(&key, &payload), "deterministic");
    }

    #[test]
    fn dsse_signs_the_pre_authentication_encoding() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
        let key = key();
        let digest = Digest::of(b"m");
        let statement = spdx_statement("shell/git", &digest, br#"{"spdxVersion":"SPDX-2.3"}"#);
        let envelope: Value = serde_json::from_slice(&dsse_envelope(&key, IN_TOTO_PAYLOAD_TYPE, &statement)).unwrap();
        assert_eq!(envelope["payloadType"], IN_TOTO_PAYLOAD_TYPE);
        let payload = STANDARD.decode(envelope["payload"].as_str().unwrap()).unwrap();
        assert_eq!(payload, statement);
        let sig = envelope["signatures"][0]["sig"].as_str().unwrap();
        assert!(verify(&key, &pae(IN_TOTO_PAYLOAD_TYPE, &payload), sig));
        assert!(!verify(&key, &payload, sig), "the signature is over the PAE, not the bare payload");
        let statement: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(statement["subject"][0]["digest"]["sha256"], digest.hex());
        assert_eq!(statement["predicate"]["spdxVersion"], "SPDX-2.3");
        assert_eq!(statement["predicateType"], SPDX_PREDICATE_TYPE);
    }
}
