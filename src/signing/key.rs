//! The signing key: read from the PEM file `NIXERY_SIGNING_KEY` names, in the two forms an
//! operator has.
//!
//! **cosign's own** (`cosign generate-key-pair`), an encrypted PKCS#8 key:
//!
//! ```text
//! -----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----      (cosign < 2.0: ENCRYPTED COSIGN PRIVATE KEY)
//! <base64 of JSON:>
//! {"kdf":{"name":"scrypt","params":{"N":65536,"r":8,"p":1},"salt":"<base64, 32 bytes>"},
//!  "cipher":{"name":"nacl/secretbox","nonce":"<base64, 24 bytes>"},
//!  "ciphertext":"<base64>"}
//! -----END ENCRYPTED SIGSTORE PRIVATE KEY-----
//! ```
//!
//! That JSON is go-securesystemslib's `encrypted` format, which cosign's `LoadPrivateKey`
//! decrypts: the key is `scrypt(password, salt, N, r, p)` with 32 bytes of output, the
//! plaintext is NaCl's `secretbox` (XSalsa20-Poly1305) of the ciphertext under that key and
//! the nonce, and it is the DER of a PKCS#8 private key (`x509.MarshalPKCS8PrivateKey`). A
//! wrong password fails the secretbox's authentication: it can be told from a damaged file
//! only by the file's shape, and the message says which.
//!
//! **A plain PKCS#8 key** (`-----BEGIN PRIVATE KEY-----`, what `openssl genpkey -algorithm
//! EC -pkeyopt ec_paramgen_curve:P-256` writes), unencrypted, for keys kept in a secret
//! store that mounts them as files.
//!
//! Either way the key must be ECDSA on P-256, which is what cosign generates and what
//! `cosign verify --key` expects of an ECDSA public key with SHA-256. Signing is RFC 6979
//! (deterministic: the nonce is derived from the key and the message), so every replica with
//! the same key signs the same payload with the same bytes, and signature manifests have the
//! same digest everywhere.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use crypto_secretbox::XSalsa20Poly1305;
use crypto_secretbox::aead::{Aead, KeyInit};
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{DerSignature, SigningKey as EcdsaKey};
use p256::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use serde::Deserialize;
use std::fmt;

/// PEM labels of cosign's encrypted keys (current, and before cosign 2.0).
const ENCRYPTED_LABELS: [&str; 2] = ["ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY"];
/// The PEM label of an unencrypted PKCS#8 key.
const PKCS8_LABEL: &str = "PRIVATE KEY";

/// Why the signing key could not be loaded. Messages name no path and no password.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM file: {0}")]
    Pem(String),
    #[error(
        "a PEM key of type '{0}': expected cosign's ENCRYPTED SIGSTORE PRIVATE KEY (cosign generate-key-pair) or a PKCS#8 PRIVATE KEY"
    )]
    Label(String),
    #[error(
        "the key is encrypted (cosign's format) but no password was given (NIXERY_SIGNING_KEY_PASSWORD or NIXERY_SIGNING_KEY_PASSWORD_FILE)"
    )]
    NoPassword,
    #[error("cosign's key envelope is malformed: {0}")]
    Envelope(String),
    #[error("the password does not open the key (or the key file is damaged)")]
    WrongPassword,
    #[error("the key is not an ECDSA P-256 private key in PKCS#8: {0}")]
    NotP256(String),
}

/// An ECDSA P-256 key that signs deterministically (RFC 6979).
#[derive(Clone)]
pub struct SigningKey {
    key: EcdsaKey,
    /// The public key as PEM (`-----BEGIN PUBLIC KEY-----`), what `cosign verify --key` and
    /// policy engines are given.
    public_pem: String,
}

/// Never prints the key.
impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("public_pem", &self.public_pem).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// The key in `pem` (either form, see the module docs); `password` opens cosign's.
    pub fn from_pem(pem: &str, password: Option<&[u8]>) -> Result<Self, KeyError> {
        let (label, body) = pem_rfc7468::decode_vec(pem.trim().as_bytes()).map_err(|e| KeyError::Pem(e.to_string()))?;
        let pkcs8 = if ENCRYPTED_LABELS.contains(&label) {
            decrypt(&body, password.ok_or(KeyError::NoPassword)?)?
        } else if label == PKCS8_LABEL {
            body
        } else {
            return Err(KeyError::Label(label.to_owned()));
        };
        let key = EcdsaKey::from_pkcs8_der(&pkcs8).map_err(|e| KeyError::NotP256(e.to_string()))?;
        let public_pem =
            key.verifying_key().to_public_key_pem(LineEnding::LF).map_err(|e| KeyError::NotP256(e.to_string()))?;
        Ok(SigningKey { key, public_pem })
    }

    /// The ASN.1 DER signature of `message` (ECDSA P-256 over its SHA-256), as cosign
    /// verifies it.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let signature: DerSignature = self.key.sign(message);
        signature.as_bytes().to_vec()
    }

    /// The public key, PEM.
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }
}

