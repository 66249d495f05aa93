//! Counters an operator (and the test suite) reads at `GET /metrics`, in Prometheus' text
//! format: how often Nix and git ran, how many images and layers were built, how manifest
//! requests were answered ([`crate::cache`] defines the `cache` labels), how many layers
//! came from the build cache. They make "one build for ten concurrent pulls", "no layer is
//! rebuilt" and "a warm pull runs nothing" observable from outside the process. Gauges show
//! the Nix work bound (NIXERY_MAX_NIX_JOBS): Nix processes running now, images waiting for a
//! slot, and the seconds spent waiting so far.

use crate::auth::Refusal;
use crate::cache::Outcome;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

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

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

/// A value that goes up and down.
#[derive(Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// Adds one until the returned guard is dropped.
    pub fn hold(&self) -> GaugeHold<'_> {
        self.0.fetch_add(1, Ordering::Relaxed);
        GaugeHold(self)
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One unit of a [`Gauge`], given back when dropped.
pub struct GaugeHold<'a>(&'a Gauge);

impl Drop for GaugeHold<'_> {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A total of seconds (kept in microseconds).
#[derive(Default)]
pub struct Seconds(AtomicU64);

impl Seconds {
    pub fn add(&self, d: Duration) {
        self.0.fetch_add(d.as_micros().try_into().unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn get(&self) -> f64 {
        self.0.load(Ordering::Relaxed) as f64 / 1e6
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
    /// Nix processes running now.
    pub nix_processes: Gauge,
    /// NIXERY_MAX_NIX_JOBS.
    pub nix_jobs_limit: Gauge,
    /// Images waiting for a Nix job slot now.
    pub nix_waiting: Gauge,
    /// Time images spent waiting for a Nix job slot.
    pub nix_wait: Seconds,
    /// Requests refused by authentication, access, package policy or build rate, by
    /// [`Refusal`] (indexed as [`Refusal::ALL`]).
    pub refusals: [Counter; 5],
    /// Garbage collections run by this replica ([`crate::gc::periodic`]), those that failed,
    /// and what they deleted.
    pub gc_runs: Counter,
    pub gc_failures: Counter,
    pub gc_objects_deleted: Counter,
    pub gc_bytes_deleted: Counter,
    /// Images this replica waited for while another replica built them ([`crate::lease`]).
    pub builds_elsewhere: Counter,
    /// Collected manifests and blobs made again from their recipes.
    pub remade: Counter,
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

    /// Counts a refused request.
    pub fn refused(&self, why: Refusal) {
        self.refusals[why as usize].inc();
    }

    /// Requests refused for `why` so far.
    pub fn refusals(&self, why: Refusal) -> u64 {
        self.refusals[why as usize].get()
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
        let lifecycle: [(&str, &str, &Counter); 6] = [
            ("nixery_gc_runs_total", "Garbage collections this replica ran.", &self.gc_runs),
            ("nixery_gc_failures_total", "Garbage collections that failed.", &self.gc_failures),
            ("nixery_gc_objects_deleted_total", "Objects garbage collection deleted.", &self.gc_objects_deleted),
            ("nixery_gc_bytes_deleted_total", "Bytes garbage collection reclaimed.", &self.gc_bytes_deleted),
            (
                "nixery_builds_elsewhere_total",
                "Images this replica waited for while another replica built them.",
                &self.builds_elsewhere,
            ),
            ("nixery_remade_total", "Collected manifests and blobs made again from their recipes.", &self.remade),
        ];
        let gauges: [(&str, &str, &Gauge); 3] = [
            ("nixery_nix_processes", "Nix processes running now.", &self.nix_processes),
            ("nixery_nix_jobs_limit", "Most Nix processes at a time (NIXERY_MAX_NIX_JOBS).", &self.nix_jobs_limit),
            ("nixery_nix_waiting", "Images waiting for a Nix job slot now.", &self.nix_waiting),
        ];
        let mut out = String::new();
        for (name, help, c) in counters.into_iter().chain(lifecycle) {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", c.get());
        }
        labelled(
            &mut out,
            "nixery_manifest_requests_total",
            "Manifest requests by tag answered: warm (memory), stale (memory after re-resolving the tag), stored (storage), cold (built).",
            "cache",
            Outcome::ALL.map(|o| (o.label(), self.manifest_requests(o))),
        );
        labelled(
            &mut out,
            "nixery_refusals_total",
            "Requests refused: credentials (401, credentials that do not hold), anonymous (401, credentials needed), access (403, no right to the name), package_policy (403), build_rate (429).",
            "reason",
            Refusal::ALL.map(|r| (r.label(), self.refusals(r))),
        );
        for (name, help, g) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}", g.get());
        }
        let name = "nixery_nix_wait_seconds_total";
        let help = "Seconds images spent waiting for a Nix job slot.";
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {:.6}", self.nix_wait.get());
        out
    }
}

/// A counter with one sample per value of `label`.
fn labelled<const N: usize>(out: &mut String, name: &str, help: &str, label: &str, samples: [(&str, u64); N]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (value, count) in samples {
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {count}");
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
    fn outcomes_and_refusals_index_their_counters() {
        for (i, outcome) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome as usize, i);
        }
        for (i, why) in Refusal::ALL.into_iter().enumerate() {
            assert_eq!(why as usize, i);
        }
        let m = Metrics::default();
        m.refused(Refusal::Rate);
        let text = m.render();
        assert!(text.lines().any(|l| l == r#"nixery_refusals_total{reason="build_rate"} 1"#), "{text}");
        assert!(text.lines().any(|l| l == r#"nixery_refusals_total{reason="credentials"} 0"#), "{text}");
    }

    #[test]
    fn gauges_go_down_when_their_holds_end() {
        let m = Metrics::default();
        let one = m.nix_processes.hold();
        let two = m.nix_processes.hold();
        m.nix_wait.add(Duration::from_millis(1500));
        let text = m.render();
        assert!(text.lines().any(|l| l == "nixery_nix_processes 2"), "{text}");
        assert!(text.lines().any(|l| l == "nixery_nix_wait_seconds_total 1.500000"), "{text}");
        assert!(text.contains("# TYPE nixery_nix_processes gauge"), "{text}");
        drop((one, two));
        assert!(m.render().lines().any(|l| l == "nixery_nix_processes 0"));
    }
}
