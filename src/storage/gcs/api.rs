//! The JSON API calls the backend is made of: object metadata, media reads, `rewriteTo`,
//! deletes and blob URLs, each authorised and, when idempotent, retried.

use super::*;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RewriteResponse {
    done: bool,
    #[serde(default)]
    rewrite_token: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct ObjectResource {
    /// A decimal string in the JSON API.
    pub(super) size: String,
}

impl Inner {
    pub(super) fn object_url(&self, name: &str) -> String {
        format!("{}/storage/v1/b/{}/o/{}", self.base, encode_component(&self.bucket), encode_component(name))
    }

    pub(super) async fn authorize(
        &self,
        req: RequestBuilder,
        op: Op,
        key: &str,
    ) -> Result<RequestBuilder, StorageError> {
        match &self.tokens {
            None => Ok(req),
            Some(creds) => {
                let token = creds.access_token().await.map_err(|e| GcsError::Credentials(e).at(op, key))?;
                Ok(req.bearer_auth(token.token))
            }
        }
    }

    /// Sends an idempotent request, retrying a broken connection, 429 and 5xx.
    pub(super) async fn send(
        &self,
        op: Op,
        key: &str,
        make: impl Fn() -> RequestBuilder,
    ) -> Result<Response, StorageError> {
        let mut delay = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            let req = self.authorize(make(), op, key).await?;
            match req.send().await {
                Ok(resp) if attempt < ATTEMPTS && retryable(resp.status()) => {
                    tracing::debug!(%op, key, status = resp.status().as_u16(), "object store busy, retrying");
                }
                Ok(resp) => return Ok(resp),
                Err(e) if attempt < ATTEMPTS => {
                    tracing::debug!(%op, key, error = %e, "object store unreachable, retrying")
                }
                Err(e) => return Err(transport(op, key)(e)),
            }
            tokio::time::sleep(delay).await;
            delay *= 4;
            attempt += 1;
        }
    }

    /// Server-side copy of `src` to `dst`; with `if_absent`, an existing `dst` is kept.
    pub(super) async fn rewrite(&self, src: &str, dst: &str, if_absent: bool) -> Result<(), StorageError> {
        let mut token: Option<String> = None;
        for _ in 0..MAX_REWRITE_CALLS {
            let mut url = format!(
                "{}/rewriteTo/b/{}/o/{}",
                self.object_url(src),
                encode_component(&self.bucket),
                encode_component(dst)
            );
            let mut sep = '?';
            if if_absent {
                url.push_str("?ifGenerationMatch=0");
                sep = '&';
            }
            if let Some(t) = &token {
                url.push_str(&format!("{sep}rewriteToken={}", encode_component(t)));
            }
            // No body: a request body would replace the object's metadata.
            let resp = self.send(Op::Commit, dst, || self.http.post(&url).header(CONTENT_LENGTH, 0)).await?;
            match resp.status() {
                StatusCode::PRECONDITION_FAILED if if_absent => {
                    tracing::debug!(key = dst, "already stored (by another replica)");
                    return Ok(());
                }
                StatusCode::OK => {}
                _ => return Err(status_error(Op::Commit, dst, resp).await),
            }
            let body = resp.bytes().await.map_err(transport(Op::Commit, dst))?;
            let answer: RewriteResponse =
                serde_json::from_slice(&body).map_err(|e| protocol(Op::Commit, dst, format!("rewrite answer: {e}")))?;
            if answer.done {
                return Ok(());
            }
            match answer.rewrite_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Err(protocol(Op::Commit, dst, "unfinished rewrite without a rewriteToken")),
            }
        }
        Err(protocol(Op::Commit, dst, format!("rewrite unfinished after {MAX_REWRITE_CALLS} calls")))
    }

    pub(super) async fn delete(&self, name: &str) -> Result<(), StorageError> {
        let url = self.object_url(name);
        let resp = self.send(Op::Delete, name, || self.http.delete(&url).header(CONTENT_LENGTH, 0)).await?;
        if resp.status().is_success() || resp.status() == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(status_error(Op::Delete, name, resp).await)
        }
    }

    /// Deletes a staging object, logging a failure (a leftover in `staging/` is only litter).
    pub(super) async fn delete_quietly(&self, name: &str) {
        if let Err(e) = self.delete(name).await {
            tracing::warn!(error = %e, "could not delete a staging object");
        }
    }

    /// The object's metadata `fields`, decoded as `T`; `None` if the object is absent.
    pub(super) async fn metadata<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
        fields: &str,
    ) -> Result<Option<T>, StorageError> {
        let url = format!("{}?fields={fields}", self.object_url(name));
        let resp = self.send(Op::Stat, name, || self.http.get(&url)).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::OK => {
                let body = resp.bytes().await.map_err(transport(Op::Stat, name))?;
                serde_json::from_slice(&body).map_err(|e| protocol(Op::Stat, name, format!("object metadata: {e}")))
            }
            _ => Err(status_error(Op::Stat, name, resp).await),
        }
    }

    pub(super) async fn size(&self, name: &str) -> Result<Option<u64>, StorageError> {
        let Some(object) = self.metadata::<ObjectResource>(name, "size").await? else { return Ok(None) };
        let size = object.size.parse().map_err(|_| protocol(Op::Stat, name, format!("size {:?}", object.size)))?;
        Ok(Some(size))
    }

    pub(super) async fn media(
        &self,
        name: &str,
        range: Option<Range<u64>>,
    ) -> Result<Option<ByteStream>, StorageError> {
        if let Some(r) = &range
            && r.start >= r.end
        {
            return Ok(Some(Box::pin(futures::stream::empty())));
        }
        let url = format!("{}?alt=media", self.object_url(name));
        let resp = self
            .send(Op::Read, name, || {
                let req = self.http.get(&url);
                match &range {
                    Some(r) => req.header(RANGE, format!("bytes={}-{}", r.start, r.end - 1)),
                    None => req,
                }
            })
            .await?;
        match (resp.status(), &range) {
            (StatusCode::NOT_FOUND, _) => Ok(None),
            (StatusCode::OK, None) | (StatusCode::PARTIAL_CONTENT, Some(_)) => {
                Ok(Some(Box::pin(resp.bytes_stream().map_err(std::io::Error::other))))
            }
            (StatusCode::OK, Some(_)) => Err(protocol(Op::Read, name, "the whole object instead of the range")),
            _ => Err(status_error(Op::Read, name, resp).await),
        }
    }

    /// The URL a client fetches an object from: signed when a key is configured.
    pub(super) async fn url(&self, name: &str, now: SystemTime) -> Result<String, StorageError> {
        let Some((signer, email)) = &self.signer else {
            return Ok(format!("{}/{}/{}", self.base, encode_component(&self.bucket), encode_path(name)));
        };
        let prepared = signing::prepare(&signing::UrlRequest {
            base: &self.base,
            bucket: &self.bucket,
            object: name,
            email,
            unix_time: now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            expires: self.url_ttl.as_secs(),
        });
        let signature = signer
            .sign(prepared.string_to_sign.as_bytes())
            .await
            .map_err(|e| GcsError::Signing(e).at(Op::Sign, name))?;
        Ok(signing::finish(&prepared, &signature))
    }
}
