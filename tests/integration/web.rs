//! The web pages (`/`, `/ui/<image>`) in headless Chromium against a real server with real
//! Nix: what a person sees after pulls and failures, the layer bars against the manifests,
//! sharing between two images, escaping, and the HTML error pages. Screenshots of both pages
//! are saved under `target/ui-screenshots/` (README shows copies from docs/).
//!
//! Browser launches are slow on two cores, so one test drives all of it with four.

use crate::harness::chromium::{dump_dom, screenshot};
use crate::harness::{Server, TEST_PKGS, nonce, temp_dir};
use regex::Regex;

/// A failure message with markup in it, as a package set can say anything in a `throw`.
const TAG_SOUP: &str = "<script>document.title='pwned'</script><b>not bold</b> & more";

/// The test package set plus `tagsoup`, whose evaluation throws [`TAG_SOUP`].
fn package_set_with_tag_soup(dir: &std::path::Path) -> String {
    let file = dir.join("default.nix");
    let nix = format!(
        "{{ system ? builtins.currentSystem, config ? {{ }} }}@args:\n(import {TEST_PKGS} args) // {{\n  tagsoup = throw \"{TAG_SOUP}\";\n}}\n"
    );
    std::fs::write(&file, nix).expect("write the package set");
    file.display().to_string()
}

/// The layer digests of a manifest, in order.
fn layer_digests(manifest: &serde_json::Value) -> Vec<String> {
    let layers = manifest["layers"].as_array().expect("a manifest with layers");
    layers.iter().map(|l| l["digest"].as_str().expect("a layer digest").to_owned()).collect()
}

