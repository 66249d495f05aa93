# Resolves an image's package names in a package set and instantiates their derivations.
#
# Called by the registry as
#   nix-instantiate --eval --strict --json --read-write-mode nix/lookup.nix \
#     --argstr srcType path|git|tarball|flake --argstr srcArgs '<json>' \
#     --argstr system x86_64-linux --argstr packages '<json list of names>' \
#     --argstr nixpkgsConfig '<json>' --argstr mode resolve|single|probe \
#     --argstr addedNames '<json list of the names the registry adds>'
# (for a flake, purely, with this file imported from the store: see src/nix/flake.rs).
# Every argument arrives as a string and is decoded with builtins.fromJSON: package names are
# data, never spliced into Nix code. Only builtins and the package set itself are used, so
# any package set shaped like nixpkgs (`{ system ? ..., config ? ..., ... }: { attrs }`) works.
#
# Modes:
#   resolve  every name, each under builtins.tryEval, so a `throw` or failed `assert` (how
#            nixpkgs refuses unfree, broken, insecure and removed packages) makes that name
#            "unusable" instead of failing the whole evaluation. The result is JSON:
#              { packages = [
#                  { status = "ok"; name; attr; output; drvPath; outputs = [ store path ];
#                    mainProgram = <meta.mainProgram if it is a string, else null>;
#                    root = <where it was found (a flake's "packages.x86_64-linux"), or null>; }
#                  { status = "missing"; name;
#                    lookedIn = [ { where = "packages.x86_64-linux"; present = <bool>; } ]; }
#                  { status = "unusable"; name; reason = <text, or null if it threw>; } ];
#                meta = { "<output path>" = { pname; version; output; licenses; homepage;
#                                             description; }; ... };
#                revision = { lastModified = <commit time> or null; }; }
#            tryEval drops the text of what was thrown; `single` recovers it. `meta` (for the
#            image's SBOM, only when every name is ok) covers every output of the requested
#            derivations and of the derivations reachable from them through their inputs
#            (buildInputs, nativeBuildInputs, their propagated forms, and the C library and
#            compiler of their stdenv: where a runtime closure's paths come from); each part
#            is tried on its own, so odd meta costs that part, never the image.
#   single   one name, as `resolve` would classify it; but a name that threw is forced again
#            without tryEval, after the trace line "nixery-lookup: forcing without tryEval",
#            so Nix fails with nixpkgs' own message, and the trace tells the caller that the
#            failure is a refusal by the package set (not an uncatchable error such as abort,
#            infinite recursion, a missing file or a type error, which fail before the trace).
#   probe    only the package set itself (`true`), to tell a broken source from a broken name.
#
# Roots (source.nix): a name is looked up in each root of the source in turn, and the first
# that has it wins; `attr` is the path within that root. A plain package set is its own only
# root; a flake's are its packages.<system>, then its legacyPackages.<system>. The names in
# `addedNames` (what the registry adds: `shell`'s packages, cacert, iana-etc) are looked up
# in the roots for added packages (a flake's legacyPackages). A missing name says where it
# was looked for, and whether the source has that root at all.
#
# Outputs: a name gives exactly the output it denotes. `curl` is the derivation's default
# output (`outputName`, the first of `outputs`, as Nixery does), `curl.dev` the dev output;
# `meta.outputsToInstall` is not used (it would put man pages in every image, and the dev
# output of nixpkgs' curl still carries curl's outputsToInstall = [ "bin" "man" ]).
{ srcType, srcArgs, system, packages, nixpkgsConfig ? "{}", mode ? "resolve", addedNames ? "[]" }:
let
  names = builtins.fromJSON packages;
  added = builtins.fromJSON addedNames;
  source = import ./source.nix { inherit srcType srcArgs system nixpkgsConfig; };
  pkgs = source.set;
  rootsOf = name: if builtins.elem name added then source.roots.added else source.roots.names;

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

  # `builtins.tryEval`, or the value itself when `strict` (so that what it throws fails the
  # evaluation with its message).
  try = strict: value: if strict then { success = true; inherit value; } else builtins.tryEval value;

  # Walks a dotted name through nested attribute sets. Values that throw when forced
  # (removed aliases, refused packages) are reported, not fatal (unless `strict`).
  walk = strict: value: parts: attrPath:
    if parts == [ ] then { found = true; inherit value attrPath; }
    else
      let isSet = try strict (builtins.isAttrs value); in
      if !(isSet.success && isSet.value) then { found = false; }
      else
        let attr = findAttr value (builtins.head parts); in
        if attr == null then { found = false; }
        else
          let next = try strict value.${attr}; in
          if !next.success then { found = true; usable = false; attrPath = attrPath ++ [ attr ]; }
          else walk strict next.value (builtins.tail parts) (attrPath ++ [ attr ]);

  # The walk in the first root that has the name; roots the source lacks are skipped.
  walkRoots = strict: roots: parts:
    if roots == [ ] then { found = false; }
    else
      let
        root = builtins.head roots;
        r = if root.set == null then { found = false; } else walk strict root.set parts [ ];
      in
      if r.found then r // { root = root.where; } else walkRoots strict (builtins.tail roots) parts;

  # Where a missing name was looked for (named roots only: a plain set's is itself).
  lookedIn = name: map (root: { inherit (root) where; present = root.set != null; })
    (builtins.filter (root: root.where != null) (rootsOf name));

  split = name: builtins.filter builtins.isString (builtins.split "\\." name);

  resolveWith = strict: name:
    let
      r = walkRoots strict (rootsOf name) (split name);
      drv = r.value;
      output = drv.outputName or "out";
      # meta.mainProgram, the program `nix run` starts: the image's default command when it
      # is the only requested package with one. A meta that throws means no program.
      mainProgram =
        let m = builtins.tryEval (drv.meta.mainProgram or null); in
        if m.success && builtins.isString m.value then m.value else null;
      info = try strict (builtins.deepSeq [ drv.drvPath drv.outPath ] {
        status = "ok";
        inherit name output mainProgram;
        inherit (r) root;
        attr = builtins.concatStringsSep "." r.attrPath;
        drvPath = drv.drvPath;
        outputs = [ drv.outPath ];
      });
      isDrv = try strict (builtins.isAttrs drv && (drv.type or null) == "derivation");
      kind = builtins.tryEval (if builtins.isAttrs drv then "an attribute set" else "a " + builtins.typeOf drv);
    in
    if !r.found then { status = "missing"; inherit name; lookedIn = lookedIn name; }
    else if !(r.usable or true) then { status = "unusable"; inherit name; reason = null; }
    else if !isDrv.success then { status = "unusable"; inherit name; reason = null; }
    else if !isDrv.value then {
      status = "unusable";
      inherit name;
      reason = "not a package: it is ${if kind.success then kind.value else "not a derivation"}";
    }
    else if !info.success then { status = "unusable"; inherit name; reason = null; }
    else info.value;

  single = name:
    let r = resolveWith false name; in
    if r.status == "unusable" && r.reason == null
    then builtins.trace "nixery-lookup: forcing without tryEval" (resolveWith true name)
    else r;

  # Meta for the SBOM (see `resolve` above). Everything is tried: a value that throws is
  # left out, never fatal.
  attempt = value: default:
    let r = builtins.tryEval (builtins.deepSeq value value); in if r.success then r.value else default;
  str = value: let r = builtins.tryEval value; in if r.success && builtins.isString r.value then r.value else null;
  isDrv = value: let r = builtins.tryEval (builtins.isAttrs value && (value.type or null) == "derivation"); in r.success && r.value;
  flatten = list: builtins.concatMap (x:
    let r = builtins.tryEval x; in
    if !r.success then [ ] else if builtins.isList r.value then flatten r.value else [ r.value ]) list;

  # meta.license is nixpkgs' `lib.licenses.<name>` (an attribute set, with `spdxId` where SPDX
  # has the license), a list of them, or (old and hand-written packages) a string.
  license = l:
    if builtins.isAttrs l then { spdxId = str (l.spdxId or null); name = str (l.shortName or l.fullName or null); }
    else { spdxId = null; name = str l; };
  licenses = drv:
    let l = drv.meta.license or null; in
    if l == null then [ ] else map license (if builtins.isList l then l else [ l ]);
  homepage = drv:
    let h = drv.meta.homepage or null; in
    if builtins.isList h then (if h == [ ] then null else str (builtins.head h)) else str h;
  metaOf = drv: output: attempt {
    inherit output;
    pname = str (drv.pname or null);
    version = str (drv.version or null);
    licenses = attempt (licenses drv) [ ];
    homepage = attempt (homepage drv) null;
    description = str (drv.meta.description or null);
  } null;

  inputAttrs = [ "buildInputs" "propagatedBuildInputs" "nativeBuildInputs" "propagatedNativeBuildInputs" ];
  inputsOf = drv:
    let
      listed = builtins.concatMap (a:
        let v = builtins.tryEval (drv.${a} or [ ]); in
        if v.success && builtins.isList v.value then flatten v.value else [ ]) inputAttrs;
      toolchain = flatten [ (drv.stdenv.cc.libc or null) (drv.stdenv.cc.cc or null) ];
    in
    builtins.filter isDrv (listed ++ toolchain);
  item = drv: let key = builtins.tryEval drv.drvPath; in if key.success then [ { key = key.value; inherit drv; } ] else [ ];
  reachable = roots: builtins.genericClosure {
    startSet = builtins.concatMap item roots;
    operator = i: builtins.concatMap item (inputsOf i.drv);
  };
  outputsMeta = drv:
    let
      outputs = builtins.tryEval (drv.outputs or [ "out" ]);
      names = if outputs.success && builtins.isList outputs.value then outputs.value else [ "out" ];
    in
    builtins.concatMap (o:
      let path = builtins.tryEval drv.${o}.outPath; in
      if path.success && builtins.isString path.value
      then [ { name = builtins.unsafeDiscardStringContext path.value; value = metaOf drv o; } ]
      else [ ]) names;
  metaMap = roots: builtins.listToAttrs (builtins.concatMap (i: outputsMeta i.drv) (reachable roots));

  resolveAll = names:
    let
      packages = map (resolveWith false) names;
      roots = builtins.concatMap (name:
        let r = walkRoots false (rootsOf name) (split name); in
        if r.found && (r.usable or true) && isDrv r.value then [ r.value ] else [ ]) names;
    in {
      inherit packages;
      meta = if builtins.all (p: p.status == "ok") packages then metaMap roots else { };
      inherit (source) revision;
    };
in
if mode == "resolve" then resolveAll names
else if mode == "single" then map single names
else if mode == "probe" then builtins.isAttrs pkgs
else throw "unknown mode '${mode}'"
