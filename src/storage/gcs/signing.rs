//! Google's V4 signing process for time-limited GET URLs of Cloud Storage objects
//! (<https://cloud.google.com/storage/docs/access-control/signing-urls-manually>):
//! a canonical request, a string to sign (`GOOG4-RSA-SHA256`, the request time, the
//! credential scope `DATE/auto/storage/goog4_request` and the canonical request's SHA-256),
//! signed with the service account's RSA key (RSA-SHA256, PKCS#1 v1.5), the signature in
//! hex as `X-Goog-Signature`. Pure functions of their inputs, so they are tested against
//! known answers; the RSA signature itself comes from the credentials crate's signer.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

/// Everything but RFC 3986's unreserved characters is percent-encoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
/// The same, keeping the path's slashes.
const PATH: &AsciiSet = &COMPONENT.remove(b'/');

/// Percent-encodes a path segment or query value (slashes too).
pub(crate) fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// Percent-encodes an object name for a URL path (slashes kept).
pub(crate) fn encode_path(s: &str) -> String {
    utf8_percent_encode(s, PATH).to_string()
}

/// What a signed GET URL is made of.
pub(crate) struct UrlRequest<'a> {
    /// Scheme and host (with port) the client will fetch from, e.g.
    /// `https://storage.googleapis.com`.
    pub base: &'a str,
    pub bucket: &'a str,
    pub object: &'a str,
    /// The service account's e-mail address.
    pub email: &'a str,
    /// Seconds since the Unix epoch at signing time.
    pub unix_time: u64,
    /// Seconds the URL stays valid (at most 7 days).
    pub expires: u64,
}

/// The intermediate values of the signing process.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Prepared {
    pub canonical_request: String,
    pub string_to_sign: String,
    /// The URL without its `X-Goog-Signature` parameter.
    pub unsigned_url: String,
}

/// Builds the canonical request and the string to sign.
pub(crate) fn prepare(req: &UrlRequest<'_>) -> Prepared {
    let host = req.base.split_once("://").map(|(_, h)| h).unwrap_or(req.base).trim_end_matches('/');
    let (date, datetime) = utc_stamp(req.unix_time);
    let scope = format!("{date}/auto/storage/goog4_request");
    let credential = format!("{}/{scope}", req.email);
    let path = format!("/{}/{}", encode_component(req.bucket), encode_path(req.object));
    let expires = req.expires.to_string();
    // Already in the byte order of their names, as the canonical query string requires.
    let params = [
        ("X-Goog-Algorithm", "GOOG4-RSA-SHA256"),
        ("X-Goog-Credential", credential.as_str()),
        ("X-Goog-Date", datetime.as_str()),
        ("X-Goog-Expires", expires.as_str()),
        ("X-Goog-SignedHeaders", "host"),
    ];
    let query: Vec<String> =
        params.iter().map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v))).collect();
    let query = query.join("&");
    let canonical_request = format!("GET\n{path}\n{query}\nhost:{}\n\nhost\nUNSIGNED-PAYLOAD", host.to_lowercase());
    let hashed = hex::encode(Sha256::digest(canonical_request.as_bytes()));
    let string_to_sign = format!("GOOG4-RSA-SHA256\n{datetime}\n{scope}\n{hashed}");
    let unsigned_url = format!("{}{path}?{query}", req.base.trim_end_matches('/'));
    Prepared { canonical_request, string_to_sign, unsigned_url }
}

/// The final URL, given the RSA-SHA256 signature of the string to sign.
pub(crate) fn finish(prepared: &Prepared, signature: &[u8]) -> String {
    format!("{}&X-Goog-Signature={}", prepared.unsigned_url, hex::encode(signature))
}

/// `(YYYYMMDD, YYYYMMDDTHHMMSSZ)` in UTC.
fn utc_stamp(unix: u64) -> (String, String) {
    let (y, m, d) = civil_from_days((unix / 86_400) as i64);
    let s = unix % 86_400;
    let date = format!("{y:04}{m:02}{d:02}");
    let datetime = format!("{date}T{:02}{:02}{:02}Z", s / 3600, s / 60 % 60, s % 60);
    (date, datetime)
}

/// The proleptic Gregorian date of a day number counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(0), ("19700101".into(), "19700101T000000Z".into()));
        // 2000-02-29 (a leap day of a century divisible by 400) 12:34:56.
        assert_eq!(utc_stamp(951_827_696), ("20000229".into(), "20000229T123456Z".into()));
        assert_eq!(utc_stamp(4_102_444_799), ("20991231".into(), "20991231T235959Z".into()));
        assert_eq!(utc_stamp(4_107_542_400), ("21000301".into(), "21000301T000000Z".into()));
    }

    #[test]
    fn encoding_keeps_only_unreserved_characters() {
        assert_eq!(encode_component("layers/sha256:ab~-._ +"), "layers%2Fsha256%3Aab~-._%20%2B");
        assert_eq!(encode_path("layers/sha256:ab"), "layers/sha256%3Aab");
        assert_eq!(encode_component("a@b.iam/20260102"), "a%40b.iam%2F20260102");
    }
}
