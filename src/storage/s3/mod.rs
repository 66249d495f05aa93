//! S3 (or an S3-compatible store): a bucket shared by replicas, through `object_store`.
//!
//! - Uploads go to `staging/<unique>`: a body that fits one part is a single PUT, a larger one
//!   a multipart upload (8 MiB parts, two in flight), which is invisible until completed and
//!   aborted on failure.
//! - Commit: a server-side copy to the key, then a DELETE of the staging object, also when the
//!   copy failed. A copy is atomic: the key holds nothing or everything. (A single S3 copy
//!   is limited to 5 GiB; `object_store` has no multipart copy.)
//! - Blobs: a 307 to a presigned GET URL, or streamed through the server when configured to
//!   proxy.
//!
//! - Listings, batched deletes (`DeleteObjects`, 1,000 keys per request), conditional writes
//!   (`If-None-Match: *` to create, `If-Match: <ETag>` to replace; the ETag is the
//!   generation) through `object_store`; unfinished multipart uploads are listed and
//!   aborted by [`uploads`].
//!
//! The configuration is a plain struct; reading `AWS_*` variables is the caller's business.
//! Requests are retried by `object_store` (at most 3 times, within 30 s).

mod uploads;

use super::error::check_bucket;
use super::keys::staging_name;
use super::{
    ByteStream, ErrorKind, Generation, Listing, ObjectInfo, ObjectKey, Op, Prefix, SetupError, StorageBackend,
    StorageError, Upload, Versioned,
};
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::path::Path;
use object_store::signer::{Method, Signer};
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig, UpdateVersion, WriteMultipart,
};
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Multipart part size (S3's minimum is 5 MiB).
const PART: usize = 8 * 1024 * 1024;
/// Parts uploaded at once.
const PARTS_IN_FLIGHT: usize = 2;

/// How to reach a bucket. Build it with [`S3Config::new`] and set what differs.
#[derive(Clone, Debug)]
pub struct S3Config {
    /// The bucket's name.
    pub bucket: String,
    /// The region (signing and endpoint); `us-east-1` when `None`.
    pub region: Option<String>,
    /// A custom endpoint (`http(s)://host:port`), for S3-compatible stores and emulators;
    /// plain http is allowed when given here.
    pub endpoint: Option<String>,
    /// Static credentials; without them, `web_identity_token_file` + `role_arn`, else
    /// `container_credentials_relative_uri`, else the instance metadata service.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub web_identity_token_file: Option<PathBuf>,
    pub role_arn: Option<String>,
    pub container_credentials_relative_uri: Option<String>,
    /// Address objects as `bucket.endpoint/key` instead of `endpoint/bucket/key`.
    pub virtual_hosted_style: bool,
    /// Stream blobs through this server instead of redirecting clients to the bucket.
    pub proxy_blobs: bool,
    /// How long a presigned blob URL stays valid (1 s to 7 days).
    pub url_ttl: Duration,
}

impl S3Config {
    /// Defaults: AWS's endpoint for the region, path-style, redirects with 5-minute URLs.
    pub fn new(bucket: impl Into<String>) -> Self {
        S3Config {
            bucket: bucket.into(),
            region: None,
            endpoint: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            web_identity_token_file: None,
            role_arn: None,
            container_credentials_relative_uri: None,
            virtual_hosted_style: false,
            proxy_blobs: false,
            url_ttl: Duration::from_secs(300),
        }
    }
}

/// An S3 bucket.
#[derive(Clone)]
pub struct S3 {
    store: Arc<AmazonS3>,
    proxy: bool,
    url_ttl: Duration,
    /// Requests `object_store` does not make (listing multipart uploads).
    uploads: Arc<uploads::Uploads>,
}

/// An upload that completed under `staging/`; dropping it deletes it (in the background).
pub struct StagedObject {
    path: Path,
    owner: Option<Arc<AmazonS3>>,
}

impl fmt::Debug for StagedObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StagedObject").field("path", &self.path.as_ref()).finish()
    }
}

impl Drop for StagedObject {
    fn drop(&mut self) {
        if let Some(store) = self.owner.take() {
            let path = std::mem::take(&mut self.path);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { delete_quietly(&store, &path).await });
            }
        }
    }
}

