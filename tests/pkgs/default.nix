# A package set shaped like nixpkgs, for the tests: `{ system ? ..., ... }: { attrs }`.
#
# Real nixpkgs cannot be built on the test machines (no network, no binary cache), so every
# package here is a `builtins.derivation` whose builder is Debian's static busybox, copied
# into the store (`builtins.path`), so the set builds in Nix's sandbox (on by default, as
# users run Nix) and its paths can be copied to and substituted from a binary cache. The shapes mirror what the registry must cope
# with in nixpkgs: camelCase names (bashInteractive), nested sets (haskellPackages.pandoc),
# digit-leading names (_1password), packages that reference each other (runtime graph), a
# package whose build fails, a slow package (timeouts, cancellation) and a large one.
#
# `system` is the *target* system the registry asks for (x86_64-linux or aarch64-linux).
# Derivations are built for the host so arm64 images can be built here (all but `native`,
# which declares the target system as nixpkgs' packages do); the target is recorded in each
# package's `nix-support/system` so tests can see what was asked.
#
# Some packages declare `meta.mainProgram` as nixpkgs' do (an attribute of the derivation
# value, not of the derivation, so store paths do not change): `hello`, `hello-lib`, `whoami`.
#
# Evaluated purely (as a flake's input, tests/integration/harness/flake_repo.rs), a set may
# not read the host: it is then given `hostSystem`, the system its builds run on, and
# `busyboxDir`, a directory of the flake holding a copy of the static busybox. Impurely both
# default to the host's (`builtins.currentSystem`, /bin), and `builtins.getEnv` below reads
# nothing in pure evaluation.
#
# Meta for SBOMs, in nixpkgs' shapes and likewise on the value only: `meta.license` as
# `lib.licenses` has them (an attribute set with `spdxId`, a list of them, one without an
# `spdxId` like `unfree`, and a bare string as old packages have), `meta.homepage`,
# `meta.description`, `pname` and `version`, and `buildInputs` naming what a package uses,
# as mkDerivation's results carry them (hello-lib uses greeting and busybox).
#
# NIXERY_TEST_NONCE (read at evaluation time) changes the derivations of `slow` and `fresh`,
# so a test can force a real, never-cached build.
#
# NIXERY_TEST_SALT (read at evaluation time) changes every derivation of the set, busybox
# included, so a test gets store paths no other test uses: it may copy them to a binary cache
# and delete them from the shared local store (tests/integration/harness/binary_cache.rs).
# Unset or empty, it changes nothing: the paths are those of the unsalted set. Only the
# busybox binary copied from the host (`busyboxStatic`, a source, not a derivation) is shared:
# it is an input of every build but no package references it at run time.
#
# Failures as nixpkgs has them: packages its meta checks refuse (unfree, broken, insecure; a
# `throw` with nixpkgs' wording, honouring `config` as nixpkgs does), a removed alias (a
# `throw`), and, nested under `failing`, evaluations that `builtins.tryEval` cannot catch
# (abort, infinite recursion, a missing file, a type error).
{ system ? builtins.currentSystem, config ? { }, hostSystem ? builtins.currentSystem, busyboxDir ? /bin, ... }:
let
  nonce = builtins.getEnv "NIXERY_TEST_NONCE";
  salt = builtins.getEnv "NIXERY_TEST_SALT";

  # The host's static busybox as a store path of its own: a directory holding only
  # `busybox` (busybox picks the applet by the name it is run as, so the file keeps its name).
  busyboxStatic = builtins.path {
    name = "busybox-static";
    path = busyboxDir;
    filter = path: type: baseNameOf path == "busybox";
  };
  bb = "${busyboxStatic}/busybox";

  # Derivation attributes with the salt, if any (see NIXERY_TEST_SALT above): every
  # `builtins.derivation` of the set goes through this.
  salted = attrs: attrs // (if salt == "" then { } else { NIXERY_TEST_SALT = salt; });

  # A derivation built by busybox's shell, with every busybox applet on PATH; `attrs` are
  # further attributes of the derivation (e.g. `outputs`).
  mkWith = attrs: name: script: builtins.derivation (salted ({
    inherit name;
    system = hostSystem;
    builder = bb;
    args = [ "sh" "-euc" ''
      ${bb} mkdir -p "$TMPDIR/.applets"
      ${bb} --install -s "$TMPDIR/.applets"
      export PATH="$TMPDIR/.applets"
      ${script}
    '' ];
  } // attrs));

  # The same with one output, which records the target system.
  mk = name: script: mkWith { } name ''
    mkdir -p $out/nix-support
    echo ${system} > $out/nix-support/system
    ${script}
  '';

  # An executable shell script at $out/bin/NAME, run by the busybox shell from the store.
  script = name: body: mk name ''
    mkdir -p $out/bin
    cat > $out/bin/${name} <<'NIXERY_EOF'
    #!${busybox}/bin/sh
    ${body}
    NIXERY_EOF
    chmod 0555 $out/bin/${name}
  '';

  # Links busybox applets into $out/bin, so the package references busybox at run time.
  applets = name: list: mk name ''
    mkdir -p $out/bin
    for a in ${builtins.concatStringsSep " " list}; do ln -s ${busybox}/bin/busybox $out/bin/$a; done
  '';

  # nixpkgs' meta checks (pkgs/stdenv/generic/check-meta.nix) in miniature: a package whose
  # meta says it is unfree, broken or insecure keeps its name, type and meta, but its
  # drvPath and outPath throw nixpkgs' message (its current wording: the reason, then
  # instructions for the user's own machine), unless `config` allows it the way nixpkgs'
  # config does (allowUnfree, allowBroken, permittedInsecurePackages).
  checkMeta = pos: drv:
    let
      meta = drv.meta or { };
      allow = what: variable: ''
        a) To temporarily allow ${what}, you can use an environment variable
           for a single invocation of the nix tools.

             $ export ${variable}=1

        b) For `nixos-rebuild` you can set
          { nixpkgs.config.allow${builtins.replaceStrings [ " packages" "u" "b" ] [ "" "U" "B" ] what} = true; }
        in configuration.nix to override this.
      '';
      problem =
        if !(meta.license.free or true) && !(config.allowUnfree or false) then {
          msg = "has an unfree license (‘${meta.license.shortName}’)";
          remediation = allow "unfree packages" "NIXPKGS_ALLOW_UNFREE";
        }
        else if meta.broken or false && !(config.allowBroken or false) then {
          msg = "is marked as broken";
          remediation = allow "broken packages" "NIXPKGS_ALLOW_BROKEN";
        }
        else if meta.knownVulnerabilities or [ ] != [ ]
          && !builtins.elem drv.name (config.permittedInsecurePackages or [ ]) then {
          msg = "is marked as insecure";
          remediation = "\nKnown issues:\n"
            + builtins.concatStringsSep "" (map (issue: " - ${issue}\n") meta.knownVulnerabilities)
            + ''

              You can install it anyway by allowing this package, using the
              following methods:

              a) To temporarily allow all insecure packages, you can use an environment
                 variable for a single invocation of the nix tools:

                   $ export NIXPKGS_ALLOW_INSECURE=1
            '';
        }
        else null;
      refusal = throw ("Refusing to evaluate package '${drv.name}' in ${pos.file}:${toString pos.line} "
        + "because it ${problem.msg}\n${problem.remediation}");
    in
    if problem == null then drv else drv // { drvPath = refusal; outPath = refusal; };

  # A derivation with several outputs, shaped like nixpkgs' curl: every output carries the
  # package's meta, as lib.extendDerivation gives it (so `curl.dev.meta.outputsToInstall`
  # is curl's [ "bin" "man" ] there too).
  multiOutput = { name, outputs, meta, script }:
    let
      drv = mkWith { inherit outputs; } name script;
      withMeta = d: d // { inherit meta; };
    in
    withMeta drv // builtins.listToAttrs (map (o: { name = o; value = withMeta drv.${o}; }) outputs);

  # lib.licenses as nixpkgs has them (a few).
  licenses = {
    gpl2Only = { shortName = "gpl2Only"; spdxId = "GPL-2.0-only"; fullName = "GNU General Public License v2.0 only"; free = true; };
    gpl3Plus = { shortName = "gpl3Plus"; spdxId = "GPL-3.0-or-later"; fullName = "GNU General Public License v3.0 or later"; free = true; };
    mit = { shortName = "mit"; spdxId = "MIT"; fullName = "MIT License"; free = true; };
    asl20 = { shortName = "asl20"; spdxId = "Apache-2.0"; fullName = "Apache License 2.0"; free = true; };
    curl = { shortName = "curl"; spdxId = "curl"; fullName = "curl License"; free = true; };
    unfree = { shortName = "unfree"; fullName = "Unfree"; free = false; };
  };

  busybox = mk "busybox-1.35.0" ''
    mkdir -p $out/bin
    cp ${bb} $out/bin/busybox
    chmod 0555 $out/bin/busybox
    ln -s busybox $out/bin/sh
  '' // {
    pname = "busybox";
    version = "1.35.0";
    meta = { license = licenses.gpl2Only; homepage = "https://busybox.net"; description = "Tiny versions of common UNIX utilities"; };
  };

  self = {
    inherit busybox;

    bashInteractive = mk "bash-interactive-5.2" ''
      mkdir -p $out/bin
      printf '#!%s/bin/sh\nexec %s/bin/busybox sh "$@"\n' ${busybox} ${busybox} > $out/bin/bash
      chmod 0555 $out/bin/bash
      ln -s bash $out/bin/sh
    '';

    coreutils = applets "coreutils-9.1" [
      "basename" "cat" "chmod" "cp" "cut" "date" "dirname" "echo" "env" "false" "head" "id"
      "ln" "ls" "mkdir" "mv" "printf" "pwd" "readlink" "rm" "sha256sum" "sleep" "sort" "stat"
      "tail" "tee" "test" "touch" "tr" "true" "uname" "wc" "whoami"
    ];

    # Programs that need the image's user database: busybox's `whoami` and `id` look the
    # uid up in /etc/passwd (mainProgram: `whoami`).
    whoami = applets "whoami-1.0" [ "whoami" "id" ] // { meta.mainProgram = "whoami"; };

    moreutils = script "sponge" ''exec ${busybox}/bin/busybox tee "$@" >/dev/null'';

    nano = script "nano" ''echo "nano (test stub) $*"'';

    cacert = mk "nss-cacert-3.92" ''
      mkdir -p $out/etc/ssl/certs
      printf '%s\n' '# test CA bundle' > $out/etc/ssl/certs/ca-bundle.crt
    '';

    iana-etc = mk "iana-etc-20230316" ''
      mkdir -p $out/etc
      printf 'tcp 6 TCP\nudp 17 UDP\n' > $out/etc/protocols
      printf 'http 80/tcp\nhttps 443/tcp\n' > $out/etc/services
    '';

    hello = script "hello" ''echo "Hello, world!"'' // {
      meta = {
        mainProgram = "hello";
        license = licenses.gpl3Plus;
        homepage = "https://www.gnu.org/software/hello/";
        description = "A program that produces a familiar, friendly greeting";
      };
    };

    # A program with a library: hello-lib's closure is hello-lib -> greeting -> busybox. It
    # runs busybox's cat by its store path, so it works in an image without a shell.
    greeting = mk "greeting-1.0" ''
      mkdir -p $out/share
      echo "greetings from the nix store" > $out/share/greeting.txt
    '' // { meta.license = "Public Domain, as a bare string"; };
    hello-lib = script "hello-lib" "exec ${busybox}/bin/busybox cat ${self.greeting}/share/greeting.txt"
      // {
        buildInputs = [ self.greeting busybox ];
        meta = { mainProgram = "hello-lib"; license = [ licenses.mit licenses.asl20 ]; };
      };

    # camelCase attribute, reached from the lowercase registry name `fooBar` -> `foobar`.
    fooBar = script "foo-bar" ''echo "foo bar"'';

    # Nested attribute set, reached as `haskellpackages.pandoc`.
    haskellPackages = {
      pandoc = script "pandoc" ''echo "pandoc (test stub) $*"'';
    };

    # Digit-leading names map to `_`-prefixed attributes: `1password` -> `_1password`.
    _1password = script "op" ''echo "1password (test stub)"'';

    # Packages named like the words of registry paths: `hello/blobs/uploads` is an image too.
    blobs = script "blobs" ''echo "blobs (test stub)"'';
    uploads = script "uploads" ''echo "uploads (test stub)"'';

    # An attribute that is not a derivation.
    lib = { version = "1.0"; };

    # A package whose build fails, with a recognisable last log line.
    broken = mk "broken-1.0" ''
      echo "compiling broken..."
      echo "error: this package is broken on purpose" >&2
      exit 1
    '';

    # A package that builds for x86_64-linux only (the arm64 image of it fails), like
    # nixpkgs' packages with prebuilt x86 binaries.
    x86only = if system == "aarch64-linux"
      then mk "x86only-1.0" ''
        echo "error: x86only has no aarch64 port" >&2
        exit 1
      ''
      else script "x86only" ''echo "x86 only"'';

    # A package built for the system asked for, as nixpkgs' are: its derivation's `system`
    # is the target (`aarch64-linux` for arm64), so unlike every other package here its arm64
    # image needs a Nix that builds for aarch64-linux (a remote builder, binfmt emulation)
    # or a binary cache that has it.
    native = mkWith { inherit system; } "native-1.0" ''
      mkdir -p $out/bin $out/nix-support
      echo ${system} > $out/nix-support/system
      printf '#!%s/bin/sh\necho native\n' ${busybox} > $out/bin/native
      chmod 0555 $out/bin/native
    '';

    # A package whose build requires a system feature (`requiredSystemFeatures`), as
    # nixpkgs' GPU tests require `cuda` and NixOS tests `kvm`: only a Nix whose
    # `system-features` list it (no default does) or a remote builder that has it builds it.
    gpuTest = mkWith { requiredSystemFeatures = [ "cuda" ]; } "gpu-test-1.0" ''
      mkdir -p $out/nix-support
      echo ${system} > $out/nix-support/system
    '';

    # A package that takes long to build; with a fresh nonce it is never in the store.
    slow = mk "slow-${if nonce == "" then "0" else nonce}" ''
      echo "slow build ${nonce} starting"
      sleep 120
    '';

    # A package that is new to the store whenever the nonce changes.
    fresh = mk "fresh-${if nonce == "" then "0" else nonce}" ''
      mkdir -p $out/bin
      printf '#!%s/bin/sh\necho fresh %s\n' ${busybox} ${nonce} > $out/bin/fresh
      chmod 0555 $out/bin/fresh
    '';

    # Several outputs: `curl` is its default output (bin), `curl.dev` the headers.
    curl = multiOutput {
      name = "curl-8.0";
      outputs = [ "bin" "dev" "out" "man" ];
      meta = { outputsToInstall = [ "bin" "man" ]; license = licenses.curl; homepage = "https://curl.se"; };
      script = ''
        mkdir -p $out/lib $out/nix-support $bin/bin $dev/include/curl $dev/lib/pkgconfig $man/share/man/man1
        echo ${system} > $out/nix-support/system
        echo "libcurl (test stub)" > $out/lib/libcurl.txt
        printf '#!%s/bin/sh\ncat %s/lib/libcurl.txt\necho "curl (test stub) $*"\n' ${busybox} $out > $bin/bin/curl
        chmod 0555 $bin/bin/curl
        echo '#define CURL_TEST 1' > $dev/include/curl/curl.h
        printf 'libdir=%s/lib\n' $out > $dev/lib/pkgconfig/libcurl.pc
        echo '.TH CURL 1' > $man/share/man/man1/curl.1
      '';
    };

    # Refused by the meta checks unless `config` allows them (see checkMeta).
    nonfree = checkMeta __curPos (mk "nonfree-1.0" "echo nonfree > $out/readme" // {
      meta.license = licenses.unfree;
    });
    markedBroken = checkMeta __curPos (mk "marked-broken-1.0" "echo broken > $out/readme" // {
      meta.broken = true;
    });
    insecure = checkMeta __curPos (mk "insecure-1.0" "echo insecure > $out/readme" // {
      meta.knownVulnerabilities = [ "CVE-2099-0001: remote code execution in the test stub" ];
    });

    # A removed package, as nixpkgs' aliases.nix keeps them.
    oldhello = throw "'oldhello' has been removed because it was unmaintained upstream; use 'hello' instead";

    # Evaluations that builtins.tryEval cannot catch, nested as nixpkgs' are
    # (pkgsStatic.texlive…), so that walking the top level (popcount) meets none of them.
    failing = {
      aborting = abort "this package aborts on purpose";
      recursive = let loop = mk "recursive-1.0" "echo ${loop}"; in loop;
      missingFile = import ./does-not-exist.nix;
      typeError = builtins.derivation {
        name = "type-error-1.0";
        system = hostSystem;
        builder = bb;
        version = 1 + "0";
      };
    };

    # Incompressible data, for the memory and throughput benchmark (size in MiB from
    # NIXERY_BIG_MIB at evaluation time, 64 by default). NIXERY_BIG_PAUSE (seconds; unset, no
    # pause) makes its build take at least that long, for tests that must catch a server
    # mid-build whatever the machine's speed.
    big = let
        mib = let v = builtins.getEnv "NIXERY_BIG_MIB"; in if v == "" then "64" else v;
        pause = builtins.getEnv "NIXERY_BIG_PAUSE";
      in
      mk "big-${mib}mib" ''
        ${if pause == "" then "" else "sleep ${pause}"}
        mkdir -p $out/share/big
        i=0
        while [ $i -lt 8 ]; do
          dd if=/dev/urandom of=$out/share/big/part$i bs=128k count=${mib} 2>/dev/null
          i=$((i + 1))
        done
      '';

    # Real binaries and libraries, for the compression benchmark (scripts/bench-compression,
    # which adds a directory of this machine to the store and names it in NIXERY_BENCH_FILES):
    # random data alone flatters a compressor that stores noise. The store path is taken as
    # it is (`builtins.storePath`), not copied at evaluation time as `builtins.path` would
    # (hashing hundreds of MB on every request the benchmark times), and linked from $out so
    # it is in the closure. Unset, the attribute fails to evaluate: nothing else builds it.
    bench-files = let path = builtins.getEnv "NIXERY_BENCH_FILES"; in
      if path == "" then throw "bench-files needs NIXERY_BENCH_FILES (scripts/bench-compression)"
      else mk "bench-files" "ln -s ${builtins.storePath path} $out/files";
  };
in
self
