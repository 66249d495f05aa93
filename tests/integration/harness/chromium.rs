//! Headless Chromium (Debian's `chromium`, installed by scripts/setup): the DOM of a page
//! after the browser parsed it and ran whatever script it would run, and screenshots.
//!
//! Each call is one browser launch (about 3 s on two busy cores, so tests keep them few),
//! with a fresh profile directory and everything that would reach the network switched off.
//! Screenshots go to [`SCREENSHOTS`], which is kept after the test (under `target/`, so it
//! is never committed): they are the artifacts to look at when a page test fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::process::{require_tool, run_checked};
use super::temp_dir;

/// Where screenshots are saved: `target/ui-screenshots/` of the crate.
pub const SCREENSHOTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/ui-screenshots");
/// Longest one browser run may take.
const TIMEOUT: Duration = Duration::from_secs(120);
/// The window a screenshot shows: a laptop's width, tall enough for a whole page.
const WINDOW: &str = "1280,1600";

fn chromium(args: &[&str], url: &str) -> String {
    require_tool(&["chromium"]);
    let profile = temp_dir("chromium");
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args)
    .arg(url);
    run_checked(&mut cmd, TIMEOUT).unwrap_or_else(|e| panic!("chromium failed on {url}: {e}"))
}

/// The page's DOM as Chromium serialises it once loaded (scripts, if any, have run).
pub fn dump_dom(url: &str) -> String {
    chromium(&["--dump-dom"], url)
}

/// Saves a screenshot of `url` as `<SCREENSHOTS>/<name>` and returns its path.
pub fn screenshot(url: &str, name: &str) -> PathBuf {
    std::fs::create_dir_all(SCREENSHOTS).expect("create the screenshot directory");
    let file = Path::new(SCREENSHOTS).join(name);
    let _ = std::fs::remove_file(&file);
    chromium(&[&format!("--screenshot={}", file.display()), &format!("--window-size={WINDOW}")], url);
    let png = std::fs::read(&file).unwrap_or_else(|e| panic!("no screenshot of {url} at {}: {e}", file.display()));
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "not a screenshot of a page: {} bytes", png.len());
    file
}