/// What the S3 client reported.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct S3Error(object_store::Error);

impl S3Error {
    fn kind(&self) -> ErrorKind {
        use object_store::Error as E;
        match &self.0 {
            E::NotFound { .. } => ErrorKind::NotFound,
            E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
            | E::Precondition { .. }
            | E::AlreadyExists { .. }
            | E::NotModified { .. }
            | E::NotSupported { .. }
            | E::NotImplemented { .. }
            | E::InvalidPath { .. }
            | E::UnknownConfigurationKey { .. } => ErrorKind::Rejected,
            // The rest are failed requests (after retries): a connection, or a status the
            // client has no variant for (5xx, 429); or an answer it could not decode.
            other => {
                let mut source = std::error::Error::source(other);
                while let Some(e) = source {
                    if let Some(http) = e.downcast_ref::<HttpError>() {
                        if http.kind() == HttpErrorKind::Decode {
                            return ErrorKind::Integrity;
                        }
                        break;
                    }
                    source = e.source();
                }
                ErrorKind::Unavailable
            }
        }
    }
}

/// The S3 client's reason for a start-up failure.
#[derive(Debug, thiserror::Error)]
#[error("S3 configuration: {0}")]
pub struct S3SetupError(object_store::Error);

fn fail(op: Op, key: &str) -> impl FnOnce(object_store::Error) -> StorageError {
    move |e| {
        let e = S3Error(e);
        StorageError::new(op, key, e.kind(), e)
    }
}

async fn delete_quietly(store: &AmazonS3, path: &Path) {
    if let Err(e) = store.delete(path).await {
        let e = fail(Op::Delete, path.as_ref())(e);
        tracing::warn!(error = %e, "could not delete a staging object");
    }
}

impl S3 {
    /// Sets up the client; contacts nothing.
    pub fn new(config: S3Config) -> Result<S3, SetupError> {
        check_bucket(&config.bucket, config.url_ttl)?;
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(config.region.as_deref().unwrap_or("us-east-1"))
            .with_virtual_hosted_style_request(config.virtual_hosted_style)
            .with_retry(RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(30), ..Default::default() })
            .with_client_options(ClientOptions::new().with_timeout(Duration::from_secs(120)));
        if let Some(endpoint) = &config.endpoint {
            b = b.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(v) = &config.access_key_id {
            b = b.with_access_key_id(v);
        }
        if let Some(v) = &config.secret_access_key {
            b = b.with_secret_access_key(v);
        }
        if let Some(v) = &config.session_token {
            b = b.with_token(v);
        }
        if let Some(v) = &config.web_identity_token_file {
            b = b.with_config(AmazonS3ConfigKey::WebIdentityTokenFile, v.to_string_lossy());
        }
        if let Some(v) = &config.role_arn {
            b = b.with_config(AmazonS3ConfigKey::RoleArn, v);
        }
        if let Some(v) = &config.container_credentials_relative_uri {
            b = b.with_config(AmazonS3ConfigKey::ContainerCredentialsRelativeUri, v);
        }
        let store = b.build().map_err(|e| SetupError::Backend(Box::new(S3SetupError(e))))?;
        let uploads = uploads::Uploads::new(&config).map_err(|e| SetupError::Backend(Box::new(e)))?;
        Ok(S3 {
            store: Arc::new(store),
            proxy: config.proxy_blobs,
            url_ttl: config.url_ttl,
            uploads: Arc::new(uploads),
        })
    }
}

fn info_of(meta: ObjectMeta) -> ObjectInfo {
    ObjectInfo { key: ObjectKey::stored(meta.location.as_ref()), size: meta.size, modified: meta.last_modified.into() }
}

/// A conditional put's answer: the new generation, or `None` if the condition failed.
fn written(
    result: Result<object_store::PutResult, object_store::Error>,
    key: &ObjectKey,
) -> Result<Option<Generation>, StorageError> {
    match result {
        Ok(put) => {
            let etag = put.e_tag.ok_or_else(|| {
                StorageError::new(Op::Upload, key, ErrorKind::Integrity, "the store gave no ETag for a write")
            })?;
            Ok(Some(Generation::new(etag)))
        }
        Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(None),
        Err(e) => Err(fail(Op::Upload, key.as_str())(e)),
    }
}

