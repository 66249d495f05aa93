//! Reading a Nix binary cache over HTTP, the way Nix reads one: `GET <cache>/nix-cache-info`
//! says it is a cache of `/nix/store`, and `GET <cache>/<hash>.narinfo` describes one store
//! path ([`NarInfo`]). `nixery popcount` reads runtime references from it without building
//! or downloading anything else.
//!
//! Answers, as Nix treats them: 200 is the file; 404 and 403 (what S3-backed caches answer
//! for a missing key) mean the cache does not have the path; 5xx, 429, a refused or reset
//! connection and a timeout are retried ([`ATTEMPTS`] in all, waiting 0.25 s, 0.5 s, 1 s, ...)
//! and then fail with the URL and the reason; any other status fails at once.

pub mod narinfo;

pub use narinfo::{NarInfo, NarInfoError};

use crate::nix::StorePath;
use reqwest::{StatusCode, Url};
use std::time::Duration;

/// Requests per file before giving up.
pub const ATTEMPTS: u32 = 4;
/// Wait before the first retry; doubled for each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A binary cache at an http(s) URL.
#[derive(Clone, Debug)]
pub struct BinaryCache {
    /// The URL without a trailing slash; files are `<url>/<file>`.
    url: String,
    http: reqwest::Client,
}

/// Why the cache could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BinaryCacheError {
    #[error("binary cache {cache} does not answer: GET {url} (attempt {attempts} of {ATTEMPTS}): {reason}")]
    Unreachable { cache: String, url: String, attempts: u32, reason: String },
    #[error("binary cache {cache} answered GET {url} with {status} (attempt {attempts} of {ATTEMPTS})")]
    Status { cache: String, url: String, attempts: u32, status: StatusCode },
    #[error("{cache} is not a Nix binary cache: GET {url} answered {status}")]
    NotACache { cache: String, url: String, status: StatusCode },
    #[error("{cache} is a binary cache of store {store_dir}, not of this store")]
    OtherStore { cache: String, store_dir: String },
    #[error("binary cache {cache}: {url} is not a narinfo file for {path}: {reason}")]
    NarInfo { cache: String, url: String, path: StorePath, reason: String },
    #[error("cannot set up an HTTP client: {0}")]
    Client(String),
}

/// `e` and its sources, `: `-separated (reqwest's own message names only the URL).
fn reason(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Whether a failed request may succeed when tried again.
fn transient(e: &reqwest::Error) -> bool {
    e.is_connect() || e.is_timeout() || e.is_request() || e.is_body()
}

impl BinaryCache {
    /// A client for the cache at `url` (http or https; checked by the configuration).
    pub fn new(url: &Url) -> Result<BinaryCache, BinaryCacheError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("nixery-rs/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| BinaryCacheError::Client(reason(&e)))?;
        Ok(BinaryCache { url: url.as_str().trim_end_matches('/').to_owned(), http })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Checks that the URL is a binary cache of this store (`nix-cache-info`, as Nix asks
    /// first): a cache that does not answer, or is not one, fails here with a clear message
    /// before any work is done.
    pub async fn check(&self) -> Result<(), BinaryCacheError> {
        let url = format!("{}/nix-cache-info", self.url);
        let Some(body) = self.get(&url).await? else {
            return Err(BinaryCacheError::NotACache { cache: self.url.clone(), url, status: StatusCode::NOT_FOUND });
        };
        let text = String::from_utf8_lossy(&body);
        let store_dir = text.lines().find_map(|l| l.strip_prefix("StoreDir:")).map(str::trim).unwrap_or("");
        if StorePath::is_store_dir(store_dir) {
            Ok(())
        } else {
            Err(BinaryCacheError::OtherStore { cache: self.url.clone(), store_dir: store_dir.to_owned() })
        }
    }

    /// The narinfo of `path`, or `None` if the cache does not have it.
    pub async fn narinfo(&self, path: &StorePath) -> Result<Option<NarInfo>, BinaryCacheError> {
        let url = format!("{}/{}.narinfo", self.url, path.hash_part());
        let Some(body) = self.get(&url).await? else { return Ok(None) };
        let bad = |reason: String| BinaryCacheError::NarInfo {
            cache: self.url.clone(),
            url: url.clone(),
            path: path.clone(),
            reason,
        };
        let text = std::str::from_utf8(&body).map_err(|e| bad(e.to_string()))?;
        let info = NarInfo::parse(text).map_err(|e| bad(e.to_string()))?;
        if &info.store_path != path {
            return Err(bad(format!("it describes {}", info.store_path)));
        }
        Ok(Some(info))
    }

    /// `GET url`: the body, `None` for 404 and 403, retries as the module docs say.
    async fn get(&self, url: &str) -> Result<Option<bytes::Bytes>, BinaryCacheError> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let last = attempt == ATTEMPTS;
            let retry = match self.http.get(url).send().await {
                Ok(response) => match response.status() {
                    StatusCode::OK => match response.bytes().await {
                        Ok(body) => return Ok(Some(body)),
                        Err(e) if !last && transient(&e) => format!("reading the answer: {}", reason(&e)),
                        Err(e) => {
                            return Err(self.unreachable(url, attempt, format!("reading the answer: {}", reason(&e))));
                        }
                    },
                    StatusCode::NOT_FOUND | StatusCode::FORBIDDEN => return Ok(None),
                    status if (status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS) && !last => {
                        status.to_string()
                    }
                    status => {
                        let (cache, url) = (self.url.clone(), url.to_owned());
                        return Err(BinaryCacheError::Status { cache, url, attempts: attempt, status });
                    }
                },
                Err(e) if !last && transient(&e) => reason(&e),
                Err(e) => return Err(self.unreachable(url, attempt, reason(&e))),
            };
            tracing::debug!(url, attempt, reason = retry, "retrying a binary cache request");
            tokio::time::sleep(backoff).await;
            backoff *= 2;
            attempt += 1;
        }
    }

    fn unreachable(&self, url: &str, attempts: u32, reason: String) -> BinaryCacheError {
        BinaryCacheError::Unreachable { cache: self.url.clone(), url: url.to_owned(), attempts, reason }
    }
}
