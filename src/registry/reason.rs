//! The reason phrase of an error answer: the cause on the status line, for the client that
//! reads nothing else.
//!
//! containerd (`ctr`, and so the kubelet) resolves a tag with HEAD, so it never sees a body;
//! for any status but 404 it prints the status line, reason phrase included
//! (`unexpected status from HEAD request to …: 422 build of broken-1.0 failed: …`). docker,
//! podman and skopeo print it too when they print anything of the status. So the phrase
//! carries the cause, in what HTTP/1.1 allows there (RFC 9112 §4: visible ASCII, spaces and
//! tabs; hyper also takes obs-text, but terminals and log pipelines would not show it): one
//! line of visible ASCII, the typographic quotes nixpkgs uses (‘unfree’) made plain, any
//! other character replaced, whitespace runs (newlines included) collapsed, at most
//! [`MAX_LEN`] bytes, cut with `...`, and never empty.
//!
//! (HTTP/2 has no reason phrase: a client over h2 gets only the JSON message. Every registry
//! client speaks HTTP/1.1 to a plain-HTTP registry.)

/// Longest reason phrase, in bytes: what fits a terminal line after ctr's prefix, and far
/// below any HTTP server's or proxy's status-line limit.
pub const MAX_LEN: usize = 200;

/// What is left of a phrase whose every character was dropped.
const FALLBACK: &str = "Error";

/// `text` as a reason phrase (see the module docs).
pub fn phrase(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_LEN));
    let mut space = false;
    for c in text.chars() {
        let c = match c {
            '‘' | '’' | '′' => '\'',
            '“' | '”' | '″' => '"',
            '–' | '—' | '−' => '-',
            '…' => '.',
            c if c.is_whitespace() => ' ',
            c if c.is_ascii_graphic() => c,
            _ => '?',
        };
        if c == ' ' {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
        if out.len() > MAX_LEN {
            break;
        }
    }
    if out.len() > MAX_LEN {
        // Every character is one byte now: cut at a word's end if one is near.
        out.truncate(MAX_LEN - 3);
        if let Some(at) = out.rfind(' ').filter(|at| *at > MAX_LEN / 2) {
            out.truncate(at);
        }
        out.push_str("...");
    }
    if out.is_empty() { FALLBACK.to_owned() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(phrase: &str) -> bool {
        !phrase.is_empty() && phrase.len() <= MAX_LEN && phrase.bytes().all(|b| (0x20..=0x7e).contains(&b))
    }

    #[test]
    fn one_line_of_visible_ascii() {
        let p = phrase("  unusable packages: nonfree (Refusing … an unfree license (‘unfree’))\n\n\t next\r\nline ");
        assert_eq!(p, "unusable packages: nonfree (Refusing . an unfree license ('unfree')) next line");
        assert_eq!(phrase("a\u{0}b\u{7f}c é 日本"), "a?b?c ? ??");
        assert!(allowed(&p));
    }

    #[test]
    fn never_empty() {
        assert_eq!(phrase(""), "Error");
        assert_eq!(phrase(" \n\t "), "Error");
    }

    #[test]
    fn long_causes_are_cut_with_an_ellipsis() {
        let words = "building /nix/store/aaaa-broken-1.0.drv failed ".repeat(10);
        let p = phrase(&words);
        assert!(allowed(&p), "{p:?}");
        assert!(p.ends_with("...") && !p.ends_with(" ..."), "{p}");
        assert!(p.len() > MAX_LEN / 2, "{p}");
        assert!(words.starts_with(p.trim_end_matches("...")));
        // One endless word, with multi-byte characters: cut at a character boundary.
        let p = phrase(&"é".repeat(500));
        assert_eq!(p.len(), MAX_LEN, "{p}");
        assert!(allowed(&p));
        // Exactly the limit: kept whole.
        let exact = "x".repeat(MAX_LEN);
        assert_eq!(phrase(&exact), exact);
    }
}
