//! Multipart uploads that were never completed nor aborted: S3 keeps their parts (and bills
//! them) until someone aborts them, and `object_store` can abort one but not list them. So
//! the listing is one request of our own, `ListMultipartUploads`, signed with SigV4 by
//! `object_store`'s own signer (`AwsAuthorizer`) and the credentials the store already uses:
//!
//! ```text
//! GET /<bucket>?uploads&prefix=staging%2F[&key-marker=…&upload-id-marker=…]
//!
//! <ListMultipartUploadsResult>
//!   <IsTruncated>true</IsTruncated>
//!   <NextKeyMarker>staging/…</NextKeyMarker>
//!   <NextUploadIdMarker>…</NextUploadIdMarker>
//!   <Upload>
//!     <Key>staging/018f3c2a9b10-9f…</Key>
//!     <UploadId>VXBsb2FkIElE…</UploadId>
//!     <Initiated>2026-12-07T06:47:38.000Z</Initiated>
//!   </Upload>
//! </ListMultipartUploadsResult>
//! ```
//!
//! (the answer of AWS and of moto, which dates every upload 2010-11-10; an upload's own
//! name says when it started too, [`crate::storage::staging_started`], and garbage
//! collection goes by the later of the two).

use super::{S3Config, fail};
use crate::storage::{ErrorKind, Op, StorageError, Upload};
use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::client::HttpRequestBody;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use std::time::Duration;

/// The prefix whose uploads are listed.
const PREFIX: &str = "staging/";
/// Pages read at most (1,000 uploads each).
const MAX_PAGES: usize = 1000;

/// Why the upload lister could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("S3 client for multipart uploads: {0}")]
pub struct UploadsSetupError(#[source] reqwest::Error);

/// Lists a bucket's multipart uploads.
pub(super) struct Uploads {
    http: reqwest::Client,
    /// `https://s3.<region>.amazonaws.com/<bucket>`, or the configured endpoint's.
    bucket_url: String,
    region: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListResult {
    #[serde(default)]
    is_truncated: bool,
    #[serde(default)]
    next_key_marker: Option<String>,
    #[serde(default)]
    next_upload_id_marker: Option<String>,
    #[serde(default, rename = "Upload")]
    uploads: Vec<Listed>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Listed {
    key: String,
    upload_id: String,
    initiated: String,
}

fn encode(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

impl Uploads {
    pub(super) fn new(config: &S3Config) -> Result<Self, UploadsSetupError> {
        let region = config.region.clone().unwrap_or_else(|| "us-east-1".to_owned());
        let endpoint = config.endpoint.clone().unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let endpoint = endpoint.trim_end_matches('/');
        let bucket_url = match (config.virtual_hosted_style, endpoint.split_once("://")) {
            (true, Some((scheme, host))) => format!("{scheme}://{}.{host}", config.bucket),
            _ => format!("{endpoint}/{}", config.bucket),
        };
        let http = reqwest::Client::builder()
            .user_agent(concat!("nixery/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(UploadsSetupError)?;
        Ok(Uploads { http, bucket_url, region })
    }

    /// Every unfinished upload under `staging/`.
    pub(super) async fn list(&self, store: &AmazonS3) -> Result<Vec<Upload>, StorageError> {
        let mut uploads = Vec::new();
        let mut markers: Option<(String, String)> = None;
        for _ in 0..MAX_PAGES {
            let page = self.page(store, markers.as_ref()).await?;
            for u in page.uploads {
                let initiated = humantime::parse_rfc3339_weak(&u.initiated).map_err(|e| {
                    StorageError::new(
                        Op::List,
                        &u.key,
                        ErrorKind::Integrity,
                        format!("Initiated {:?}: {e}", u.initiated),
                    )
                })?;
                uploads.push(Upload { key: u.key, id: u.upload_id, initiated });
            }
            match (page.is_truncated, page.next_key_marker, page.next_upload_id_marker) {
                (true, Some(key), Some(id)) => markers = Some((key, id)),
                _ => return Ok(uploads),
            }
        }
        Ok(uploads)
    }

    async fn page(&self, store: &AmazonS3, markers: Option<&(String, String)>) -> Result<ListResult, StorageError> {
        let mut url = format!("{}?uploads&prefix={}", self.bucket_url, encode(PREFIX));
        if let Some((key, id)) = markers {
            url.push_str(&format!("&key-marker={}&upload-id-marker={}", encode(key), encode(id)));
        }
        let failed = |kind: ErrorKind, e: String| StorageError::new(Op::List, PREFIX, kind, e);
        let credential = store.credentials().get_credential().await.map_err(fail(Op::List, PREFIX))?;
        let mut request = axum::http::Request::builder()
            .method("GET")
            .uri(url.as_str())
            .body(HttpRequestBody::empty())
            .map_err(|e| failed(ErrorKind::Rejected, e.to_string()))?;
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut request, None)
            .map_err(fail(Op::List, PREFIX))?;
        let resp = self
            .http
            .get(url.as_str())
            .headers(request.headers().clone())
            .send()
            .await
            .map_err(|e| failed(ErrorKind::Unavailable, e.to_string()))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| failed(ErrorKind::Unavailable, e.to_string()))?;
        if !status.is_success() {
            let kind = if status.is_server_error() || status.as_u16() == 429 {
                ErrorKind::Unavailable
            } else {
                ErrorKind::Rejected
            };
            let mut message = text;
            message.truncate(500);
            return Err(failed(kind, format!("listing multipart uploads: {status}: {message}")));
        }
        quick_xml::de::from_str(&text).map_err(|e| failed(ErrorKind::Integrity, format!("upload listing: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_is_read_with_its_markers() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>staging/b</NextKeyMarker><NextUploadIdMarker>id-2</NextUploadIdMarker>
  <MaxUploads>1000</MaxUploads><IsTruncated>true</IsTruncated>
  <Upload><Key>staging/a</Key><UploadId>id-1</UploadId><Initiated>2010-11-10T20:48:33.000Z</Initiated>
    <StorageClass>STANDARD</StorageClass></Upload>
  <Upload><Key>staging/b</Key><UploadId>id-2</UploadId><Initiated>2026-12-07T06:47:38.123Z</Initiated></Upload>
</ListMultipartUploadsResult>"#;
        let page: ListResult = quick_xml::de::from_str(xml).unwrap();
        assert!(page.is_truncated);
        assert_eq!(page.next_key_marker.as_deref(), Some("staging/b"));
        assert_eq!(page.uploads.len(), 2);
        assert_eq!((page.uploads[1].key.as_str(), page.uploads[1].upload_id.as_str()), ("staging/b", "id-2"));
        let empty: ListResult = quick_xml::de::from_str(
            "<ListMultipartUploadsResult><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>",
        )
        .unwrap();
        assert!(empty.uploads.is_empty() && !empty.is_truncated);
    }

    #[test]
    fn the_bucket_url_follows_the_addressing_style() {
        let mut config = S3Config::new("bkt");
        config.region = Some("eu-west-1".into());
        assert_eq!(Uploads::new(&config).unwrap().bucket_url, "https://s3.eu-west-1.amazonaws.com/bkt");
        config.virtual_hosted_style = true;
        assert_eq!(Uploads::new(&config).unwrap().bucket_url, "https://bkt.s3.eu-west-1.amazonaws.com");
        config.endpoint = Some("http://127.0.0.1:9000/".into());
        config.virtual_hosted_style = false;
        assert_eq!(Uploads::new(&config).unwrap().bucket_url, "http://127.0.0.1:9000/bkt");
    }
}
