//! V4 signed URLs against known answers.

use super::*;

// The key is a throwaway RSA key made for these tests (testdata/service-account.json). The
// expected values were derived by hand: the canonical request written out below, its SHA-256
// from `sha256sum`, and the signature from `openssl dgst -sha256 -sign key.pem` over the
// string to sign; the whole URLs equal what the official Python SDK produces
// (google.cloud.storage._signing.generate_signed_url_v4 with the same key, resource,
// expiration=300 and _request_timestamp="20260102T030405Z").

/// 2026-01-02T03:04:05Z.
const SIGNING_TIME: u64 = 1_767_323_045;
const OBJECT: &str = "layers/sha256:abababababababababababababababababababababababababababababababab";
const EMAIL: &str = "nixery-test@nixery-test.iam.gserviceaccount.com";
const QUERY: &str = "X-Goog-Algorithm=GOOG4-RSA-SHA256\
&X-Goog-Credential=nixery-test%40nixery-test.iam.gserviceaccount.com%2F20260102%2Fauto%2Fstorage%2Fgoog4_request\
&X-Goog-Date=20260102T030405Z&X-Goog-Expires=300&X-Goog-SignedHeaders=host";
const SIGNATURE: &str = "9371c686a2ce18b800082ddba0e44141af003a6a5d4165228632ac0eff9b771e1ecf40be9060556d33fb62bf14e0831400\
9072c3ca8800c007e71dde2f1ee524e872c1072873548f0624083eded8dfda75227c2bb5f7eb7c5560a6e6220d49627b474ebfefc8fd71c764b2ec\
13c5d5a3126c1078e93acd00505ef4ba945642d31a1c1e8fcfcac0af0fd954023e56da6b492ce4282f2c417b7e8dfbfba4fc1fb4cf2c2a62c6e2f3\
35801a105a22a710e811ff4e2f4058711d0559d9ebc04b6d30ad2b9b6f3b0e5ee8ce432cef155ab39a432877cf885464e67f063c1865d332882d292\
63fae9908182042c36c20a90db1fef9d0796e2a0aa01eca0d0afbb1e7ff";
/// The same object signed for an emulator at 127.0.0.1:4443 (the host is signed).
const EMULATOR_SIGNATURE: &str = "108c0e0a56adc2286f42c4ade17f6cd94424e7d34c4423efd557c38f89426dded0236b90ffa530cd54cd\
bb284eb005f3d2b702b5f4345e73fee3b538d65e27609e20aeb48f3884c24e9f7db79688624a30e013cbb1cb3225ca8c4f84f32691448bcdcf4ccd9\
98ba1733c977a45b7f4c7eafeb5107e039098f2581df489fd6b7aae9d0ea1554447793ffbc3bd1a39890b4a73e6e37172b1c53571d4734c4eeb3bc1\
fa10fdbf01e481ea66a67fc79431dfb16a3add6d962e8a5b02fcdf015efc3edb13696ff41a0db7e633645dabcdc2c8c0c668a61fa7df7dbd5c37579\
7930cd2fbdf44f209134ac5f40bf523a61e73002ef5cd9c4b4ec0567d8696761cc71921";

fn request(base: &str) -> crate::storage::gcs::signing::UrlRequest<'_> {
    crate::storage::gcs::signing::UrlRequest {
        base,
        bucket: BUCKET,
        object: OBJECT,
        email: EMAIL,
        unix_time: SIGNING_TIME,
        expires: 300,
    }
}

#[test]
fn v4_canonical_request_and_string_to_sign() {
    let p = crate::storage::gcs::signing::prepare(&request("https://storage.googleapis.com"));
    let path = "/nixery-test/layers/sha256%3Aabababababababababababababababababababababababababababababababab";
    assert_eq!(
        p.canonical_request,
        format!("GET\n{path}\n{QUERY}\nhost:storage.googleapis.com\n\nhost\nUNSIGNED-PAYLOAD")
    );
    assert_eq!(
        p.string_to_sign,
        "GOOG4-RSA-SHA256\n20260102T030405Z\n20260102/auto/storage/goog4_request\n\
         0ef10ebaa620a5109e22ee415baf4133a9d33c633a56d738bd64fb7a7d1ada61"
    );
    assert_eq!(p.unsigned_url, format!("https://storage.googleapis.com{path}?{QUERY}"));
    let emulator = crate::storage::gcs::signing::prepare(&request("http://127.0.0.1:4443"));
    assert!(emulator.canonical_request.contains("\nhost:127.0.0.1:4443\n"));
    assert!(emulator.string_to_sign.ends_with("c74b3bb9cb6739387f3fa2af98235954d2458deeed458aa300ad23060bd31c3d"));
}

async fn signed(base: &str) -> String {
    let mut config = GcsConfig::new(BUCKET);
    config.credentials_file = Some(KEY_FILE.into());
    config.emulator_host = Some(base.to_owned());
    let gcs = Gcs::build(config, Some(base.to_owned())).await.unwrap();
    gcs.inner.url(OBJECT, UNIX_EPOCH + Duration::from_secs(SIGNING_TIME)).await.unwrap()
}

#[tokio::test]
async fn v4_signed_urls_match_known_answers() {
    let path = "/nixery-test/layers/sha256%3Aabababababababababababababababababababababababababababababababab";
    assert_eq!(
        signed("https://storage.googleapis.com").await,
        format!("https://storage.googleapis.com{path}?{QUERY}&X-Goog-Signature={SIGNATURE}")
    );
    assert_eq!(
        signed("http://127.0.0.1:4443").await,
        format!("http://127.0.0.1:4443{path}?{QUERY}&X-Goog-Signature={EMULATOR_SIGNATURE}")
    );
}
