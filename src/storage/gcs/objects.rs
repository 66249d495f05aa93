//! Storage over time and across replicas on Cloud Storage: listings, batched deletes and
//! small objects written under a generation precondition.
//!
//! - Listing: `GET /storage/v1/b/<bucket>/o?prefix=…&maxResults=1000`, followed by each
//!   answer's `nextPageToken`; one page at a time, fetched as the stream is read.
//! - Deleting: the JSON API's batch endpoint, `POST /batch/storage/v1` with a
//!   `multipart/mixed` body of up to 100 `DELETE` requests, whose answer is a
//!   `multipart/mixed` body of as many HTTP answers, in order:
//!
//!   ```text
//!   --batch_x
//!   Content-Type: application/http
//!   Content-ID: <response-1>
//!
//!   HTTP/1.1 204 No Content
//!   ```
//!
//!   A part answered 404 was gone already; one answered 429 or 5xx is deleted again on its
//!   own (with the retries of every idempotent call).
//! - Conditional writes: a single-request `uploadType=multipart` upload with
//!   `ifGenerationMatch=0` (create) or `=<generation>` (replace), answered 412 when the
//!   precondition fails. (fake-gcs-server honours the precondition on this upload type
//!   only, and a lease is a few hundred bytes anyway.) Reads give the generation in
//!   `X-Goog-Generation`.

use super::*;
use crate::storage::{Generation, Listing, ObjectInfo, Prefix, Versioned};
use futures::stream;

/// Objects per listing page (the API's maximum).
const PAGE: u32 = 1000;
/// Requests per batch request (the API's maximum).
const BATCH: usize = 100;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListPage {
    #[serde(default)]
    items: Vec<Listed>,
    #[serde(default)]
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct Listed {
    name: String,
    /// A decimal string in the JSON API.
    size: String,
    /// RFC 3339, UTC.
    updated: String,
}

#[derive(Deserialize)]
struct Written {
    /// A decimal string in the JSON API.
    generation: String,
}

impl Listed {
    fn info(self, op: Op) -> Result<ObjectInfo, StorageError> {
        let size = self.size.parse().map_err(|_| protocol(op, &self.name, format!("size {:?}", self.size)))?;
        let modified = humantime::parse_rfc3339_weak(&self.updated)
            .map_err(|e| protocol(op, &self.name, format!("updated {:?}: {e}", self.updated)))?;
        Ok(ObjectInfo { key: ObjectKey::stored(self.name), size, modified })
    }
}

/// Where a listing is: at the next page (its token, none for the first), or done.
enum Cursor {
    Next(Option<String>),
    Done,
}

impl Inner {
    /// One page of the objects under `prefix`.
    async fn list_page(&self, prefix: Prefix, token: Option<&str>) -> Result<ListPage, StorageError> {
        let mut url = format!(
            "{}/storage/v1/b/{}/o?prefix={}&maxResults={PAGE}&fields=items(name,size,updated),nextPageToken",
            self.base,
            encode_component(&self.bucket),
            encode_component(prefix.as_str())
        );
        if let Some(token) = token {
            url.push_str(&format!("&pageToken={}", encode_component(token)));
        }
        let key = prefix.as_str();
        let resp = self.send(Op::List, key, || self.http.get(&url)).await?;
        if resp.status() != StatusCode::OK {
            return Err(status_error(Op::List, key, resp).await);
        }
        let body = resp.bytes().await.map_err(transport(Op::List, key))?;
        serde_json::from_slice(&body).map_err(|e| protocol(Op::List, key, format!("object listing: {e}")))
    }

    pub(super) fn list(self: Arc<Self>, prefix: Prefix) -> Listing {
        let pages = stream::try_unfold(Cursor::Next(None), move |cursor| {
            let inner = self.clone();
            async move {
                let Cursor::Next(token) = cursor else { return Ok(None) };
                let page = inner.list_page(prefix, token.as_deref()).await?;
                let next = match page.next_page_token {
                    Some(t) if !t.is_empty() => Cursor::Next(Some(t)),
                    _ => Cursor::Done,
                };
                let objects: Vec<Result<ObjectInfo, StorageError>> =
                    page.items.into_iter().map(|o| o.info(Op::List)).collect();
                Ok(Some((stream::iter(objects), next)))
            }
        });
        Box::pin(pages.try_flatten())
    }

    pub(super) async fn info(&self, name: &str) -> Result<Option<ObjectInfo>, StorageError> {
        let object = self.metadata::<Listed>(name, "name,size,updated").await?;
        object.map(|o| o.info(Op::Stat)).transpose()
    }

    /// Deletes `names`, [`BATCH`] per request.
    pub(super) async fn delete_all(&self, names: &[&str]) -> Result<(), StorageError> {
        for batch in names.chunks(BATCH) {
            let statuses = self.delete_batch(batch).await?;
            for (name, status) in batch.iter().zip(statuses) {
                match status {
                    200..=299 | 404 => {}
                    s if s == 429 || s >= 500 => self.delete(name).await?,
                    s => {
                        let message = format!("a batched delete was answered {s}");
                        return Err(GcsError::Status { status: s, message }.at(Op::Delete, name));
                    }
                }
            }
        }
        Ok(())
    }

    /// One batch request deleting `names`: the status of each, in order.
    async fn delete_batch(&self, names: &[&str]) -> Result<Vec<u16>, StorageError> {
        let boundary = format!("nixery-batch-{}", random_hex());
        let mut body = String::new();
        for (i, name) in names.iter().enumerate() {
            let path = format!("/storage/v1/b/{}/o/{}", encode_component(&self.bucket), encode_component(name));
            body.push_str(&format!(
                "--{boundary}\r\nContent-Type: application/http\r\nContent-ID: <{}>\r\n\r\nDELETE {path} HTTP/1.1\r\n\r\n\r\n",
                i + 1
            ));
        }
        body.push_str(&format!("--{boundary}--\r\n"));
        let url = format!("{}/batch/storage/v1", self.base);
        let key = names.first().copied().unwrap_or("objects");
        let content_type = format!("multipart/mixed; boundary={boundary}");
        let resp = self
            .send(Op::Delete, key, || {
                self.http.post(&url).header(CONTENT_TYPE, content_type.as_str()).body(body.clone())
            })
            .await?;
        if resp.status() != StatusCode::OK {
            return Err(status_error(Op::Delete, key, resp).await);
        }
        let answer_type = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let text = resp.text().await.map_err(transport(Op::Delete, key))?;
        let statuses = batch_statuses(&answer_type, &text)
            .ok_or_else(|| protocol(Op::Delete, key, "unreadable answer to a batch request"))?;
        if statuses.len() != names.len() {
            let detail = format!("{} answers to {} batched deletes", statuses.len(), names.len());
            return Err(protocol(Op::Delete, key, detail));
        }
        Ok(statuses)
    }

    /// A single-request upload of `bytes` to `name` if its generation is `generation` (`0`:
    /// if there is none): the new generation, or `None` if the precondition failed.
    pub(super) async fn write_if(
        &self,
        name: &str,
        bytes: Bytes,
        generation: &str,
    ) -> Result<Option<Generation>, StorageError> {
        let url = format!(
            "{}/upload/storage/v1/b/{}/o?uploadType=multipart&name={}&ifGenerationMatch={}",
            self.base,
            encode_component(&self.bucket),
            encode_component(name),
            encode_component(generation)
        );
        let boundary = format!("nixery-{}", random_hex());
        let metadata = serde_json::json!({ "name": name, "contentType": "application/json" }).to_string();
        let mut body = BytesMut::new();
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n--{boundary}\r\nContent-Type: application/json\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(&bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let body = body.freeze();
        let content_type = format!("multipart/related; boundary={boundary}");
        let resp = self
            .send(Op::Upload, name, || {
                self.http.post(&url).header(CONTENT_TYPE, content_type.as_str()).body(body.clone())
            })
            .await?;
        match resp.status() {
            StatusCode::PRECONDITION_FAILED | StatusCode::NOT_FOUND => Ok(None),
            StatusCode::OK => {
                let answer = resp.bytes().await.map_err(transport(Op::Upload, name))?;
                let written: Written = serde_json::from_slice(&answer)
                    .map_err(|e| protocol(Op::Upload, name, format!("upload answer: {e}")))?;
                Ok(Some(Generation::new(written.generation)))
            }
            _ => Err(status_error(Op::Upload, name, resp).await),
        }
    }

    pub(super) async fn read_versioned(&self, name: &str) -> Result<Option<Versioned>, StorageError> {
        let url = format!("{}?alt=media", self.object_url(name));
        let resp = self.send(Op::Read, name, || self.http.get(&url)).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::OK => {
                let generation = resp.headers().get("x-goog-generation").and_then(|v| v.to_str().ok());
                let generation = generation
                    .map(|g| Generation::new(g.to_owned()))
                    .ok_or_else(|| protocol(Op::Read, name, "no X-Goog-Generation"))?;
                let bytes = resp.bytes().await.map_err(transport(Op::Read, name))?;
                Ok(Some(Versioned { bytes, generation }))
            }
            _ => Err(status_error(Op::Read, name, resp).await),
        }
    }
}

/// 64 random bits in hex, for multipart boundaries.
fn random_hex() -> String {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).expect("the operating system's random number generator");
    hex::encode(random)
}

