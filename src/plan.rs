//! Planning an image: image spec + pinned source → Nix (resolve, realise, runtime graph) →
//! layer plan.
//!
//! The one place the pipeline up to the layer grouping is written: the builder archives
//! what [`Planner::plan`] returns, `nixery layers` prints it. The plan is what decides an
//! image's bytes apart from the archive format: store-path layers in manifest order (the
//! configured grouping and budget, with the outputs of the packages every image carries
//! counted as the most popular, [`crate::image::is_always_included`]), the packages of the
//! symlink forest and who runs the image, and the image's default command.
//!
//! # Default command
//!
//! An image with bashInteractive (`shell`) runs `bash`, as Nixery's do. Otherwise, when
//! exactly one *requested* package declares `meta.mainProgram` (the program `nix run`
//! starts), that program is the command, as an absolute path into the symlink forest
//! (`/bin/hello`), so it runs whatever `PATH` the runtime uses; the packages every image
//! carries do not count (cacert's or iana-etc's would otherwise make every image ambiguous).
//! With two or more, which one the user means is a guess, so there is no command (a
//! `docker run` without one fails with the runtime's "no command specified", which says what
//! to do). A mainProgram that is not a file name, or that the package does not have in
//! `bin/`, gives no command and a warning: a command that cannot start is worse than none.

use crate::archive::LayerContents;
use crate::image::{self, ImageSpec, ImageUser};
use crate::layers::{Layer, LayerPolicy};
use crate::nix::{BuildRoots, Nix, NixError, ResolvedPackage, StorePath};
use crate::pkgsource::SourceRevision;
use crate::popularity::Popularity;
use crate::sbom::{Inventory, PathFacts, RequestedPackage, SourceInfo};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

/// What an image will consist of.
#[derive(Clone, Debug)]
pub struct ImagePlan {
    /// Store-path layers, in manifest order.
    pub layers: Vec<Layer>,
    /// The top-level packages linked into the symlink forest, the last layer.
    pub forest: Vec<StorePath>,
    /// Who runs the image (decides the forest's users and the config's `User`).
    pub user: ImageUser,
    /// The image's default command (`Cmd`), if it has one.
    pub command: Option<Vec<String>>,
    /// Each store path's NAR size (what the web pages show per path).
    pub sizes: BTreeMap<StorePath, u64>,
    /// What the image's SBOM is made of (from the same evaluation and graph query).
    pub inventory: Arc<Inventory>,
}

impl ImagePlan {
    /// Every layer's contents, in manifest order (the symlink forest last).
    pub fn contents(&self) -> Vec<LayerContents> {
        let paths = self.layers.iter().map(|l| LayerContents::StorePaths(l.contents.clone()));
        let forest = LayerContents::Forest { packages: self.forest.clone(), user: self.user };
        paths.chain(std::iter::once(forest)).collect()
    }
}

/// The default command of an image of `packages` (see the module docs); `has_program` says
/// whether a package's output has `bin/<program>`.
pub fn default_command(
    packages: &[ResolvedPackage],
    has_program: impl Fn(&ResolvedPackage, &str) -> bool,
) -> Option<Vec<String>> {
    if packages.iter().any(|p| p.attr == image::INTERACTIVE_SHELL) {
        return Some(vec!["bash".to_owned()]);
    }
    let mut declared =
        packages.iter().filter(|p| !image::is_always_included(&p.name)).filter(|p| p.main_program.is_some());
    let (package, None) = (declared.next()?, declared.next()) else {
        return None;
    };
    let program = package.main_program.as_deref().expect("filtered on");
    let file_name = !program.is_empty() && !program.contains(['/', '\0']) && program != "." && program != "..";
    if !file_name || !has_program(package, program) {
        tracing::warn!(
            package = %package.name,
            program,
            "meta.mainProgram is not a program in the package's bin/: the image has no default command"
        );
        return None;
    }
    Some(vec![format!("/bin/{program}")])
}

/// Plans images: Nix, popularity data and the layer policy.
pub struct Planner {
    nix: Nix,
    popularity: Arc<Popularity>,
    layers: LayerPolicy,
}

impl Planner {
    pub fn new(nix: Nix, popularity: Popularity, layers: LayerPolicy) -> Self {
        Planner { nix, popularity: Arc::new(popularity), layers }
    }

    /// The layer plan of `spec` built from `source` (runs Nix: the packages are realised).
    pub async fn plan(&self, source: &SourceRevision, spec: &ImageSpec) -> Result<ImagePlan, NixError> {
        Ok(self.plan_held(source, spec).await?.0)
    }

