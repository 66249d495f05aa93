//! `GET|HEAD /v2/<name>/referrers/<digest>[?artifactType=<type>]` (distribution-spec v1.1.1,
//! "Listing Referrers", end-12a and end-12b).
//!
//! Referrers are manifests pushed with a `subject` (signatures, SBOMs). This registry takes
//! no pushes, so no manifest has any: every request is answered as the spec says a registry
//! answers a query with no matching referrers, 200 with an empty image index
//! (`application/vnd.oci.image.index.v1+json`, `"manifests": []`). That also tells clients
//! the API is supported, so they do not fall back to the referrers tag schema (the spec:
//! a registry that supports the API "MUST NOT return a 404"); an invalid digest is 400.
//!
//! An `artifactType` filter is applied (to nothing) and said so with
//! `OCI-Filters-Applied: artifactType`: the empty list is exactly the filtered list.

use axum::extract::Query;
use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use oci_spec::image::{ImageIndexBuilder, MediaType};

/// The (empty) referrers list; the URI's query tells whether a filter was asked for.
pub fn list(uri: &Uri) -> Response {
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::new())
        .build()
        .expect("index fields are set");
    let body = serde_json::to_vec(&index).expect("an index serialises");
    let content_type = HeaderValue::from_str(MediaType::ImageIndex.as_ref()).expect("ASCII");
    let mut resp = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let params = Query::<Vec<(String, String)>>::try_from_uri(uri).map(|q| q.0).unwrap_or_default();
    let filtered = params.iter().any(|(k, _)| k == "artifactType");
    if filtered {
        resp.headers_mut().insert("OCI-Filters-Applied", HeaderValue::from_static("artifactType"));
    }
    resp
}
