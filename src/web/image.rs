//! `GET /ui/<image name>[?tag=<tag>]`: an image's layer plan, drawn.
//!
//! One block per layer, in manifest order: a bar whose CSS width is the layer's size (the NAR
//! size of its store paths, relative to the biggest layer), its store paths each with a bar of
//! its own, the layer's popularity, and, once built, its digest and compressed size. A layer
//! that another recent image (built or viewed) also holds is drawn in another colour and
//! names those images: they share the blob, so a client that pulled one downloads it once.
//! The symlink forest, the last layer, has no NAR size (it is made of links): its bar is
//! the narrowest, with its compressed size once built.
//!
//! Where the plan comes from, and what it costs, is [`crate::builder::Builder::plan`]'s and
//! [`crate::activity`]'s business: recorded for recent builds (no Nix), else planned without
//! archiving, under the Nix job limit.

use super::index::{Reached, pull_commands, ui_link};
use super::layout::{duration, flake_revision, moment, page, percent, size};
use crate::activity::{BuildRecord, PlannedImage, Sharer};
use crate::image::Tag;
use crate::nix::StorePath;
use crate::pkgsource::SourceRevision;
use maud::{Markup, html};
use std::time::SystemTime;

/// What the page shows.
pub struct View<'a> {
    /// The name as requested.
    pub name: &'a str,
    pub tag: &'a Tag,
    pub planned: &'a PlannedImage,
    /// The build, if the image was built recently.
    pub built: Option<&'a BuildRecord>,
    /// For each layer, the other recent images holding it.
    pub sharers: &'a [Vec<Sharer>],
    pub reached: &'a Reached,
}

pub fn render(view: &View<'_>) -> Markup {
    let plan = &view.planned.plan;
    let spec = &view.planned.id.spec;
    let widest = plan.layers.iter().map(|l| l.size).max().unwrap_or(0);
    let total: u64 = plan.layers.iter().map(|l| l.size).sum();
    let reference =
        if *view.tag == Tag::latest() { view.name.to_owned() } else { format!("{}:{}", view.name, view.tag.as_str()) };
    let layer_count = plan.layers.len() + 1;
    let content = html! {
        dl.facts {
            dt { "packages" }
            dd { @for (i, p) in spec.packages.iter().enumerate() { @if i > 0 { ", " } code { (p.as_str()) } } }
            dt { "architecture" } dd { (spec.arch.oci_name()) }
            dt { "tag" } dd { code { (view.tag.as_str()) } " → " (revision(&view.planned.id.source)) }
            dt { "layers" } dd { (layer_count) " (" (plan.layers.len()) " of store paths, " (size(total)) " unpacked, and the symlink forest)" }
            dt { "state" }
            dd {
                @if let Some(b) = view.built {
                    "built " (moment(b.finished, SystemTime::now())) " in " (duration(b.took)) ", "
                    (size(b.size())) " to download"
                } @else {
                    "planned, not built: pull it to build it (layer digests and download sizes appear then)"
                }
            }
        }
        h2 { "Pull it" }
        (pull_commands(view.reached, &reference))
        h2 { "Layers" }
        p.note.legend {
            span style="background: var(--shared)" {} "shared with another recent image   "
            span style="background: var(--bar)" {} "only in this image (among recent ones)"
            br;
            "Bars are sizes unpacked (NAR), relative to the biggest layer; manifest order, the layers most images share first."
        }
        @for (i, layer) in plan.layers.iter().enumerate() {
            (layer_block(view, i, LayerView::Paths { paths: &layer.contents, size: layer.size, popularity: layer.popularity }, widest))
        }
        (layer_block(view, plan.layers.len(), LayerView::Forest(&plan.forest), widest))
    };
    page(view.name, content)
}

fn revision(source: &SourceRevision) -> Markup {
    html! {
        @match source {
            SourceRevision::Channel { commit, .. } | SourceRevision::Git { commit, .. } => { "commit " code { (commit.as_str()) } }
            SourceRevision::Path { generation, .. } => { "the local package set (reading " (generation) ")" }
            SourceRevision::Flake(locked) => { (flake_revision(locked)) }
        }
    }
}

enum LayerView<'a> {
    Paths { paths: &'a [StorePath], size: u64, popularity: u64 },
    Forest(&'a [StorePath]),
}

fn layer_block(view: &View<'_>, index: usize, layer: LayerView<'_>, widest: u64) -> Markup {
    let sharers = view.sharers.get(index).map(Vec::as_slice).unwrap_or_default();
    let blob = view.built.and_then(|b| b.blobs.get(index));
    let key = view.planned.keys.get(index).map(ToString::to_string).unwrap_or_default();
    let class = if sharers.is_empty() { "layer" } else { "layer shared" };
    let sizes = &view.planned.plan.sizes;
    html! {
        section class=(class) data-key=(key) data-digest=[blob.map(|b| b.digest.to_string())] {
            div.layer-head {
                span.idx { "Layer " (index + 1) }
                @match &layer {
                    LayerView::Paths { paths, size: bytes, popularity } => {
                        span { (size(*bytes)) }
                        span.muted { (paths.len()) " store path" @if paths.len() != 1 { "s" } }
                        span.muted { "popularity " (popularity) }
                    }
                    LayerView::Forest(roots) => {
                        span { "symlink forest" }
                        span.muted { "links to " (roots.len()) " package" @if roots.len() != 1 { "s" } " under /" }
                    }
                }
                @if let Some(b) = blob { span.muted { (size(b.size)) " compressed" } }
                @if !sharers.is_empty() {
                    span {
                        span.tag { "shared" } " with "
                        @for (i, s) in sharers.iter().enumerate() {
                            @if i > 0 { ", " }
                            a href=(ui_link(&s.id, s.tag.as_ref())) { (s.id.spec.canonical_name()) }
                        }
                    }
                }
            }
            @let bytes = match &layer { LayerView::Paths { size, .. } => *size, LayerView::Forest(_) => 0 };
            div.track { div.layer-bar style=(percent(bytes, widest)) {} }
            @if let Some(b) = blob { div.note.hide-small { code { (b.digest.to_string()) } } }
            @match &layer {
                LayerView::Paths { paths, .. } => {
                    table.paths { tbody {
                        @for p in *paths {
                            @let bytes = sizes.get(p).copied().unwrap_or(0);
                            tr {
                                td.name { (p.name()) " " span.muted.hide-small { (p.hash_part()) } }
                                td.num { (size(bytes)) }
                                td.bar { div.path-bar style=(percent(bytes, widest)) {} }
                            }
                        }
                    } }
                }
                LayerView::Forest(roots) => {
                    p.note.links { "links to: "
                        @for (i, p) in roots.iter().enumerate() { @if i > 0 { ", " } (p.name()) }
                    }
                }
            }
        }
    }
}
