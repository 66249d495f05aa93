//! `GET|HEAD /v2/<name>/tags/list[?n=<int>&last=<tag>]` (distribution-spec v1.1.1, "Listing
//! Tags", end-8a and end-8b).
//!
//! Every name has the tags [`TAGS`]: `latest` is the one clients can rely on (other tags
//! select source revisions and are not enumerable). The list is served in the spec's order,
//! "lexical (case-insensitive alphanumeric)" (ties between spellings broken by byte order, so
//! the order is total), and paginated as the spec describes:
//! - `last=<tag>` starts the list after `<tag>` (not included), by that order; `<tag>` need
//!   not be one of ours (a position, not a lookup);
//! - `n=<int>` returns at most `n` tags; when more follow, a `Link: <...>; rel="next"`
//!   header (RFC 8288, which replaced the RFC 5988 the spec names) gives the URL of the next
//!   page, so the page may be shorter than `n` only at the end of the list; `n=0` is an
//!   empty list and never a `Link`;
//! - `n` is decimal digits (a value past any list is the whole list); anything else (`-1`,
//!   `abc`, `+5`, a repeated `n`) is 400. An empty `n=` is no `n`, as in distribution.
//!
//! The spec's error codes have none for a bad query parameter; `UNSUPPORTED` is the nearest.

use super::error::{Code, RegistryError};
use crate::image::ImageName;
use axum::extract::Query;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use std::cmp::Ordering;

/// The tags of every name.
pub const TAGS: &[&str] = &["latest"];

/// The query of a tag-list request.
#[derive(Debug, Default, Deserialize)]
struct Params {
    n: Option<String>,
    last: Option<String>,
}

/// The tag list of `name` (the URI gives the query).
pub fn list(name: &ImageName, uri: &Uri) -> Result<Response, RegistryError> {
    let params = Query::<Params>::try_from_uri(uri).map_err(|e| bad_query(&e.body_text()))?.0;
    let n = match params.n.as_deref() {
        None | Some("") => None,
        Some(n) => Some(count(n).ok_or_else(|| bad_query(&format!("n={n} is not a number of tags")))?),
    };
    let last = params.last.as_deref().filter(|l| !l.is_empty());
    let page = paginate(TAGS, n, last);
    let body = json!({ "name": name.as_str(), "tags": page.tags }).to_string();
    let mut resp = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let (Some(n), Some(after)) = (n, page.next_after) {
        // Names and tags are URL-safe as they are (checked grammars).
        let link = format!("</v2/{name}/tags/list?n={n}&last={after}>; rel=\"next\"");
        resp.headers_mut().insert(header::LINK, HeaderValue::from_str(&link).expect("ASCII"));
    }
    Ok(resp)
}

fn bad_query(why: &str) -> RegistryError {
    RegistryError::new(StatusCode::BAD_REQUEST, Code::Unsupported, format!("bad tag list query: {why}"))
}

/// A count: decimal digits only; past `usize::MAX` it is `usize::MAX`.
fn count(s: &str) -> Option<usize> {
    s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse().unwrap_or(usize::MAX))
}

/// The spec's order: case-insensitive, then by bytes.
fn order(a: &str, b: &str) -> Ordering {
    a.to_ascii_lowercase().cmp(&b.to_ascii_lowercase()).then_with(|| a.cmp(b))
}

/// One page of a tag list.
#[derive(Debug, PartialEq, Eq)]
struct Page<'a> {
    tags: Vec<&'a str>,
    /// The `last` of the next page, when there is one.
    next_after: Option<&'a str>,
}

/// The tags of `all` after `last`, at most `n` of them, in the spec's order.
fn paginate<'a>(all: &[&'a str], n: Option<usize>, last: Option<&str>) -> Page<'a> {
    let mut sorted = all.to_vec();
    sorted.sort_by(|a, b| order(a, b));
    sorted.dedup();
    let rest: Vec<&str> =
        sorted.into_iter().filter(|t| last.is_none_or(|l| order(t, l) == Ordering::Greater)).collect();
    let take = n.unwrap_or(usize::MAX).min(rest.len());
    let next_after = (take < rest.len() && take > 0).then(|| rest[take - 1]);
    Page { tags: rest[..take].to_vec(), next_after }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SET: &[&str] = &["v2", "latest", "Main", "main", "a", "v10", "B"];

    #[test]
    fn orders_case_insensitively() {
        let all = paginate(SET, None, None);
        assert_eq!(all.tags, ["a", "B", "latest", "Main", "main", "v10", "v2"]);
        assert_eq!(all.next_after, None);
    }

    #[test]
    fn pages_follow_each_other_without_gaps_or_repeats() {
        for n in 1..=8 {
            let mut seen = Vec::new();
            let mut last = None;
            loop {
                let page = paginate(SET, Some(n), last);
                assert!(page.tags.len() <= n);
                seen.extend(page.tags.iter().copied());
                match page.next_after {
                    Some(after) => {
                        assert_eq!(page.tags.len(), n, "a page before the end is full");
                        assert_eq!(Some(&after), page.tags.last());
                        last = Some(after);
                    }
                    None => break,
                }
            }
            assert_eq!(seen, paginate(SET, None, None).tags, "n={n}");
        }
    }

    #[test]
    fn n_and_last() {
        assert_eq!(paginate(SET, Some(0), None), Page { tags: vec![], next_after: None });
        assert_eq!(paginate(SET, Some(2), None), Page { tags: vec!["a", "B"], next_after: Some("B") });
        assert_eq!(paginate(SET, Some(2), Some("B")).tags, ["latest", "Main"]);
        assert_eq!(paginate(SET, None, Some("main")).tags, ["v10", "v2"]);
        assert_eq!(paginate(SET, None, Some("lz")).tags, ["Main", "main", "v10", "v2"], "any string is a position");
        assert_eq!(paginate(SET, Some(5), Some("v2")), Page { tags: vec![], next_after: None });
        assert_eq!(paginate(TAGS, Some(1), None), Page { tags: vec!["latest"], next_after: None });
        assert_eq!(paginate(TAGS, None, Some("latest")).tags, Vec::<&str>::new());
    }

    #[test]
    fn counts_are_digits() {
        assert_eq!(count("0"), Some(0));
        assert_eq!(count("12"), Some(12));
        assert_eq!(count("99999999999999999999999999"), Some(usize::MAX));
        for bad in ["-1", "+1", "1.5", "abc", " 1", "1e3"] {
            assert_eq!(count(bad), None, "{bad:?}");
        }
    }
}