/// The `<section class="layer...">` elements of a DOM, as (class, digest, html).
fn layer_sections(dom: &str) -> Vec<(String, String, String)> {
    let start = Regex::new(r#"<section class="(layer[^"]*)"[^>]*data-digest="(sha256:[0-9a-f]{64})"[^>]*>"#).unwrap();
    let starts: Vec<_> = start.captures_iter(dom).collect();
    starts
        .iter()
        .map(|c| {
            let whole = c.get(0).unwrap();
            let end = dom[whole.end()..].find("</section>").map(|e| whole.end() + e).unwrap_or(dom.len());
            (c[1].to_owned(), c[2].to_owned(), dom[whole.start()..end].to_owned())
        })
        .collect()
}

#[test]
fn pages_show_pulls_failures_and_layer_plans_in_chromium() {
    let pkgs = temp_dir("web-pkgs");
    let pkgs_path = package_set_with_tag_soup(pkgs.path());
    let server = Server::start_with(&[("NIXERY_PKGS_PATH", &pkgs_path)]);

    // Two pulls that share layers, a build that fails, a package set that refuses a name.
    let (_, shell_hello) = server.manifest("shell/hello", "latest");
    let (_, hello) = server.manifest("hello", "latest");
    let r = server.get("/v2/broken/manifests/latest");
    assert_eq!(r.status, 422, "{}", server.context(&r.describe()));
    let r = server.get("/v2/tagsoup/manifests/latest");
    assert_eq!(r.status, 422, "{}", server.context(&r.describe()));
    assert!(r.text().contains("<script>document.title"), "the message reaches the client as is: {}", r.text());

    // The start page, as the browser built it.
    let index = dump_dom(&server.url("/"));
    let context = |what: &str| server.context(&format!("{what}\n--- DOM ---\n{index}"));
    assert!(index.contains("<title>Nixery · nixery</title>"), "{}", context("the title was changed by a script"));
    let addr = server.addr();
    for command in [
        format!("docker pull {addr}/shell/git"),
        format!("podman pull --tls-verify=false {addr}/shell/git"),
        format!("ctr images pull --plain-http {addr}/shell/git:latest"),
    ] {
        assert!(index.contains(&command), "{}", context(&format!("no pull instruction `{command}`")));
    }
    assert!(
        index.contains("local package set") && !index.contains(pkgs.path().to_str().unwrap()),
        "{}",
        context("the source")
    );
    assert!(
        Regex::new(r"latest is</dt><dd>the files as read \(reading 1\), resolved <time").unwrap().is_match(&index),
        "{}",
        context("the revision")
    );
    let builds =
        index.split("<table class=\"builds\">").nth(1).and_then(|t| t.split("</table>").next()).unwrap_or_default();
    for (name, manifest) in [("shell/hello", &shell_hello), ("hello", &hello)] {
        let layers = manifest["layers"].as_array().unwrap().len();
        let row = Regex::new(&format!(r#"<tr><td><a href="/ui/{name}">{name}</a></td><td><code>latest</code></td><td><time[^>]*>[^<]+</time></td><td class="num">[^<]+</td><td class="num">{layers}</td>"#)).unwrap();
        assert!(
            row.is_match(builds),
            "{}",
            context(&format!("no row for {name} with {layers} layers in the recent builds"))
        );
    }
    assert_eq!(builds.matches("<tr>").count(), 3, "{}", context("a header and two builds"));
    let failures = index.split("<table class=\"failures\">").nth(1).unwrap_or_default();
    let broken = Regex::new(r#"<td class="nowrap"><code>broken</code></td><td class="nowrap"><code>latest</code></td><td class="nowrap"><time[^>]*>[^<]+</time></td><td class="status">422</td><td><pre class="error-message">[^<]*this package is broken on purpose"#).unwrap();
    assert!(broken.is_match(failures), "{}", context("the broken package's failure and its message"));
    assert!(failures.contains("<td class=\"status\">422</td>"), "{}", context("the refused name"));
    assert!(
        failures.contains("&lt;script&gt;document.title='pwned'&lt;/script&gt;&lt;b&gt;not bold&lt;/b&gt; &amp; more"),
        "{}",
        context("the message with markup, escaped")
    );
    assert!(!index.contains("<script") && !index.contains("<b>"), "{}", context("markup of a message became elements"));
    let shot = screenshot(&server.url("/"), "index.png");
    eprintln!("screenshot of / saved as {}", shot.display());

    // The layer plan of shell/hello: a bar per manifest layer, in manifest order, and the
    // layers hello has too marked as shared with it, the others not.
    let ui = dump_dom(&server.url("/ui/shell/hello"));
    let context = |what: &str| server.context(&format!("{what}\n--- DOM ---\n{ui}"));
    assert!(ui.contains("<title>shell/hello · nixery</title>"), "{}", context("title"));
    let manifest_layers = layer_digests(&shell_hello);
    assert_eq!(ui.matches("class=\"layer-bar\"").count(), manifest_layers.len(), "{}", context("one bar per layer"));
    let sections = layer_sections(&ui);
    let shown: Vec<&String> = sections.iter().map(|(_, digest, _)| digest).collect();
    assert_eq!(shown, manifest_layers.iter().collect::<Vec<_>>(), "{}", context("layers in manifest order"));
    let in_hello = layer_digests(&hello);
    let (mut shared, mut own) = (0, 0);
    for (class, digest, html) in &sections {
        if in_hello.contains(digest) {
            shared += 1;
            assert_eq!(class, "layer shared", "{}", context(&format!("{digest} is in hello too")));
            assert!(html.contains("href=\"/ui/hello\""), "{}", context(&format!("{digest} names hello")));
        } else {
            own += 1;
            assert_eq!(class, "layer", "{}", context(&format!("{digest} is in no other image")));
        }
    }
    assert!(shared >= 2 && own >= 2, "shared {shared}, own {own}: the test needs both kinds");
    let width = Regex::new(r#"class="layer-bar" style="width: (\d+\.\d\d)%""#).unwrap();
    let widths: Vec<f64> = width.captures_iter(&ui).map(|c| c[1].parse().unwrap()).collect();
    assert!(widths.contains(&100.0) && widths.iter().any(|w| *w < 100.0), "{}", context("bars are proportional"));
    let shot = screenshot(&server.url("/ui/shell/hello"), "image.png");
    eprintln!("screenshot of /ui/shell/hello saved as {}", shot.display());
}

#[test]
fn pages_answer_html_with_statuses_and_head() {
    let server = Server::start_with(&[("NIXERY_TEST_NONCE", &nonce()), ("NIX_TIMEOUT", "5")]);
    let get = server.get("/");
    assert_eq!(get.status, 200, "{}", get.describe());
    assert_eq!(get.header("Content-Type"), Some("text/html; charset=utf-8"));
    assert!(get.text().contains(&format!("docker pull {}/shell/git", server.addr())));
    let head = server.request("HEAD", "/", &[]);
    assert_eq!((head.status, head.header("Content-Length")), (200, get.header("Content-Length")));
    assert!(head.body.is_empty());

    for (path, status, says) in [
        ("/ui/bad..name", 400, "'bad..name'"),
        ("/ui/", 400, "empty"),
        ("/ui/hello?tag=-x", 400, "tag '-x'"),
        ("/ui/hello/nosuchpkg", 422, "nosuchpkg"),
        ("/ui/hello?tag=v1", 422, "use the tag 'latest'"),
    ] {
        let r = server.get(path);
        assert_eq!(r.status, status, "{path}: {}", server.context(&r.describe()));
        assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"), "{path}");
        let text = r.text();
        assert!(text.contains(says) && text.contains("<title>"), "{path}: {text}");
        assert!(!text.contains(TEST_PKGS) && !text.contains("/nix/store"), "{path} shows a server path: {text}");
    }
    let r = server.request("POST", "/", &[]);
    assert_eq!((r.status, r.header("Allow")), (405, Some("GET, HEAD")), "{}", r.describe());
    assert_eq!(server.metric("nixery_image_builds_total"), 0, "no page built an image");

    // A page view plans an image once (Nix), then shows it from memory; nothing is archived.
    let first = server.get("/ui/hello");
    assert_eq!(first.status, 200, "{}", server.context(&first.describe()));
    assert!(first.text().contains("planned, not built"), "{}", first.text());
    let evaluations = server.metric("nixery_nix_invocations_total");
    assert!(evaluations > 0);
    assert_eq!(server.get("/ui/hello").status, 200);
    assert_eq!(server.metric("nixery_nix_invocations_total"), evaluations, "the plan was kept");
    assert_eq!((server.metric("nixery_image_builds_total"), server.metric("nixery_layers_built_total")), (0, 0));
    // JSON errors stay for the registry.
    let r = server.get("/v2/bad..name/manifests/latest");
    assert_eq!(r.header("Content-Type"), Some("application/json"));

    // Clients waiting for one build make one entry: a new package, and one that outlasts
    // NIX_TIMEOUT (422 for every client, the image's failure).
    for (name, status) in [("fresh", 200), ("slow", 422)] {
        let start = std::sync::Barrier::new(4);
        std::thread::scope(|s| {
            let pulls: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        server.get(&format!("/v2/{name}/manifests/latest")).status
                    })
                })
                .collect();
            for pull in pulls {
                assert_eq!(pull.join().unwrap(), status, "{}", server.context(name));
            }
        });
    }
    let index = server.get("/").text();
    assert_eq!(index.matches("<a href=\"/ui/fresh\">fresh</a>").count(), 1, "one build of fresh: {index}");
    assert_eq!(index.matches("<code>slow</code>").count(), 1, "one failure of slow: {index}");
    assert!(index.contains("<td class=\"status\">422</td>"), "{index}");
}
