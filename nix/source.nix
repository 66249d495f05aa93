# Imports the configured package set for a target system, from data only.
#
#   srcType: "path" | "git" | "tarball";  srcArgs: the JSON arguments for that type
#            (a path, builtins.fetchGit's arguments, or the URL of a tarball);
#   system:  the Nix system double to instantiate the set for.
#
# Only builtins are used, so any package set shaped like nixpkgs
# (`{ system ? ..., ... }: { attrs }`) works.
{ srcType, srcArgs, system }:
let
  args = builtins.fromJSON srcArgs;

  source =
    if srcType == "path" then args.path
    else if srcType == "git" then builtins.fetchGit args
    else if srcType == "tarball" then builtins.fetchTarball { inherit (args) url; }
    else throw "unknown package source type '${srcType}'";

  # Hand the package set only the arguments it declares (nixpkgs takes all three; a small
  # set may take just `system`).
  importSet = import source;
in
importSet (builtins.intersectAttrs (builtins.functionArgs importSet) {
  inherit system;
  config = { };
  overlays = [ ];
})
