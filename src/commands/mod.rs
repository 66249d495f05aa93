//! What the `nixery` binary does: serve the registry (default), `popcount`, `layers`, `gc`.

pub mod gc;
pub mod layers;
pub mod popcount;
pub mod serve;
