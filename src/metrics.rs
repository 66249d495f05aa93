//! Counters an operator (and the test suite) reads at `GET /metrics`, in Prometheus' text
//! format: how often Nix and git ran, how many images and layers were built, how manifest
//! requests were answered ([`crate::cache`] defines the `cache` labels), how many layers
//! came from the build cache. They make "one build for ten concurrent pulls", "no layer is
//! rebuilt" and "a warm pull runs nothing" observable from outside the process.

use crate::cache::Outcome;
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
    /// Manifests served without building (memory or storage).
    pub manifest_cache_hits: Counter,
    /// Manifest requests by tag answered, by [`Outcome`] (indexed as [`Outcome::ALL`]).
    pub manifest_requests: [Counter; 4],
    pub source_resolutions: Counter,
    pub source_resolution_failures: Counter,
}

impl Metrics {
    /// Counts a manifest request by tag answered with `outcome`.
    pub fn manifest_served(&self, outcome: Outcome) {
        self.manifest_requests[outcome as usize].inc();
        if outcome != Outcome::Cold {
            self.manifest_cache_hits.inc();
        }
    }

    /// Manifest requests answered with `outcome` so far.
    pub fn manifest_requests(&self, outcome: Outcome) -> u64 {
        self.manifest_requests[outcome as usize].get()
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let counters: [(&str, &str, &Counter); 7] = [
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
                "Manifests served from the manifest cache (memory or storage) without building.",
                &self.manifest_cache_hits,
            ),
            (
                "nixery_source_resolutions_total",
                "Source resolutions run (git ls-remote calls, local package set re-reads).",
                &self.source_resolutions,
            ),
            (
                "nixery_source_resolution_failures_total",
                "Source resolutions that failed.",
                &self.source_resolution_failures,
            ),
        ];
        let mut out = String::new();
        for (name, help, c) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", c.get());
        }
        let name = "nixery_manifest_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} Manifest requests by tag answered: warm (memory), stale (memory after re-resolving the tag), stored (storage), cold (built).\n# TYPE {name} counter"
        );
        for outcome in Outcome::ALL {
            let _ = writeln!(out, "{name}{{cache=\"{}\"}} {}", outcome.label(), self.manifest_requests(outcome));
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
        m.manifest_served(Outcome::Stale);
        m.manifest_served(Outcome::Cold);
        let text = m.render();
        assert!(text.lines().any(|l| l == "nixery_nix_invocations_total 2"), "{text}");
        assert!(text.lines().any(|l| l == "nixery_layers_built_total 0"), "{text}");
        assert!(text.lines().any(|l| l == r#"nixery_manifest_requests_total{cache="stale"} 1"#), "{text}");
        assert!(text.lines().any(|l| l == r#"nixery_manifest_requests_total{cache="warm"} 0"#), "{text}");
        assert!(text.lines().any(|l| l == "nixery_manifest_cache_hits_total 1"), "{text}");
    }

    #[test]
    fn outcomes_index_their_counters() {
        for (i, outcome) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome as usize, i);
        }
    }
}