/// `Ok(None)` for an object that is not there.
fn absent_is_none<T>(result: Result<T, object_store::Error>) -> Result<Option<T>, object_store::Error> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

impl StorageBackend for S3 {
    type Staged = StagedObject;

    async fn stage(&self, mut body: ByteStream) -> Result<StagedObject, StorageError> {
        let name = staging_name();
        let path = Path::from(name.as_str());
        let body_err = |e| StorageError::body(&name, e);
        // Read up to one part: a body that fits is a single PUT.
        let mut first = BytesMut::new();
        let mut more = true;
        while first.len() <= PART {
            match body.next().await {
                Some(chunk) => first.extend_from_slice(&chunk.map_err(body_err)?),
                None => {
                    more = false;
                    break;
                }
            }
        }
        if !more {
            self.store.put(&path, PutPayload::from(first.freeze())).await.map_err(fail(Op::Upload, &name))?;
            return Ok(StagedObject { path, owner: Some(self.store.clone()) });
        }
        let upload = self.store.put_multipart(&path).await.map_err(fail(Op::Upload, &name))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        writer.put(first.freeze());
        let fed: Result<(), StorageError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(body_err)?;
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(fail(Op::Upload, &name))?;
                writer.put(chunk);
            }
            Ok(())
        }
        .await;
        match fed {
            // `finish` aborts the upload itself when it fails.
            Ok(()) => {
                writer.finish().await.map_err(fail(Op::Upload, &name))?;
            }
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::debug!(key = name, error = %abort, "aborting a multipart upload");
                }
                return Err(e);
            }
        }
        Ok(StagedObject { path, owner: Some(self.store.clone()) })
    }

    async fn commit(&self, mut staged: StagedObject, key: &ObjectKey) -> Result<(), StorageError> {
        let to = Path::from(key.as_str());
        let copied = self.store.copy(&staged.path, &to).await.map_err(fail(Op::Commit, key.as_str()));
        staged.owner = None;
        delete_quietly(&self.store, &staged.path).await;
        copied
    }

    async fn size(&self, key: &ObjectKey) -> Result<Option<u64>, StorageError> {
        let meta = absent_is_none(self.store.head(&Path::from(key.as_str())).await);
        Ok(meta.map_err(fail(Op::Stat, key.as_str()))?.map(|m| m.size))
    }

    async fn read(&self, key: &ObjectKey, range: Option<Range<u64>>) -> Result<Option<ByteStream>, StorageError> {
        if let Some(r) = &range
            && r.start >= r.end
        {
            return Ok(Some(Box::pin(futures::stream::empty()) as ByteStream));
        }
        let options = GetOptions { range: range.map(GetRange::Bounded), ..Default::default() };
        let result = absent_is_none(self.store.get_opts(&Path::from(key.as_str()), options).await);
        let result = result.map_err(fail(Op::Read, key.as_str()))?;
        Ok(result.map(|r| -> ByteStream { Box::pin(r.into_stream().map_err(std::io::Error::other)) }))
    }

    /// A HEAD of an object that is never written: one small request with the permissions
    /// the server needs anyway (`s3:GetObject`, `s3:ListBucket` for a 404), answered 404.
    async fn ping(&self) -> Result<(), StorageError> {
        self.size(&ObjectKey::probe()).await.map(|_| ())
    }

    fn list(&self, prefix: Prefix) -> Listing {
        let listing = self.store.list(Some(&Path::from(prefix.dir())));
        Box::pin(listing.map(move |meta| meta.map(info_of).map_err(fail(Op::List, prefix.as_str()))))
    }

    async fn info(&self, key: &ObjectKey) -> Result<Option<ObjectInfo>, StorageError> {
        let meta = absent_is_none(self.store.head(&Path::from(key.as_str())).await);
        Ok(meta.map_err(fail(Op::Stat, key.as_str()))?.map(info_of))
    }

    /// `DeleteObjects`, 1,000 keys per request (object_store's `delete_stream`).
    async fn delete(&self, keys: &[ObjectKey]) -> Result<(), StorageError> {
        let paths: Vec<object_store::Result<Path>> = keys.iter().map(|k| Ok(Path::from(k.as_str()))).collect();
        let mut deleted = self.store.delete_stream(Box::pin(futures::stream::iter(paths)));
        while let Some(result) = deleted.next().await {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(fail(Op::Delete, "objects")(e)),
            }
        }
        Ok(())
    }

    async fn create(&self, key: &ObjectKey, bytes: Bytes) -> Result<Option<Generation>, StorageError> {
        let options = PutOptions { mode: PutMode::Create, ..Default::default() };
        written(self.store.put_opts(&Path::from(key.as_str()), PutPayload::from(bytes), options).await, key)
    }

    async fn replace(
        &self,
        key: &ObjectKey,
        bytes: Bytes,
        current: &Generation,
    ) -> Result<Option<Generation>, StorageError> {
        let version = UpdateVersion { e_tag: Some(current.as_str().to_owned()), version: None };
        let options = PutOptions { mode: PutMode::Update(version), ..Default::default() };
        written(self.store.put_opts(&Path::from(key.as_str()), PutPayload::from(bytes), options).await, key)
    }

    async fn read_versioned(&self, key: &ObjectKey) -> Result<Option<Versioned>, StorageError> {
        let got =
            absent_is_none(self.store.get(&Path::from(key.as_str())).await).map_err(fail(Op::Read, key.as_str()))?;
        let Some(got) = got else { return Ok(None) };
        let etag = got.meta.e_tag.clone();
        let bytes = got.bytes().await.map_err(fail(Op::Read, key.as_str()))?;
        let etag = etag.ok_or_else(|| StorageError::new(Op::Read, key, ErrorKind::Integrity, "no ETag"))?;
        Ok(Some(Versioned { bytes, generation: Generation::new(etag) }))
    }

    async fn unfinished_uploads(&self, before: SystemTime) -> Result<Vec<Upload>, StorageError> {
        // By the store's clock and by the name's (moto dates every upload 2010).
        let started_before =
            |u: &Upload| u.initiated < before && super::staging_started(&u.key).is_none_or(|t| t < before);
        let all = self.uploads.list(&self.store).await?;
        Ok(all.into_iter().filter(started_before).collect())
    }

    async fn abort_upload(&self, upload: &Upload) -> Result<(), StorageError> {
        use object_store::multipart::MultipartStore;
        let path = Path::from(upload.key.as_str());
        match self.store.abort_multipart(&path, &upload.id).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(fail(Op::Delete, &upload.key)(e)),
        }
    }

    /// A presigned GET URL, unless blobs are proxied.
    async fn url(&self, key: &ObjectKey) -> Result<Option<String>, StorageError> {
        if self.proxy {
            return Ok(None);
        }
        let path = Path::from(key.as_str());
        let url =
            self.store.signed_url(Method::GET, &path, self.url_ttl).await.map_err(fail(Op::Sign, key.as_str()))?;
        Ok(Some(url.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_have_kinds() {
        let boxed = || -> Box<dyn std::error::Error + Send + Sync> { "detail".into() };
        let kind = |e| S3Error(e).kind();
        assert_eq!(kind(object_store::Error::NotFound { path: "k".into(), source: boxed() }), ErrorKind::NotFound);
        let denied = object_store::Error::PermissionDenied { path: "k".into(), source: boxed() };
        assert_eq!(kind(denied), ErrorKind::Rejected);
        let lost = HttpError::new(HttpErrorKind::Connect, std::io::Error::other("connection refused"));
        let generic = object_store::Error::Generic { store: "S3", source: Box::new(lost) };
        assert_eq!(kind(generic), ErrorKind::Unavailable);
        let garbled = HttpError::new(HttpErrorKind::Decode, std::io::Error::other("bad XML"));
        let generic = object_store::Error::Generic { store: "S3", source: Box::new(garbled) };
        assert_eq!(kind(generic), ErrorKind::Integrity);
    }

    #[test]
    fn setup_checks_the_bucket_and_url_lifetime() {
        assert!(matches!(S3::new(S3Config::new("")), Err(SetupError::EmptyBucket)));
        let mut config = S3Config::new("b");
        config.url_ttl = Duration::ZERO;
        assert!(matches!(S3::new(config), Err(SetupError::UrlTtl(_))));
        assert!(S3::new(S3Config::new("b")).is_ok());
    }
}
