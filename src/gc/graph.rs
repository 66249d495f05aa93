//! The mark phase: which documents are retained, and which blobs they keep.
//!
//! Every stored document is a node with its edges ([`super::documents`]): blobs it needs,
//! documents it needs, and the subject it is about. The roots are the documents kept by
//! themselves (served within the retention, or younger than the grace). From them, the
//! retained set grows along "needs" edges (an index keeps its manifests) and against
//! "subject" edges (a kept manifest keeps the SBOMs and signatures about it, and those keep
//! theirs), until nothing changes. The blobs to keep are then those the retained documents
//! need.
//!
//! Memory is compact and independent of how much garbage there is: per document its
//! digest and two ranges into shared arrays of 32-byte digests, no strings, no maps; the
//! sets handed to the sweep are sorted arrays searched by bisection.

use super::documents::Edges;
use crate::digest::Digest;
use std::ops::Range;

/// A SHA-256 digest's bytes.
pub type Hash = [u8; 32];

/// A sorted set of digests.
#[derive(Debug, Default)]
pub struct DigestSet(Vec<Hash>);

impl DigestSet {
    pub fn from_unsorted(mut hashes: Vec<Hash>) -> Self {
        hashes.sort_unstable();
        hashes.dedup();
        DigestSet(hashes)
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.0.binary_search(digest.as_bytes()).is_ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

struct Node {
    digest: Hash,
    root: bool,
    blobs: Range<u32>,
    documents: Range<u32>,
    subject: Option<Hash>,
}

/// The documents of a store and their edges.
#[derive(Default)]
pub struct Graph {
    nodes: Vec<Node>,
    blobs: Vec<Hash>,
    documents: Vec<Hash>,
}

/// What the mark phase decided.
pub struct Marks {
    /// Documents to keep.
    pub documents: DigestSet,
    /// Blobs the kept documents need.
    pub blobs: Vec<Hash>,
}

fn range(from: usize, to: usize) -> Range<u32> {
    u32::try_from(from).expect("fewer than 2^32 edges")..u32::try_from(to).expect("fewer than 2^32 edges")
}

impl Graph {
    /// Adds a document; `root` if it is kept by itself.
    pub fn add(&mut self, digest: &Digest, root: bool, edges: Edges) {
        let start = self.blobs.len();
        self.blobs.extend(edges.blobs.iter().map(|d| *d.as_bytes()));
        let blobs = range(start, self.blobs.len());
        let start = self.documents.len();
        self.documents.extend(edges.documents.iter().map(|d| *d.as_bytes()));
        let documents = range(start, self.documents.len());
        let subject = edges.subject.map(|s| *s.as_bytes());
        self.nodes.push(Node { digest: *digest.as_bytes(), root, blobs, documents, subject });
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Marks from the roots (see the module docs).
    pub fn mark(mut self) -> Marks {
        self.nodes.sort_unstable_by_key(|n| n.digest);
        let find = |nodes: &[Node], d: &Hash| nodes.binary_search_by(|n| n.digest.cmp(d)).ok();
        // Who is about whom: (subject, artifact), sorted by subject.
        let mut about: Vec<(Hash, u32)> =
            self.nodes.iter().enumerate().filter_map(|(i, n)| Some((n.subject?, i as u32))).collect();
        about.sort_unstable();
        let mut retained: Vec<bool> = self.nodes.iter().map(|n| n.root).collect();
        let mut work: Vec<usize> = (0..self.nodes.len()).filter(|&i| retained[i]).collect();
        while let Some(i) = work.pop() {
            let node = &self.nodes[i];
            let needed = self.documents[node.documents.start as usize..node.documents.end as usize].iter();
            let needed = needed.filter_map(|d| find(&self.nodes, d));
            let first = about.partition_point(|(s, _)| *s < node.digest);
            let artifacts = about[first..].iter().take_while(|(s, _)| *s == node.digest).map(|(_, a)| *a as usize);
            for j in needed.chain(artifacts).collect::<Vec<_>>() {
                if !retained[j] {
                    retained[j] = true;
                    work.push(j);
                }
            }
        }
        let mut blobs = Vec::new();
        let mut documents = Vec::new();
        for (node, kept) in self.nodes.iter().zip(&retained) {
            if *kept {
                documents.push(node.digest);
                blobs.extend_from_slice(&self.blobs[node.blobs.start as usize..node.blobs.end as usize]);
            }
        }
        Marks { documents: DigestSet(documents), blobs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::of(s.as_bytes())
    }

    fn edges(blobs: &[&str], documents: &[&str], subject: Option<&str>) -> Edges {
        Edges {
            blobs: blobs.iter().map(|b| d(b)).collect(),
            documents: documents.iter().map(|m| d(m)).collect(),
            subject: subject.map(d),
        }
    }

    #[test]
    fn retention_follows_indexes_and_subjects() {
        let mut g = Graph::default();
        g.add(&d("index"), true, edges(&[], &["amd64", "arm64"], None));
        g.add(&d("amd64"), false, edges(&["config-a", "shared", "a"], &[], None));
        g.add(&d("arm64"), false, edges(&["config-b", "shared", "b"], &[], None));
        g.add(&d("sbom"), false, edges(&["sbom-config", "sbom-layer"], &[], Some("amd64")));
        g.add(&d("signature-of-sbom"), false, edges(&["sig"], &[], Some("sbom")));
        g.add(&d("old"), false, edges(&["shared", "old-only"], &[], None));
        g.add(&d("old-sbom"), false, edges(&["old-sbom-layer"], &[], Some("old")));
        let marks = g.mark();
        for kept in ["index", "amd64", "arm64", "sbom", "signature-of-sbom"] {
            assert!(marks.documents.contains(&d(kept)), "{kept} was not kept");
        }
        for collected in ["old", "old-sbom"] {
            assert!(!marks.documents.contains(&d(collected)), "{collected} was kept");
        }
        let blobs = DigestSet::from_unsorted(marks.blobs);
        for kept in ["config-a", "shared", "a", "b", "sbom-layer", "sig"] {
            assert!(blobs.contains(&d(kept)), "blob {kept} was not kept");
        }
        for collected in ["old-only", "old-sbom-layer"] {
            assert!(!blobs.contains(&d(collected)), "blob {collected} was kept");
        }
    }

    #[test]
    fn a_kept_artifact_keeps_nothing_it_is_about() {
        let mut g = Graph::default();
        g.add(&d("sig"), true, edges(&["s"], &[], Some("image")));
        g.add(&d("image"), false, edges(&["layer"], &[], None));
        let marks = g.mark();
        assert!(marks.documents.contains(&d("sig")));
        assert!(!marks.documents.contains(&d("image")), "a subject is not kept by its artifact");
    }

    #[test]
    fn references_to_documents_not_stored_are_harmless() {
        let mut g = Graph::default();
        g.add(&d("index"), true, edges(&["x"], &["missing"], Some("also missing")));
        let marks = g.mark();
        assert_eq!(marks.documents.len(), 1);
        assert_eq!(marks.blobs, vec![*d("x").as_bytes()]);
    }
}
