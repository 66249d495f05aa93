//! Google Cloud Storage: a bucket shared by replicas, through a small client of the JSON API.
//!
//! - Uploads: a resumable upload session under `staging/<unique>`, fed in chunks (multiples
//!   of 256 KiB, `Content-Range: bytes a-b/*`; the last one carries the total, or
//!   `bytes */TOTAL` when empty) while the next chunk is read from the stream. A 308 answer's
//!   `Range` says how much the server kept; anything it did not keep is sent again. An object
//!   only appears when the last chunk is accepted, and a failed upload cancels its session.
//! - Commit: a server-side `rewriteTo` from the staging object to the key (repeated with the
//!   `rewriteToken` while the answer says `done: false`), then a DELETE of the staging object,
//!   also when the rewrite failed. A rewrite is atomic, so a key holds nothing or everything.
//!   Content-addressed keys are written with `ifGenerationMatch=0`: if another replica got
//!   there first (412), its object has the same bytes and the commit succeeds without a write
//!   (which also keeps clear of GCS's one-write-per-second-per-object limit).
//! - Blobs: a 307 to a V4 signed GET URL when a service account key is configured, else to the
//!   object's public URL; or streamed through the server when configured to proxy.
//! - Credentials: Application Default Credentials through `google-cloud-auth` (a key file, or
//!   gcloud's well-known file, or the metadata server); none at all with an emulator
//!   (`STORAGE_EMULATOR_HOST` in Google's clients), which gets every request instead of
//!   `storage.googleapis.com`.
//!
//! Idempotent calls (metadata, reads, rewrite, delete, starting a session) are retried twice on
//! a broken connection, 429 or 5xx; chunk uploads are not (a failed upload is abandoned and
//! the build that made it fails; the client retries it).
//!
//! Here: the backend and its configuration. [`api`] has the JSON API calls, [`upload`] the
//! resumable upload, [`objects`] listings, batched deletes and conditional writes,
//! [`access`] the endpoint and credentials, [`signing`] V4 URLs.

mod access;
mod api;
mod error;
mod objects;
mod signing;
#[cfg(test)]
mod tests;
mod upload;

pub use error::{GcsError, GcsSetupError};

use super::error::check_bucket;
use super::keys::staging_name;
use super::{
    ByteStream, Generation, Listing, ObjectInfo, ObjectKey, Op, Prefix, SetupError, StorageBackend, StorageError,
    Versioned,
};
use access::{emulator_base, service_account_signer, token_credentials};
use api::ObjectResource;
use bytes::{Bytes, BytesMut};
use error::{protocol, retryable, status_error, transport};
use futures::{StreamExt, TryStreamExt};
use google_cloud_auth::credentials::{self, AccessTokenCredentials};
use google_cloud_auth::signer::Signer;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use signing::{encode_component, encode_path};
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use upload::Session;

/// Where the JSON API, uploads and public objects are.
const GOOGLE: &str = "https://storage.googleapis.com";
/// Resumable upload chunks must be multiples of this.
const QUANTUM: usize = 256 * 1024;
/// Tries of an idempotent request.
const ATTEMPTS: u32 = 3;
/// Rewrite calls one commit may take (each copies up to about a gigabyte).
const MAX_REWRITE_CALLS: usize = 10_000;

/// How to reach a bucket. Build it with [`GcsConfig::new`] and set what differs.
#[derive(Clone, Debug)]
pub struct GcsConfig {
    /// The bucket's name.
    pub bucket: String,
    /// An emulator's base URL (`http://host:port`, or `host:port` meaning http), as in
    /// `STORAGE_EMULATOR_HOST`: every request goes there, without credentials.
    pub emulator_host: Option<String>,
    /// A credentials JSON file, as in `GOOGLE_APPLICATION_CREDENTIALS`. A service account key
    /// also signs blob URLs. Without one: Application Default Credentials (gcloud's
    /// well-known file, then the metadata server) and public blob URLs.
    pub credentials_file: Option<PathBuf>,
    /// Stream blobs through this server instead of redirecting clients to the bucket.
    pub proxy_blobs: bool,
    /// How long a signed blob URL stays valid (1 s to 7 days).
    pub url_ttl: Duration,
    /// Upload chunk size, rounded down to a multiple of 256 KiB (at least 256 KiB).
    pub chunk_size: usize,
}

impl GcsConfig {
    /// Defaults: Google's endpoint, ADC, redirects with 5-minute URLs, 8 MiB chunks.
    pub fn new(bucket: impl Into<String>) -> Self {
        GcsConfig {
            bucket: bucket.into(),
            emulator_host: None,
            credentials_file: None,
            proxy_blobs: false,
            url_ttl: Duration::from_secs(300),
            chunk_size: 8 * 1024 * 1024,
        }
    }
}

/// A Cloud Storage bucket.
#[derive(Clone)]
pub struct Gcs {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// Scheme and host of every request and URL: Google's or an emulator's.
    base: String,
    bucket: String,
    /// Access tokens; `None` for an emulator.
    tokens: Option<AccessTokenCredentials>,
    /// The service account key's signer and e-mail address.
    signer: Option<(Signer, String)>,
    proxy: bool,
    url_ttl: Duration,
    chunk: usize,
}

/// An upload that completed under `staging/`; dropping it deletes it (in the background).
pub struct StagedObject {
    name: String,
    size: u64,
    /// Set until the object is discarded or committed.
    owner: Option<Arc<Inner>>,
}

impl fmt::Debug for StagedObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StagedObject").field("name", &self.name).field("size", &self.size).finish()
    }
}

