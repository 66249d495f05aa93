# Imports the configured package set for a target system, from data only.
#
#   srcType: "path" | "git" | "tarball" | "flake";  srcArgs: the JSON arguments for that type
#            (a path, builtins.fetchGit's arguments, the URL of a tarball, or a flake's locked
#            reference `{ "ref": … }`, see flake.nix);
#   system:  the Nix system double to instantiate the set for;
#   nixpkgsConfig: the operator's nixpkgs configuration (NIXERY_NIXPKGS_CONFIG) as JSON:
#            `{"attrs": {"allowUnfree": true}}` (the attribute set itself) or
#            `{"file": "/etc/nixery/nixpkgs-config.nix"}` (imported: it may hold functions
#            such as allowUnfreePredicate); handed to the set as its `config` argument (a
#            flake configures its own nixpkgs: the server refuses this setting for one).
#
# Only builtins are used, so any package set shaped like nixpkgs
# (`{ system ? ..., ... }: { attrs }`) works.
#
# Result: `set`, the package set, `revision`, what the fetcher knows of the revision
# (`{ lastModified = <commit time, seconds> or null; }`: builtins.fetchGit and a flake tell
# it, a tarball and a local path do not), and `roots`, where lookup.nix looks an image's names up,
# in order: `names` for the names of the image, `added` for the packages the registry adds
# (`shell`'s, cacert, iana-etc). Each root is `{ where; set; }`: `where` names it in messages
# (null for a plain package set, whose names are its own attributes), `set` is null when the
# source does not have it. A plain package set is its own only root; a flake has two
# (flake.nix).
{ srcType, srcArgs, system, nixpkgsConfig ? "{}" }:
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
  set = importSet (builtins.intersectAttrs (builtins.functionArgs importSet) {
    inherit system config;
    overlays = [ ];
  });
  root = { where = null; inherit set; };
in
if srcType == "flake" then import ./flake.nix { inherit (args) ref; inherit system; }
else {
  inherit set;
  roots = { names = [ root ]; added = [ root ]; };
  revision = { lastModified = if srcType == "git" then source.lastModified or null else null; };
}