/// go-securesystemslib's encrypted envelope (see the module docs).
#[derive(Deserialize)]
struct Envelope {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(Deserialize)]
#[allow(non_snake_case)]
struct ScryptParams {
    N: u64,
    r: u32,
    p: u32,
}

#[derive(Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

/// The PKCS#8 DER inside cosign's envelope `body`.
fn decrypt(body: &[u8], password: &[u8]) -> Result<Vec<u8>, KeyError> {
    let bad = |why: &str| KeyError::Envelope(why.to_owned());
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| KeyError::Envelope(e.to_string()))?;
    if envelope.kdf.name != "scrypt" {
        return Err(KeyError::Envelope(format!("key derivation '{}', expected scrypt", envelope.kdf.name)));
    }
    if envelope.cipher.name != "nacl/secretbox" {
        return Err(KeyError::Envelope(format!("cipher '{}', expected nacl/secretbox", envelope.cipher.name)));
    }
    let ScryptParams { N: n, r, p } = envelope.kdf.params;
    if !n.is_power_of_two() || n < 2 {
        return Err(bad("scrypt's N is not a power of two"));
    }
    let params = scrypt::Params::new(n.trailing_zeros() as u8, r, p).map_err(|e| KeyError::Envelope(e.to_string()))?;
    let b64 = |field: &str, text: &str| {
        STANDARD.decode(text).map_err(|e| KeyError::Envelope(format!("{field} is not base64: {e}")))
    };
    let salt = b64("salt", &envelope.kdf.salt)?;
    let nonce = b64("nonce", &envelope.cipher.nonce)?;
    let ciphertext = b64("ciphertext", &envelope.ciphertext)?;
    let nonce: [u8; 24] = nonce.try_into().map_err(|_| bad("the nonce is not 24 bytes"))?;
    let mut key = [0u8; 32];
    scrypt::scrypt(password, &salt, &params, &mut key).map_err(|e| KeyError::Envelope(e.to_string()))?;
    let cipher = XSalsa20Poly1305::new(&key.into());
    cipher.decrypt(&nonce.into(), ciphertext.as_slice()).map_err(|_| KeyError::WrongPassword)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::VerifyingKey;
    use p256::ecdsa::signature::Verifier;
    use p256::pkcs8::DecodePublicKey;

    // Written by `COSIGN_PASSWORD=pw cosign generate-key-pair` (cosign 2.5) and
    // `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256` / `-algorithm ed25519`.
    const COSIGN_KEY: &str = include_str!("testdata/cosign.key");
    const COSIGN_PUB: &str = include_str!("testdata/cosign.pub");
    const PKCS8: &str = include_str!("testdata/pkcs8.pem");
    const ED25519: &str = include_str!("testdata/ed25519.pem");

    #[test]
    fn opens_cosign_s_key_with_its_password_and_derives_cosign_s_public_key() {
        let key = SigningKey::from_pem(COSIGN_KEY, Some(b"pw")).unwrap();
        assert_eq!(key.public_pem().trim(), COSIGN_PUB.trim(), "the public key cosign wrote beside it");
        let signature = key.sign(b"payload");
        let public = VerifyingKey::from_public_key_pem(COSIGN_PUB).unwrap();
        let der = p256::ecdsa::DerSignature::try_from(signature.as_slice()).unwrap();
        public.verify(b"payload", &der).unwrap();
        assert!(public.verify(b"other", &der).is_err());
        assert!(!format!("{key:?}").contains("key:"), "Debug shows no secret");
    }

    #[test]
    fn signatures_are_deterministic() {
        let key = SigningKey::from_pem(PKCS8, None).unwrap();
        assert_eq!(key.sign(b"a"), key.sign(b"a"), "RFC 6979: the same bytes every time");
        assert_ne!(key.sign(b"a"), key.sign(b"b"));
        // The same key loaded twice (another replica) signs alike too.
        assert_eq!(SigningKey::from_pem(PKCS8, None).unwrap().sign(b"a"), key.sign(b"a"));
    }

    #[test]
    fn wrong_or_missing_passwords_and_other_keys_are_refused_clearly() {
        assert!(matches!(SigningKey::from_pem(COSIGN_KEY, Some(b"nope")), Err(KeyError::WrongPassword)));
        assert!(matches!(SigningKey::from_pem(COSIGN_KEY, None), Err(KeyError::NoPassword)));
        assert!(matches!(SigningKey::from_pem(ED25519, None), Err(KeyError::NotP256(_))));
        assert!(matches!(SigningKey::from_pem(COSIGN_PUB, None), Err(KeyError::Label(l)) if l == "PUBLIC KEY"));
        assert!(matches!(SigningKey::from_pem("not pem", None), Err(KeyError::Pem(_))));
        let damaged = COSIGN_KEY.replacen("eyJrZGYiOnsibmFtZSI6InNjcnlwdCIs", "eyJrZGYiOnsibmFtZSI6ImFyZ29uMiIs", 1);
        let err = SigningKey::from_pem(&damaged, Some(b"pw")).unwrap_err();
        assert!(matches!(&err, KeyError::Envelope(m) if m.contains("argon2")), "{err}");
    }
}
