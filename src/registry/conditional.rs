//! Conditional requests (RFC 9110 §13) on blobs and manifests.
//!
//! Everything served here is content-addressed: its one validator is a strong `ETag`, the
//! quoted digest, which changes exactly when the bytes do. There is no `Last-Modified`, so
//! `If-Modified-Since` and `If-Unmodified-Since` are ignored (§13.1.3, §13.1.4: a recipient
//! ignores them without a modification date), and an `If-Range` holding a date is false
//! (§13.1.5).
//!
//! The order is §13.2.2's, for GET and HEAD:
//! 1. `If-Match`: true if a member is `*` or strongly matches the ETag (`W/` tags never do);
//!    false answers 412 (Precondition Failed).
//! 2. `If-None-Match`: false if a member is `*` or weakly matches the ETag (`W/"x"` matches
//!    `"x"`); false answers 304 (Not Modified), with `ETag` and no body.
//! 3. `If-Range` (only with a `Range`, see [`if_range_holds`]): false serves the whole
//!    representation with 200 instead of the range.
//!
//! A member that is no entity-tag (an unquoted digest, say) matches nothing: a broken
//! `If-Match` fails (412) rather than serve something the client did not ask for, a broken
//! `If-None-Match` is a plain GET.

use super::error::{Code, RegistryError};
use crate::digest::Digest;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

/// What the preconditions of a request say about answering it.
#[derive(Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Answer as if there were none.
    Proceed,
    /// 304: the client has this representation.
    NotModified,
    /// 412: the client wants another one.
    Failed,
}

/// Steps 1–4 of §13.2.2 for a GET or HEAD of the representation of `digest`.
pub fn evaluate(headers: &HeaderMap, digest: &Digest) -> Precondition {
    let etag = digest.etag();
    if let Some(members) = members(headers, header::IF_MATCH)
        && !members.iter().any(|m| m.matches_strongly(&etag))
    {
        return Precondition::Failed;
    }
    if let Some(members) = members(headers, header::IF_NONE_MATCH)
        && members.iter().any(|m| m.matches_weakly(&etag))
    {
        return Precondition::NotModified;
    }
    Precondition::Proceed
}

/// §13.1.5: an `If-Range` holds only when it is one entity-tag strongly matching the
/// representation's; with a date, a weak tag or anything else, the range is not served.
pub fn if_range_holds(headers: &HeaderMap, digest: &Digest) -> bool {
    match headers.get(header::IF_RANGE) {
        None => true,
        Some(value) => match parse(value).as_slice() {
            [Member::Tag { weak: false, opaque }] => *opaque == digest.etag().as_bytes(),
            _ => false,
        },
    }
}

/// The 304 answer: the validator and digest, no body. `Content-Length` is set to the length
/// a 200 would have had, the one value §8.6 allows in a 304, because axum would otherwise
/// add `0`; hyper leaves it off the wire anyway.
pub fn not_modified(digest: &Digest, len: u64) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::NOT_MODIFIED;
    let h = resp.headers_mut();
    h.insert(header::ETAG, digest.etag());
    h.insert("Docker-Content-Digest", digest.header_value());
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

/// The 412 answer. The spec's error codes have none for a failed precondition;
/// `UNSUPPORTED` is the nearest, the status says what happened.
pub fn failed(what: &str, digest: &Digest) -> RegistryError {
    RegistryError::new(
        StatusCode::PRECONDITION_FAILED,
        Code::Unsupported,
        format!("If-Match names no version of this {what}: its ETag is \"{digest}\""),
    )
}

/// One member of an `If-Match` / `If-None-Match` list.
#[derive(Debug, PartialEq, Eq)]
enum Member<'a> {
    Any,
    /// `opaque` with its quotes, as the ETag is sent.
    Tag {
        weak: bool,
        opaque: &'a [u8],
    },
    /// Not an entity-tag: matches nothing.
    Invalid,
}

impl Member<'_> {
    fn matches_strongly(&self, etag: &HeaderValue) -> bool {
        match self {
            Member::Any => true,
            Member::Tag { weak, opaque } => !weak && *opaque == etag.as_bytes(),
            Member::Invalid => false,
        }
    }

    fn matches_weakly(&self, etag: &HeaderValue) -> bool {
        match self {
            Member::Any => true,
            Member::Tag { opaque, .. } => *opaque == etag.as_bytes(),
            Member::Invalid => false,
        }
    }
}

