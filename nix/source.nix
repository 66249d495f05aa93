# Imports the configured package set for a target system, from data only.
#
#   srcType: "path" | "git" | "tarball";  srcArgs: the JSON arguments for that type
#            (a path, builtins.fetchGit's arguments, or the URL of a tarball);
#   system:  the Nix system double to instantiate the set for;
#   part:    "packages" (the default) for the package set, or "revision" for what the fetcher
#            knows of the revision: `{ lastModified = <commit time, seconds> or null; }`
#            (builtins.fetchGit tells it; a tarball and a local path do not);
#   nixpkgsConfig: the operator's nixpkgs configuration (NIXERY_NIXPKGS_CONFIG) as JSON:
#            `{"attrs": {"allowUnfree": true}}` (the attribute set itself) or
#            `{"file": "/etc/nixery/nixpkgs-config.nix"}` (imported: it may hold functions
#            such as allowUnfreePredicate); handed to the set as its `config` argument.
#
# Only builtins are used, so any package set shaped like nixpkgs
# (`{ system ? ..., ... }: { attrs }`) works.
{ srcType, srcArgs, system, nixpkgsConfig ? "{}", part ? "packages" }:
let
  args = builtins.fromJSON srcArgs;
  configArg = builtins.fromJSON nixpkgsConfig;
  config = if configArg ? file then import configArg.file else configArg.attrs or { };

  source =
    if srcType == "path" then args.path
    else if srcType == "git" then builtins.fetchGit args
    else if srcType == "tarball" then builtins.fetchTarball { inherit (args) url; }
    else throw "unknown package source type '${srcType}'";

  # Hand the package set only the arguments it declares (nixpkgs takes all three; a small
  # set may take just `system`).
  importSet = import source;
in
if part == "revision" then { lastModified = if srcType == "git" then source.lastModified or null else null; }
else importSet (builtins.intersectAttrs (builtins.functionArgs importSet) {
  inherit system config;
  overlays = [ ];
})
