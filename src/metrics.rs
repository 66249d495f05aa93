//! Counters an operator (and the test suite) reads at `GET /metrics`, in Prometheus' text
//! format: how often Nix ran, how many images and layers were built, how many layers came
//! from the build cache. They make "one build for ten concurrent pulls" and "no layer is
//! rebuilt" observable from outside the process.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing counter.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// All counters of the server.
#[derive(Default)]
pub struct Metrics {
    pub nix_invocations: Counter,
    pub image_builds: Counter,
    pub layers_built: Counter,
    pub layer_cache_hits: Counter,
    pub manifest_cache_hits: Counter,
}

impl Metrics {
    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let counters: [(&str, &str, &Counter); 5] = [
            ("nixery_nix_invocations_total", "Nix commands run.", &self.nix_invocations),
            (
                "nixery_image_builds_total",
                "Images built (single-flight: one per concurrent group of requests).",
                &self.image_builds,
            ),
            ("nixery_layers_built_total", "Layer archives written.", &self.layers_built),
            (
                "nixery_layer_cache_hits_total",
                "Layers found in the build cache instead of being built.",
                &self.layer_cache_hits,
            ),
            (
                "nixery_manifest_cache_hits_total",
                "Manifests served from the manifest cache.",
                &self.manifest_cache_hits,
            ),
        ];
        let mut out = String::new();
        for (name, help, c) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", c.get());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_current_values() {
        let m = Metrics::default();
        m.nix_invocations.inc();
        m.nix_invocations.inc();
        let text = m.render();
        assert!(text.lines().any(|l| l == "nixery_nix_invocations_total 2"), "{text}");
        assert!(text.lines().any(|l| l == "nixery_layers_built_total 0"), "{text}");
    }
}