/// The members of every line of header `name`; `None` without the header.
fn members(headers: &HeaderMap, name: header::HeaderName) -> Option<Vec<Member<'_>>> {
    let mut lines = headers.get_all(name).iter().peekable();
    lines.peek()?;
    Some(lines.flat_map(parse).collect())
}

/// `*` or a comma-separated list of entity-tags (`"x"`, `W/"x"`); a tag's opaque part may
/// itself hold commas. Parsing stops at the first thing that is neither, which is `Invalid`.
fn parse(value: &HeaderValue) -> Vec<Member<'_>> {
    let bytes = value.as_bytes();
    let mut members = Vec::new();
    let mut i = 0;
    loop {
        while i < bytes.len() && matches!(bytes[i], b' ' | b'\t' | b',') {
            i += 1;
        }
        if i == bytes.len() {
            return members;
        }
        if bytes[i] == b'*' {
            members.push(Member::Any);
            i += 1;
            continue;
        }
        let weak = bytes[i..].starts_with(b"W/");
        let start = if weak { i + 2 } else { i };
        let end = (bytes.get(start) == Some(&b'"'))
            .then(|| bytes[start + 1..].iter().position(|&b| b == b'"'))
            .flatten()
            .map(|close| start + 1 + close + 1);
        let Some(end) = end else {
            members.push(Member::Invalid);
            return members;
        };
        members.push(Member::Tag { weak, opaque: &bytes[start..end] });
        i = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn parses_entity_tag_lists() {
        let v = HeaderValue::from_static(r#""a", W/"b,c" ,* "d"x"#);
        assert_eq!(
            parse(&v),
            [
                Member::Tag { weak: false, opaque: b"\"a\"" },
                Member::Tag { weak: true, opaque: b"\"b,c\"" },
                Member::Any,
                Member::Tag { weak: false, opaque: b"\"d\"" },
                Member::Invalid,
            ]
        );
        assert_eq!(parse(&HeaderValue::from_static("sha256:abc")), [Member::Invalid]);
        assert_eq!(parse(&HeaderValue::from_static("\"open")), [Member::Invalid]);
        assert_eq!(parse(&HeaderValue::from_static(" , ")), []);
    }

    #[test]
    fn evaluates_in_rfc_order() {
        use Precondition::*;
        let d = Digest::of(b"x");
        let tag = format!("\"{d}\"");
        let weak = format!("W/{tag}");
        let (im, inm) = (header::IF_MATCH, header::IF_NONE_MATCH);
        let cases: &[(&[(header::HeaderName, &str)], Precondition)] = &[
            (&[], Proceed),
            (&[(im.clone(), &tag)], Proceed),
            (&[(im.clone(), "*")], Proceed),
            (&[(im.clone(), "\"other\", \"more\""), (im.clone(), &tag)], Proceed),
            (&[(im.clone(), "\"other\"")], Failed),
            (&[(im.clone(), &weak)], Failed),
            (&[(im.clone(), &d.to_string())], Failed),
            (&[(inm.clone(), &tag)], NotModified),
            (&[(inm.clone(), &weak)], NotModified),
            (&[(inm.clone(), "*")], NotModified),
            (&[(inm.clone(), "\"other\"")], Proceed),
            (&[(inm.clone(), "garbage")], Proceed),
            // If-Match is evaluated first.
            (&[(im.clone(), "\"other\""), (inm.clone(), &tag)], Failed),
            (&[(im.clone(), &tag), (inm.clone(), &tag)], NotModified),
            // No Last-Modified: dates are ignored.
            (&[(header::IF_MODIFIED_SINCE, "Sat, 01 Jan 2000 00:00:00 GMT")], Proceed),
            (&[(header::IF_UNMODIFIED_SINCE, "Sat, 01 Jan 2000 00:00:00 GMT")], Proceed),
        ];
        for (pairs, expected) in cases {
            assert_eq!(&evaluate(&headers(pairs), &d), expected, "{pairs:?}");
        }
    }

    #[test]
    fn if_range_needs_a_strong_match() {
        let d = Digest::of(b"x");
        let holds = |v: &str| if_range_holds(&headers(&[(header::IF_RANGE, v)]), &d);
        assert!(if_range_holds(&HeaderMap::new(), &d));
        assert!(holds(&format!("\"{d}\"")));
        assert!(!holds(&format!("W/\"{d}\"")));
        assert!(!holds("\"other\""));
        assert!(!holds(&d.to_string()));
        assert!(!holds("Sat, 01 Jan 2000 00:00:00 GMT"));
        assert!(!holds(&format!("\"{d}\", \"{d}\"")));
    }
}
