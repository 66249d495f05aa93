//! The resumable upload: a session under `staging/`, fed in chunks (multiples of 256 KiB)
//! while the next chunk is read from the stream; a 308 answer says how much the server kept,
//! and anything it did not keep is sent again. A failed or dropped upload cancels its session.

use super::*;

/// An upload session; dropping it while armed cancels it (in the background).
pub(super) struct Session {
    pub(super) uri: String,
    pub(super) name: String,
    pub(super) owner: Option<Arc<Inner>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(inner) = self.owner.take() {
            let (uri, name) = (std::mem::take(&mut self.uri), std::mem::take(&mut self.name));
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { inner.abandon(&uri, &name).await });
            }
        }
    }
}

/// What the server said to a chunk.
#[derive(Debug, PartialEq, Eq)]
enum ChunkAnswer {
    /// More is expected; the server holds the first `persisted` bytes.
    Incomplete { persisted: u64 },
    /// The object is complete.
    Done,
}

/// The `Range: bytes=0-N` of a 308 answer as a count of bytes (none held without it).
fn persisted_bytes(resp: &Response) -> Option<u64> {
    match resp.headers().get(RANGE) {
        None => Some(0),
        Some(v) => {
            let (first, last) = v.to_str().ok()?.strip_prefix("bytes=")?.split_once('-')?;
            (first == "0").then_some(())?;
            last.parse::<u64>().ok()?.checked_add(1)
        }
    }
}

/// Reads from `body` into `buf` until it holds more than `target` bytes or the stream ends
/// (`Ok(true)`).
async fn fill(body: &mut ByteStream, buf: &mut BytesMut, target: usize, key: &str) -> Result<bool, StorageError> {
    while buf.len() <= target {
        match body.next().await {
            Some(Ok(bytes)) => buf.extend_from_slice(&bytes),
            Some(Err(e)) => return Err(StorageError::body(key, e)),
            None => return Ok(true),
        }
    }
    Ok(false)
}

impl Inner {
    /// Opens a resumable upload session for `name`; returns the session URI.
    pub(super) async fn start_upload(&self, name: &str) -> Result<String, StorageError> {
        let url = format!(
            "{}/upload/storage/v1/b/{}/o?uploadType=resumable&name={}",
            self.base,
            encode_component(&self.bucket),
            encode_component(name)
        );
        let resp = self
            .send(Op::Upload, name, || {
                self.http
                    .post(&url)
                    .header(CONTENT_TYPE, "application/json; charset=UTF-8")
                    .body(r#"{"contentType":"application/octet-stream"}"#)
            })
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(Op::Upload, name, resp).await);
        }
        let location = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok());
        location.map(str::to_owned).ok_or_else(|| protocol(Op::Upload, name, "no Location for the upload session"))
    }

    /// Sends the bytes at `offset`; `total` marks the last chunk.
    async fn put_chunk(
        &self,
        session: &str,
        name: &str,
        offset: u64,
        data: Bytes,
        total: Option<u64>,
    ) -> Result<ChunkAnswer, StorageError> {
        let len = data.len() as u64;
        let range = match total {
            Some(total) if len == 0 => format!("bytes */{total}"),
            Some(total) => format!("bytes {offset}-{}/{total}", offset + len - 1),
            None => format!("bytes {offset}-{}/*", offset + len - 1),
        };
        let req = self.http.put(session).header(CONTENT_RANGE, range).header(CONTENT_LENGTH, len).body(data);
        let req = self.authorize(req, Op::Upload, name).await?;
        let resp = req.send().await.map_err(transport(Op::Upload, name))?;
        match resp.status().as_u16() {
            308 => match persisted_bytes(&resp) {
                Some(persisted) => Ok(ChunkAnswer::Incomplete { persisted }),
                None => Err(protocol(Op::Upload, name, "unreadable Range in a 308 answer")),
            },
            200 | 201 => {
                let body = resp.bytes().await.map_err(transport(Op::Upload, name))?;
                if let (Some(total), Ok(object)) = (total, serde_json::from_slice::<ObjectResource>(&body))
                    && object.size != total.to_string()
                {
                    return Err(protocol(Op::Upload, name, format!("stored {} bytes of {total}", object.size)));
                }
                Ok(ChunkAnswer::Done)
            }
            _ => Err(status_error(Op::Upload, name, resp).await),
        }
    }

    /// Streams `body` into the session in chunks, reading the next chunk while one is sent.
    /// Returns the object's size.
    pub(super) async fn upload(&self, session: &str, name: &str, mut body: ByteStream) -> Result<u64, StorageError> {
        let chunk = self.chunk;
        let mut buf = BytesMut::with_capacity(2 * chunk);
        let mut offset = 0u64;
        let mut eof = fill(&mut body, &mut buf, chunk, name).await?;
        loop {
            if eof {
                let total = offset + buf.len() as u64;
                return match self.put_chunk(session, name, offset, buf.freeze(), Some(total)).await? {
                    ChunkAnswer::Done => Ok(total),
                    ChunkAnswer::Incomplete { persisted } => Err(protocol(
                        Op::Upload,
                        name,
                        format!("last chunk left the object at {persisted} of {total} bytes"),
                    )),
                };
            }
            // More than a chunk is buffered, so this one is not the last.
            let piece = buf.split_to(chunk).freeze();
            let (sent, filled) = futures::future::join(
                self.put_chunk(session, name, offset, piece.clone(), None),
                fill(&mut body, &mut buf, chunk, name),
            )
            .await;
            let persisted = match sent? {
                ChunkAnswer::Incomplete { persisted } => persisted,
                ChunkAnswer::Done => return Err(protocol(Op::Upload, name, "the object completed before its end")),
            };
            eof = filled?;
            let end = offset + piece.len() as u64;
            if persisted < offset || persisted > end {
                return Err(protocol(
                    Op::Upload,
                    name,
                    format!("server holds {persisted} bytes after {offset}..{end}"),
                ));
            }
            if persisted < end {
                // Send again what the server did not keep.
                let mut again = BytesMut::with_capacity(buf.len() + (end - persisted) as usize);
                again.extend_from_slice(&piece[(persisted - offset) as usize..]);
                again.extend_from_slice(&buf);
                buf = again;
            }
            offset = persisted;
        }
    }

    /// Cancels an upload session and removes whatever it may have created; never fails.
    pub(super) async fn abandon(&self, session: &str, name: &str) {
        let req = self.http.delete(session).header(CONTENT_LENGTH, 0);
        if let Ok(req) = self.authorize(req, Op::Delete, name).await {
            // GCS answers 499 to a cancelled session.
            if let Err(e) = req.send().await {
                tracing::debug!(key = name, error = %e, "cancelling an upload session");
            }
        }
        self.delete_quietly(name).await;
    }
}
