# The test package set with evaluation errors `builtins.tryEval` cannot catch at its top
# level, as nixpkgs forks, overlays and older channels have them: for `nixery popcount`,
# which walks the top-level attributes (tests/integration/popcount.rs). default.nix keeps
# the same errors nested (`failing.*`), so that everything else walking its top level meets
# none of them.
{ system ? builtins.currentSystem, config ? { }, ... }:
let
  pkgs = import ./default.nix { inherit system config; };
in
pkgs // {
  # `abort`
  aborting = pkgs.failing.aborting;
  # infinite recursion
  recursive = pkgs.failing.recursive;
  # a missing file
  missingFile = pkgs.failing.missingFile;
  # a type error, met when the output path is computed
  typeError = pkgs.failing.typeError;
  # a missing attribute
  renamed = pkgs.lib.nosuch;
}
