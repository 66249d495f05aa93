# Resolves an image's package names in a package set and instantiates their derivations.
#
# Called by the registry as
#   nix-instantiate --eval --strict --json --read-write-mode nix/lookup.nix \
#     --argstr srcType path|git|channel --argstr srcArgs '<json>' \
#     --argstr system x86_64-linux --argstr packages '<json list of names>'
# Every argument arrives as a string and is decoded with builtins.fromJSON: package names are
# data, never spliced into Nix code. Only builtins and the package set itself are used, so
# any package set shaped like nixpkgs (`{ system ? ..., ... }: { attrs }`) works.
#
# The result is JSON:
#   { missing = [ names not found ]; unusable = [ names that are not derivations or whose
#     evaluation failed (broken, unfree, insecure, removed) ];
#     packages = [ { name; attr; drvPath; outputs = [ store paths ]; } ]; }
{ srcType, srcArgs, system, packages }:
let
  names = builtins.fromJSON packages;
  pkgs = import ./source.nix { inherit srcType srcArgs system; };

  upper = [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ];
  lower = [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ];
  toLower = builtins.replaceStrings upper lower;

  # The attribute of `set` that `name` denotes: an exact match, the `_`-prefixed attribute
  # for a digit-leading name, or the first (in sorted order) case-insensitive match.
  findAttr = set: name:
    let
      prefixed = "_" + name;
      caseless = builtins.filter (n: toLower n == toLower name) (builtins.attrNames set);
    in
    if set ? ${name} then name
    else if builtins.match "[0-9].*" name != null && set ? ${prefixed} then prefixed
    else if caseless != [ ] then builtins.head caseless
    else null;

  # Walks a dotted name through nested attribute sets. Values that throw when forced
  # (removed aliases, broken packages) are reported, not fatal.
  walk = value: parts: attrPath:
    if parts == [ ] then { found = true; inherit value attrPath; }
    else
      let isSet = builtins.tryEval (builtins.isAttrs value); in
      if !(isSet.success && isSet.value) then { found = false; }
      else
        let attr = findAttr value (builtins.head parts); in
        if attr == null then { found = false; }
        else
          let next = builtins.tryEval value.${attr}; in
          if !next.success then { found = true; usable = false; attrPath = attrPath ++ [ attr ]; }
          else walk next.value (builtins.tail parts) (attrPath ++ [ attr ]);

  split = name: builtins.filter builtins.isString (builtins.split "\\." name);

  resolve = name:
    let
      r = walk pkgs (split name) [ ];
      drv = r.value;
      outputNames = drv.meta.outputsToInstall or [ (drv.outputName or "out") ];
      info = builtins.tryEval (builtins.deepSeq [ drv.drvPath (map (o: drv.${o}.outPath) outputNames) ] {
        inherit name;
        attr = builtins.concatStringsSep "." r.attrPath;
        drvPath = drv.drvPath;
        outputs = map (o: drv.${o}.outPath) outputNames;
      });
      isDrv = builtins.tryEval (builtins.isAttrs drv && (drv.type or null) == "derivation");
    in
    if !r.found then { status = "missing"; inherit name; }
    else if !(r.usable or true) then { status = "unusable"; inherit name; }
    else if !(isDrv.success && isDrv.value) then { status = "unusable"; inherit name; }
    else if !info.success then { status = "unusable"; inherit name; }
    else { status = "ok"; } // info.value;

  results = map resolve names;
  with' = status: builtins.filter (r: r.status == status) results;
in
{
  missing = map (r: r.name) (with' "missing");
  unusable = map (r: r.name) (with' "unusable");
  packages = map (r: { inherit (r) name attr drvPath outputs; }) (with' "ok");
}
