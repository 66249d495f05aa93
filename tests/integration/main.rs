//! The integration tests, as one test binary: each module is a suite, `harness` is what they
//! share. One binary links once (six used to link the server library and the harness six
//! times) and lets the compiler see which harness helpers no suite uses.
//!
//! Run one suite with `cargo nextest run --profile ci -E 'test(/^api::/)'`, one test by a
//! part of its name (`cargo nextest run --profile ci pulls_through_redirects`).

mod harness;

mod access_basic;
mod access_token;
mod api;
mod binary_cache;
mod build_policy;
mod caching;
mod client_errors;
mod clients;
mod compression;
mod conformance;
mod container_image;
mod flakes;
mod fleet;
mod gc;
mod hardening;
mod http_details;
mod layer_compression;
mod limits;
mod nix_failures;
mod object_storage;
mod platforms;
mod popcount;
mod popularity;
mod sources;
mod storage_backends;
mod users;
mod verification;
mod web;
