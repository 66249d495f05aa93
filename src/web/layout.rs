//! What every page shares: the document around the content (title, viewport, the one inline
//! stylesheet), the HTML answer's headers, and how sizes, times and a flake's lock are
//! written for people.

use crate::pkgsource::{FlakeLock, LockedFlake};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use std::time::{Duration, SystemTime};

/// The stylesheet of every page: inline (no external assets, works offline), readable on a
/// phone (fluid width, tables scroll sideways instead of squeezing), light and dark.
const STYLE: &str = r#"
:root { color-scheme: light dark; --fg: #1d232a; --muted: #5b6672; --line: #d5dbe1; --bg: #fff;
  --panel: #f4f6f8; --bar: #5d8fc9; --shared: #3f9f6b; --bad: #b3261e; --code: #eef1f4; }
@media (prefers-color-scheme: dark) { :root { --fg: #e3e7eb; --muted: #9aa5b1; --line: #38414a;
  --bg: #161a1e; --panel: #1f252b; --bar: #6fa0d8; --shared: #55b583; --bad: #f2817a; --code: #262d34; } }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
header.top { background: var(--panel); border-bottom: 1px solid var(--line); padding: .6rem 1rem; }
header.top a { color: var(--fg); font-weight: 600; text-decoration: none; }
main { max-width: 72rem; margin: 0 auto; padding: 1rem; }
h1 { font-size: 1.5rem; margin: .5rem 0 1rem; overflow-wrap: anywhere; }
h2 { font-size: 1.15rem; margin: 2rem 0 .6rem; border-bottom: 1px solid var(--line); padding-bottom: .2rem; }
a { color: var(--bar); }
code, pre { font: 13px/1.45 ui-monospace, "DejaVu Sans Mono", monospace; background: var(--code); border-radius: 4px; }
code { padding: .05rem .3rem; overflow-wrap: anywhere; }
pre { padding: .6rem .8rem; overflow-x: auto; white-space: pre-wrap; overflow-wrap: anywhere; }
.muted { color: var(--muted); }
.note { color: var(--muted); font-size: .9rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: .92rem; }
th, td { text-align: left; padding: .35rem .6rem .35rem 0; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; white-space: nowrap; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; margin: 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
.error-message { color: var(--bad); white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; }
.status { font-weight: 600; white-space: nowrap; }
.legend span { display: inline-block; width: .8rem; height: .8rem; border-radius: 2px; vertical-align: -1px; margin-right: .3rem; }
.layer { border: 1px solid var(--line); border-radius: 6px; padding: .5rem .7rem; margin: .5rem 0; }
.layer.shared { border-left: 5px solid var(--shared); }
.layer-head { display: flex; flex-wrap: wrap; gap: .2rem 1rem; align-items: baseline; }
.layer-head .idx { font-weight: 600; }
.track { background: var(--panel); border-radius: 3px; margin: .35rem 0; }
.layer-bar { height: 1rem; background: var(--bar); border-radius: 3px; min-width: 3px; }
.layer.shared .layer-bar { background: var(--shared); }
.paths { width: 100%; font-size: .85rem; }
.paths td { border: 0; padding: .1rem .6rem .1rem 0; }
.paths td.name { width: 45%; overflow-wrap: anywhere; }
.paths td.bar { width: 40%; }
.links { margin: .2rem 0 0; }
td.nowrap, td code { white-space: nowrap; }
.path-bar { height: .45rem; background: var(--bar); opacity: .55; border-radius: 2px; min-width: 2px; }
.tag { display: inline-block; font-size: .75rem; padding: 0 .4rem; border-radius: 9px; border: 1px solid var(--shared); color: var(--shared); }
@media (max-width: 40rem) { body { font-size: 14px; } main { padding: .6rem; } dl.facts { grid-template-columns: 1fr; }
  .paths td.name, .paths td.bar { width: auto; } .hide-small { display: none; } }
"#;

/// A whole page: `title` (for `<title>` and the heading) and the content.
pub fn page(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · nixery" }
                style { (maud::PreEscaped(STYLE)) }
            }
            body {
                header.top { a href="/" { "nixery" } span.muted { " · container images from Nix packages, built on demand" } }
                main {
                    h1 { (title) }
                    (content)
                }
            }
        }
    }
}

/// The answer for `markup`: `text/html; charset=utf-8`, not cached (the pages show what is
/// happening now).
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    let mut resp = (status, markup.into_string()).into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// An error page: the status, its reason, and a message (already free of server paths and
/// secrets: names, and messages made for the registry's clients).
pub fn error_page(status: StatusCode, message: &str) -> Response {
    let reason = status.canonical_reason().unwrap_or("Error");
    let content = html! {
        p.status { (status.as_u16()) " " (reason) }
        p.error-message { (message) }
        p { a href="/" { "Back to the start page" } }
    };
    let mut resp = respond(status, page(reason, content));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    resp
}

/// `bytes` in binary units, e.g. `1.5 MiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// A duration for people: `0.42 s`, `12 s`, `3 min 5 s`.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    match d.as_secs() {
        0..10 => format!("{secs:.2} s"),
        10..120 => format!("{secs:.0} s"),
        s => format!("{} min {} s", s / 60, s % 60),
    }
}