/// The status of each HTTP answer in a batch answer (see the module docs), in order.
fn batch_statuses(content_type: &str, body: &str) -> Option<Vec<u16>> {
    let boundary = content_type.split(';').find_map(|p| p.trim().strip_prefix("boundary="))?;
    let boundary = boundary.trim_matches('"');
    let delimiter = format!("--{boundary}");
    let mut statuses = Vec::new();
    for part in body.split(delimiter.as_str()).skip(1) {
        if part.starts_with("--") {
            break; // the closing delimiter
        }
        let status_line = part.lines().find(|l| l.starts_with("HTTP/"))?;
        statuses.push(status_line.split_whitespace().nth(1)?.parse().ok()?);
    }
    Some(statuses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_answers_give_one_status_per_part_in_order() {
        let body = "--batch_x\r\nContent-Type: application/http\r\nContent-ID: <response-1>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n\r\n--batch_x\r\nContent-Type: application/http\r\nContent-ID: <response-2>\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\r\n{\"error\":{}}\r\n--batch_x\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 503 Service Unavailable\r\n\r\n--batch_x--\r\n";
        assert_eq!(batch_statuses("multipart/mixed; boundary=batch_x", body), Some(vec![204, 404, 503]));
        assert_eq!(batch_statuses("multipart/mixed; boundary=\"batch_x\"", body), Some(vec![204, 404, 503]));
        assert_eq!(batch_statuses("application/json", body), None, "no boundary");
        assert_eq!(
            batch_statuses("multipart/mixed; boundary=batch_x", "--batch_x\r\n\r\nnot http\r\n--batch_x--"),
            None
        );
    }
}
