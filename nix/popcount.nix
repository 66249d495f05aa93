# The package-set side of `nixery popcount`, one small answer at a time so that no
# invocation evaluates the whole set into one huge string. Evaluated with `--eval` alone:
# store paths are computed, no derivation is written to the store.
#
#   mode = "names":    the sorted top-level attribute names;
#   mode = "outputs":  for the attribute names in `names` (a JSON list), the ones that are
#                      derivations and the paths of all their outputs:
#                      [ { attr; outputs = [ store paths ]; } ].
#                      Attributes that throw (unfree, broken, removed aliases), or are not
#                      derivations, are skipped.
#
# Arguments arrive as strings and are decoded with builtins.fromJSON, as in lookup.nix.
{ srcType, srcArgs, system, mode, names ? "[]" }:
let
  pkgs = (import ./source.nix { inherit srcType srcArgs system; }).set;

  describe = attr:
    let
      value = builtins.tryEval pkgs.${attr};
      drv = value.value;
      isDrv = builtins.tryEval (value.success && builtins.isAttrs drv && (drv.type or null) == "derivation");
      outputs = map (o: drv.${o}.outPath) (drv.outputs or [ "out" ]);
      # The package's own outPath too: a set may guard only it, as nixpkgs' meta checks
      # guard every output.
      info = builtins.tryEval (builtins.deepSeq [ drv.outPath outputs ] { inherit attr outputs; });
    in
    if isDrv.success && isDrv.value && info.success then [ info.value ] else [ ];
in
if mode == "names" then builtins.attrNames pkgs
else if mode == "outputs" then builtins.concatMap describe (builtins.fromJSON names)
else throw "unknown mode '${mode}'"