/// A moment as a `<time>` element: how long ago, with the UTC time (RFC 3339) as its
/// machine-readable value and tooltip.
pub fn moment(at: SystemTime, now: SystemTime) -> Markup {
    let stamp = humantime::format_rfc3339_seconds(at).to_string();
    let ago = now.duration_since(at).unwrap_or_default().as_secs();
    let text = match ago {
        0..5 => "just now".to_owned(),
        5..120 => format!("{ago} s ago"),
        120..7200 => format!("{} min ago", ago / 60),
        _ => format!("{} h ago", ago / 3600),
    };
    html! { time datetime=(stamp) title=(stamp) { (text) } }
}

/// `part` as a percentage of `whole`, for a bar's CSS width (0–100, two decimals).
pub fn percent(part: u64, whole: u64) -> String {
    let p = if whole == 0 { 0.0 } else { part as f64 * 100.0 / whole as f64 };
    format!("width: {:.2}%", p.clamp(0.0, 100.0))
}

/// A locked flake: its commit and the nixpkgs commit its flake.lock pins, or a path flake's
/// reading by the hash of its contents.
pub fn flake_revision(locked: &LockedFlake) -> Markup {
    html! {
        @match &locked.lock {
            FlakeLock::Commit(commit) => { "commit " code { (commit.as_str()) } }
            FlakeLock::Snapshot { nar_hash, .. } => { "the flake as read, " code { (nar_hash) } }
        }
        @if let Some(nixpkgs) = &locked.nixpkgs { ", its nixpkgs at " code { (nixpkgs.as_str()) } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_durations_and_widths_read_well() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(5 << 30), "5.0 GiB");
        assert_eq!(duration(Duration::from_millis(420)), "0.42 s");
        assert_eq!(duration(Duration::from_secs(185)), "3 min 5 s");
        assert_eq!(percent(1, 4), "width: 25.00%");
        assert_eq!(percent(1, 0), "width: 0.00%");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let shown = moment(now - Duration::from_secs(300), now).into_string();
        assert!(shown.contains(">5 min ago<") && shown.contains("datetime=\"1970-01-12T13:41:40Z\""), "{shown}");
    }

    #[tokio::test]
    async fn error_pages_escape_their_message() {
        let page = error_page(StatusCode::BAD_REQUEST, "<script>x</script> & more");
        assert_eq!(page.status(), StatusCode::BAD_REQUEST);
        assert_eq!(page.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        let body = axum::body::to_bytes(page.into_body(), usize::MAX).await.unwrap();
        let html = String::from_utf8(body.to_vec()).unwrap();
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt; &amp; more"), "{html}");
        assert!(!html.contains("<script") && html.contains("<title>Bad Request · nixery</title>"), "{html}");
        let refused = error_page(StatusCode::METHOD_NOT_ALLOWED, "no");
        assert_eq!(refused.headers()[header::ALLOW], "GET, HEAD");
    }
}
