# The package-set side of `nixery popcount`, one small answer at a time so that no
# invocation evaluates the whole set into one huge string.
#
#   mode = "names":        the sorted top-level attribute names;
#   mode = "derivations":  for the attribute names in `names` (a JSON list), the ones that are
#                          derivations: [ { attr; drvPath; outputs = [ store paths ]; } ].
#                          Attributes that throw, or are not derivations, are skipped.
#
# Arguments arrive as strings and are decoded with builtins.fromJSON, as in lookup.nix.
{ srcType, srcArgs, system, mode, names ? "[]" }:
let
  pkgs = import ./source.nix { inherit srcType srcArgs system; };

  describe = attr:
    let
      value = builtins.tryEval pkgs.${attr};
      drv = value.value;
      isDrv = builtins.tryEval (value.success && builtins.isAttrs drv && (drv.type or null) == "derivation");
      outputs = map (o: drv.${o}.outPath) (drv.outputs or [ "out" ]);
      info = builtins.tryEval (builtins.deepSeq [ drv.drvPath outputs ] {
        inherit attr outputs;
        drvPath = drv.drvPath;
      });
    in
    if isDrv.success && isDrv.value && info.success then [ info.value ] else [ ];
in
if mode == "names" then builtins.attrNames pkgs
else if mode == "derivations" then builtins.concatMap describe (builtins.fromJSON names)
else throw "unknown mode '${mode}'"
