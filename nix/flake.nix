# A flake as the package source, for source.nix: its outputs, by a locked reference.
#
#   ref:    the flake, locked by the server: `git+…?allRefs=1&rev=<commit>`,
#           `github:owner/repo/<commit>`, or a path flake's copy in the store
#           `path:/nix/store/…-source?narHash=…`. The evaluation is pure (the server passes
#           `pure-eval`), as `nix build` evaluates a flake: `builtins.getFlake` takes only a
#           locked reference then, and the flake's inputs are those of its flake.lock.
#   system: the Nix system double the packages are for.
#
# Result, in source.nix's shape: `set` (the flake's legacyPackages.<system> with its
# packages.<system> over it, for popcount and for checking that the flake evaluates) and
# `roots`, where lookup.nix looks names up: an image's names in packages.<system>, then
# legacyPackages.<system>; the packages the registry adds (`shell`'s, cacert, iana-etc) in
# legacyPackages.<system> only, where a flake keeps nixpkgs. A root the flake does not have
# has `set = null`, so that lookup.nix can say where it looked. `revision`: the locked
# commit's time, as fetchGit gives it for a git source.
{ ref, system }:
let
  flake = builtins.getFlake ref;
  root = output: {
    where = "${output}.${system}";
    set = if flake ? ${output} && flake.${output} ? ${system} then flake.${output}.${system} else null;
  };
  packages = root "packages";
  legacy = root "legacyPackages";
  orEmpty = r: if r.set == null then { } else r.set;
in
{
  set = orEmpty legacy // orEmpty packages;
  roots = {
    names = [ packages legacy ];
    added = [ legacy ];
  };
  revision = { lastModified = flake.lastModified or null; };
}