impl Drop for StagedObject {
    fn drop(&mut self) {
        if let Some(inner) = self.owner.take() {
            let name = std::mem::take(&mut self.name);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { inner.delete_quietly(&name).await });
            }
        }
    }
}

impl Gcs {
    /// Sets up the client: reads the credentials file (and checks a service account key can
    /// sign); contacts nothing.
    pub async fn new(config: GcsConfig) -> Result<Gcs, SetupError> {
        let base = match &config.emulator_host {
            Some(host) => Some(emulator_base(host)?),
            None => None,
        };
        Gcs::build(config, base).await
    }

    /// `new`, with the endpoint given separately: `Some` sends every request there.
    /// Credentials are used unless the endpoint came from `emulator_host`.
    async fn build(config: GcsConfig, endpoint: Option<String>) -> Result<Gcs, SetupError> {
        check_bucket(&config.bucket, config.url_ttl)?;
        let key = match &config.credentials_file {
            Some(path) => {
                let text = tokio::fs::read(path)
                    .await
                    .map_err(|source| GcsSetupError::ReadCredentials { path: path.clone(), source })?;
                let json: serde_json::Value = serde_json::from_slice(&text)
                    .map_err(|source| GcsSetupError::ParseCredentials { path: path.clone(), source })?;
                Some((path.clone(), json))
            }
            None => None,
        };
        let signer = match &key {
            Some((path, json)) if json["type"] == "service_account" => Some(service_account_signer(path, json).await?),
            _ => None,
        };
        let tokens = if config.emulator_host.is_some() {
            None
        } else {
            let build = match &key {
                Some((_, json)) => token_credentials(json.clone()),
                None => credentials::Builder::default().build_access_token_credentials(),
            };
            Some(build.map_err(|source| GcsSetupError::BuildCredentials {
                path: key.as_ref().map(|(p, _)| p.clone()),
                source,
            })?)
        };
        let http = reqwest::Client::builder()
            .user_agent(concat!("nixery/", env!("CARGO_PKG_VERSION")))
            // A resumable upload's 308 means "go on", never "go elsewhere".
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(GcsSetupError::HttpClient)?;
        Ok(Gcs {
            inner: Arc::new(Inner {
                http,
                base: endpoint.unwrap_or_else(|| GOOGLE.to_owned()),
                bucket: config.bucket,
                tokens,
                signer,
                proxy: config.proxy_blobs,
                url_ttl: config.url_ttl,
                chunk: (config.chunk_size / QUANTUM).max(1) * QUANTUM,
            }),
        })
    }
}

impl StorageBackend for Gcs {
    type Staged = StagedObject;

    async fn stage(&self, body: ByteStream) -> Result<StagedObject, StorageError> {
        let name = staging_name();
        let uri = self.inner.start_upload(&name).await?;
        let mut session = Session { uri, name, owner: Some(self.inner.clone()) };
        let uploaded = self.inner.upload(&session.uri, &session.name, body).await;
        session.owner = None;
        match uploaded {
            Ok(size) => {
                Ok(StagedObject { name: std::mem::take(&mut session.name), size, owner: Some(self.inner.clone()) })
            }
            Err(e) => {
                self.inner.abandon(&session.uri, &session.name).await;
                Err(e)
            }
        }
    }

    async fn commit(&self, mut staged: StagedObject, key: &ObjectKey) -> Result<(), StorageError> {
        let result = self.inner.rewrite(&staged.name, key.as_str(), key.is_content_addressed()).await;
        staged.owner = None;
        self.inner.delete_quietly(&staged.name).await;
        result
    }

    async fn size(&self, key: &ObjectKey) -> Result<Option<u64>, StorageError> {
        self.inner.size(key.as_str()).await
    }

    async fn read(&self, key: &ObjectKey, range: Option<Range<u64>>) -> Result<Option<ByteStream>, StorageError> {
        self.inner.media(key.as_str(), range).await
    }

    /// The metadata of an object that is never written: one small request with the
    /// permission the server needs anyway (`storage.objects.get`), answered 404.
    async fn ping(&self) -> Result<(), StorageError> {
        self.size(&ObjectKey::probe()).await.map(|_| ())
    }

    fn list(&self, prefix: Prefix) -> Listing {
        self.inner.clone().list(prefix)
    }

    async fn info(&self, key: &ObjectKey) -> Result<Option<ObjectInfo>, StorageError> {
        self.inner.info(key.as_str()).await
    }

    async fn delete(&self, keys: &[ObjectKey]) -> Result<(), StorageError> {
        let names: Vec<&str> = keys.iter().map(ObjectKey::as_str).collect();
        self.inner.delete_all(&names).await
    }

    async fn create(&self, key: &ObjectKey, bytes: Bytes) -> Result<Option<Generation>, StorageError> {
        self.inner.write_if(key.as_str(), bytes, "0").await
    }

    async fn replace(
        &self,
        key: &ObjectKey,
        bytes: Bytes,
        current: &Generation,
    ) -> Result<Option<Generation>, StorageError> {
        self.inner.write_if(key.as_str(), bytes, current.as_str()).await
    }

    async fn read_versioned(&self, key: &ObjectKey) -> Result<Option<Versioned>, StorageError> {
        self.inner.read_versioned(key.as_str()).await
    }

    /// A signed URL with a service account key, else the public URL; none when proxying.
    async fn url(&self, key: &ObjectKey) -> Result<Option<String>, StorageError> {
        if self.inner.proxy {
            return Ok(None);
        }
        self.inner.url(key.as_str(), SystemTime::now()).await.map(Some)
    }
}
