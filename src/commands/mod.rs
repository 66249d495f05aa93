//! What the `nixery` binary does: serve the registry (default), `popcount`, `layers`.

pub mod layers;
pub mod popcount;
pub mod serve;