    /// [`Planner::plan`], and the GC roots that keep the plan's store paths in the store
    /// until they are dropped (when the layers are stored).
    pub async fn plan_held(
        &self,
        source: &SourceRevision,
        spec: &ImageSpec,
    ) -> Result<(ImagePlan, Option<Arc<BuildRoots>>), NixError> {
        let mut realised = self.nix.realise(source, spec.arch, &spec.packages).await?;
        let roots = realised.roots.clone();
        let very_popular: BTreeSet<StorePath> = realised
            .packages
            .iter()
            .filter(|p| image::is_always_included(&p.name))
            .flat_map(|p| p.outputs.iter().cloned())
            .collect();
        // Grouping a large closure takes tens of milliseconds to seconds of CPU
        // (layers::update_cost): off the runtime's workers, like the archives' writers.
        let (policy, popularity, graph) = (self.layers, self.popularity.clone(), realised.graph);
        let grouped = tokio::task::spawn_blocking(move || (policy.group(&graph, &popularity, &very_popular), graph));
        let (layers, graph) = match grouped.await {
            Ok(grouped) => grouped,
            // A panic in the grouping is the caller's panic, as it was inline; a cancelled task
            // only happens while the runtime shuts down.
            Err(failed) => {
                std::panic::resume_unwind(failed.try_into_panic().unwrap_or_else(|e| Box::new(e.to_string())))
            }
        };
        realised.graph = graph;
        let command = default_command(&realised.packages, |p, program| {
            p.outputs.iter().any(|o| Path::new(o.as_str()).join("bin").join(program).exists())
        });
        let sizes = realised.graph.paths.iter().map(|(path, info)| (path.clone(), info.nar_size)).collect();
        let inventory = Arc::new(inventory(source, spec, &realised));
        Ok((ImagePlan { layers, forest: realised.graph.roots, user: spec.user, command, sizes, inventory }, roots))
    }
}

/// The SBOM's facts of an image realised from `source`.
fn inventory(source: &SourceRevision, spec: &ImageSpec, realised: &crate::nix::Realised) -> Inventory {
    let requested = realised
        .packages
        .iter()
        .map(|p| RequestedPackage { name: p.name.clone(), attr: p.attr.clone(), outputs: p.outputs.clone() })
        .collect();
    let paths = realised
        .graph
        .paths
        .iter()
        .map(|(path, info)| {
            let facts = PathFacts {
                nar_hash: info.nar_hash.clone(),
                nar_size: info.nar_size,
                references: info.references.clone(),
                meta: realised.meta.get(path).cloned(),
            };
            (path.clone(), facts)
        })
        .collect();
    Inventory {
        arch: spec.arch,
        name: spec.canonical_name(),
        source: source_info(source, realised.committed),
        requested,
        paths,
    }
}

/// A package set as an SBOM may name it: remotes without credentials, no local path.
fn source_info(source: &SourceRevision, committed: Option<i64>) -> SourceInfo {
    let description = match source {
        SourceRevision::Channel { repo, .. } => format!("the nixpkgs channel repository {}", repo.redacted()),
        SourceRevision::Git { url, .. } => format!("the package set repository {}", url.redacted()),
        SourceRevision::Path { .. } => "a local package set".to_owned(),
        SourceRevision::Flake(locked) => match &locked.nixpkgs {
            Some(nixpkgs) => format!("the flake {} (its nixpkgs input at {nixpkgs})", locked.flake.shown()),
            None => format!("the flake {}", locked.flake.shown()),
        },
    };
    SourceInfo { description, revision: source.commit().map(|c| c.to_string()), committed }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::PackageName;
    use crate::pkgsource::{CommitHash, RemoteUrl};

    fn package(name: &str, main_program: Option<&str>) -> ResolvedPackage {
        let path = StorePath::parse(&format!("/nix/store/{}-{name}", "a".repeat(32))).unwrap();
        ResolvedPackage {
            name: PackageName::parse(name).unwrap(),
            attr: name.to_owned(),
            output: "out".to_owned(),
            drv_path: path.clone(),
            outputs: vec![path],
            main_program: main_program.map(str::to_owned),
            root: None,
        }
    }

    /// What an SBOM says of its package set names no credentials and no local path.
    #[test]
    fn the_source_is_described_without_credentials_or_paths() {
        let commit = CommitHash::parse(&"c".repeat(40)).unwrap();
        let git = SourceRevision::Git { url: RemoteUrl::new("https://u:secret@git.example/pkgs"), commit };
        let info = source_info(&git, Some(1));
        assert_eq!(info.description, "the package set repository https://***@git.example/pkgs");
        assert_eq!(info.revision, Some("c".repeat(40)));
        let path = SourceRevision::Path { path: "/srv/private/pkgs".into(), generation: 1 };
        assert_eq!(source_info(&path, None).description, "a local package set");
    }

    fn command(packages: &[ResolvedPackage]) -> Option<Vec<String>> {
        default_command(packages, |_, program| program != "missing")
    }

    #[test]
    fn the_one_main_program_of_the_requested_packages_is_the_command() {
        let base = [package("cacert", Some("update-ca")), package("iana-etc", None)];
        let hello = [&base[..], &[package("hello", Some("hello")), package("greeting", None)]].concat();
        assert_eq!(command(&hello), Some(vec!["/bin/hello".to_owned()]));
        let two = [&hello[..], &[package("git", Some("git"))]].concat();
        assert_eq!(command(&two), None, "two programs: which one is a guess");
        assert_eq!(command(&base), None, "always-included packages do not count");
        let shell = [&two[..], &[package("bashInteractive", Some("bash"))]].concat();
        assert_eq!(command(&shell), Some(vec!["bash".to_owned()]), "shell keeps bash");
    }

    #[test]
    fn a_main_program_that_is_no_program_gives_no_command() {
        for bad in ["missing", "", "../../etc/passwd", "a/b", ".."] {
            assert_eq!(command(&[package("x", Some(bad))]), None, "{bad:?}");
        }
    }
}
