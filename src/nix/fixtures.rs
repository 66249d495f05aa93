//! What the unit tests of the modules that read Nix share: store paths and the machine as
//! Nix 2.26.3 named them here, and short ways to make paths and names.

use super::StorePath;
use super::refusal::Machine;
use crate::image::PackageName;
use std::collections::BTreeSet;

pub const FRESH_DRV: &str = "/nix/store/5q5a1dlf9vd21zpxz0izwnxbc2m8xj35-fresh-x22582.drv";
pub const BROKEN_DRV: &str = "/nix/store/3z5b87fakr8m7xlizalp43x4w7lbhmw2-broken-1.0.drv";
pub const NEEDS_BROKEN_DRV: &str = "/nix/store/8z0sc8piyyhnd4jkaz1gxvl0p4vgyvqm-needs-broken.drv";
pub const FRESH: &str = "/nix/store/xcr84izm41f5556r7lcw9qx7rgqqyay2-fresh-s9x32430";
pub const BUSYBOX: &str = "/nix/store/szb2jzkgvqlw9x4a3jr56dx0rdp1aiam-busybox-1.35.0";
pub const NATIVE: &str = "/nix/store/0cldwzk2hwkdgh7wj8500bhpd78csxs4-native-1.0.drv";
/// This machine's `system-features`, as Nix lists them.
pub const HOST_FEATURES: &str = "benchmark, big-parallel, kvm, nixos-test, uid-range";

/// `/nix/store/aaa…-<name>`.
pub fn sp(name: &str) -> StorePath {
    StorePath::parse(&format!("/nix/store/{}-{name}", "a".repeat(32))).unwrap()
}

/// A whole store path, parsed.
pub fn parsed(path: &str) -> StorePath {
    StorePath::parse(path).unwrap()
}

pub fn set(paths: &[&str]) -> BTreeSet<StorePath> {
    paths.iter().map(|p| parsed(p)).collect()
}

pub fn name(s: &str) -> PackageName {
    PackageName::parse(s).unwrap()
}

pub fn machine(system: &str, features: &[&str]) -> Machine {
    Machine { system: Some(system.into()), features: Some(features.iter().map(|f| f.to_string()).collect()) }
}

/// This machine as Nix describes itself.
pub fn host() -> Machine {
    machine("x86_64-linux", &HOST_FEATURES.split(", ").collect::<Vec<_>>())
}
