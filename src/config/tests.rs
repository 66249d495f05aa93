//! Configuration tests: hermetic (the environment is a map), one per setting group.

use super::*;
use crate::compression::Compression;
use crate::image::Platforms;
use crate::layers::Grouping;
use std::collections::HashMap;
use std::num::NonZeroUsize;

/// An environment of exactly `vars`.
fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
    let vars: HashMap<String, OsString> = vars.iter().map(|(k, v)| (k.to_string(), v.into())).collect();
    move |var| vars.get(var).cloned()
}

fn command(args: &[&str], vars: &[(&str, &str)]) -> Result<Command, ConfigError> {
    Command::parse(std::iter::once("nixery").chain(args.iter().copied()), &env(vars))
}

fn serve(args: &[&str], vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    match command(args, vars)? {
        Command::Serve(config) => Ok(*config),
        other => panic!("not serve: {other:?}"),
    }
}

fn parse(args: &[&'static str]) -> Result<Config, ConfigError> {
    Config::parse_from(std::iter::once("nixery").chain(args.iter().copied()))
}

/// The variable and flag a bad value was reported for.
fn invalid(err: ConfigError) -> (String, String, String) {
    match err {
        ConfigError::InvalidValue { variable, flag, value, .. } => (variable, flag, value),
        other => panic!("not an invalid value: {other}"),
    }
}

#[test]
fn defaults_match_nixery() {
    // No source configured: the nixos-unstable channel.
    let c = parse(&[]).unwrap();
    let nixpkgs = RemoteUrl::new("https://github.com/NixOS/nixpkgs");
    let unstable = Channel::Branch("nixos-unstable".into());
    assert_eq!(c.build.policy.source, PkgSource::Channel { repo: nixpkgs, channel: unstable });
    assert_eq!(c.cache, CachePolicy { source_ttl: Duration::from_secs(60), manifest_memory: 64 << 20 });
    assert_eq!(c.build.policy.layers, LayerPolicy { grouping: Grouping::Banded, budget: 94 });
    assert_eq!(c.build.policy.nix.timeout, Duration::from_secs(60));
    assert!(c.build.policy.nix.local_builds, "Nixery builds what no cache has");
    assert_eq!(c.build.policy.nix.max_jobs, crate::nix::cores());
    assert_eq!(c.build.policy.nix.nixpkgs_config, NixpkgsConfig::default());
    assert_eq!(c.build.policy.platforms, Platforms::host(), "one platform, the host's");
    assert_eq!(c.port, 8080);
    assert_eq!(serve(&[], &[]).unwrap().port, 8080);
}

#[test]
fn at_most_one_source() {
    let err = parse(&["--channel", "nixos-23.05", "--pkgs-repo", "https://x"]).unwrap_err();
    assert!(err.to_string().contains("NIXERY_CHANNEL and NIXERY_PKGS_REPO"), "{err}");
    let err = serve(&["--pkgs-path", "/"], &[("NIXERY_PKGS_REPO", "https://x")]).unwrap_err();
    assert!(matches!(&err, ConfigError::SeveralSources(v) if v == &["NIXERY_PKGS_REPO", "NIXERY_PKGS_PATH"]));
}

#[test]
fn the_channel_repository_ttl_and_cache_size_are_configurable() {
    let vars = [
        ("NIXERY_CHANNEL", "nixos-24.11"),
        ("NIXERY_CHANNEL_REPO", "file:///srv/nixpkgs"),
        ("NIXERY_SOURCE_TTL", "0"),
        ("NIXERY_MANIFEST_CACHE_MIB", "2"),
    ];
    let c = serve(&[], &vars).unwrap();
    let PkgSource::Channel { repo, channel } = c.build.policy.source else { panic!("not a channel") };
    assert_eq!((repo.as_str(), channel.as_str()), ("file:///srv/nixpkgs", "nixos-24.11"));
    assert_eq!(c.cache, CachePolicy { source_ttl: Duration::ZERO, manifest_memory: 2 << 20 });
    let (var, _, _) = invalid(serve(&[], &[("NIXERY_SOURCE_TTL", "-1")]).unwrap_err());
    assert_eq!(var, "NIXERY_SOURCE_TTL");
    let (var, _, _) = invalid(serve(&[], &[("NIXERY_MANIFEST_CACHE_MIB", "0")]).unwrap_err());
    assert_eq!(var, "NIXERY_MANIFEST_CACHE_MIB");
    let err = serve(&["--pkgs-path", "/"], &[("NIXERY_CHANNEL_REPO", "file:///x")]).unwrap_err();
    assert!(matches!(err, ConfigError::ChannelRepoWithoutChannel("NIXERY_PKGS_PATH")), "{err}");
    // The repository alone selects the default channel there.
    let c = serve(&[], &[("NIXERY_CHANNEL_REPO", "file:///x")]).unwrap();
    assert!(matches!(c.build.policy.source, PkgSource::Channel { ref repo, .. } if repo.as_str() == "file:///x"));
}

#[test]
fn platforms_are_a_checked_list() {
    let c = serve(&[], &[("NIXERY_PLATFORMS", "linux/arm64,linux/amd64")]).unwrap();
    assert_eq!(c.build.policy.platforms.to_string(), "linux/amd64,linux/arm64");
    let (var, flag, value) = invalid(serve(&[], &[("NIXERY_PLATFORMS", "linux/amd64,linux/s390x")]).unwrap_err());
    assert_eq!(
        (var.as_str(), flag.as_str(), value.as_str()),
        ("NIXERY_PLATFORMS", "--platforms", "linux/amd64,linux/s390x")
    );
    let err = serve(&["--platforms", "windows/amd64"], &[]).unwrap_err();
    assert!(err.to_string().contains("unknown platform 'windows/amd64'"), "{err}");
}

#[test]
fn a_flake_is_a_fourth_source_whose_reference_is_checked_at_start_up() {
    let c = serve(&[], &[("NIXERY_PKGS_FLAKE", "github:example/tools?dir=nix")]).unwrap();
    let PkgSource::Flake(flake) = &c.build.policy.source else { panic!("not a flake: {:?}", c.build.policy.source) };
    assert_eq!(flake.redacted(), "github:example/tools?dir=nix");
    let c = parse(&["--pkgs-flake", "git+https://u:tok@git.example/tools"]).unwrap();
    assert!(matches!(c.build.policy.source, PkgSource::Flake(_)));

    let err = serve(&["--pkgs-flake", "github:o/r"], &[("NIXERY_PKGS_REPO", "https://x")]).unwrap_err();
    assert!(matches!(&err, ConfigError::SeveralSources(v) if v == &["NIXERY_PKGS_REPO", "NIXERY_PKGS_FLAKE"]), "{err}");
    let err = serve(&[], &[("NIXERY_PKGS_FLAKE", "nixpkgs")]).unwrap_err();
    assert!(err.to_string().starts_with("NIXERY_PKGS_FLAKE: 'nixpkgs' is an indirect reference"), "{err}");
    let err = serve(&[], &[("NIXERY_PKGS_FLAKE", "github:o/r"), ("NIXERY_CHANNEL_REPO", "file:///x")]).unwrap_err();
    assert!(matches!(err, ConfigError::ChannelRepoWithoutChannel("NIXERY_PKGS_FLAKE")), "{err}");

    // A path flake's directory must exist, and is made canonical.
    let err = serve(&[], &[("NIXERY_PKGS_FLAKE", "path:/does/not/exist")]).unwrap_err();
    assert!(err.to_string().starts_with("NIXERY_PKGS_FLAKE path:/does/not/exist: "), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(dir.path(), &link).unwrap();
    let c = serve(&[], &[("NIXERY_PKGS_FLAKE", &format!("path:{}", link.display()))]).unwrap();
    let PkgSource::Flake(flake) = &c.build.policy.source else { panic!("not a flake") };
    assert_eq!(flake.local_dir(), Some(dir.path().canonicalize().unwrap().as_path()));
}

#[test]
fn nixpkgs_config_is_refused_for_a_flake_saying_why() {
    let vars = [("NIXERY_PKGS_FLAKE", "github:o/r"), ("NIXERY_NIXPKGS_CONFIG", r#"{"allowUnfree": true}"#)];
    let err = serve(&[], &vars).unwrap_err();
    assert!(matches!(err, ConfigError::NixpkgsConfigWithFlake), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("cannot be applied to a flake's outputs") && message.contains("configure it there"),
        "{message}"
    );
    // Unset (or empty, which counts as unset) is fine.
    assert!(serve(&[], &[("NIXERY_PKGS_FLAKE", "github:o/r"), ("NIXERY_NIXPKGS_CONFIG", "")]).is_ok());
}

#[test]
fn a_missing_pkgs_path_is_refused_with_the_variable_name() {
    let err = parse(&["--pkgs-path", "/does/not/exist"]).unwrap_err();
    assert!(err.to_string().starts_with("NIXERY_PKGS_PATH"), "{err}");
}

#[test]
fn budget_and_timeout_are_range_checked() {
    let budget = ("NIXERY_LAYER_BUDGET".to_owned(), "--layer-budget".to_owned());
    let (var, flag, value) = invalid(serve(&["--layer-budget", "0"], &[]).unwrap_err());
    assert_eq!(((var, flag), value.as_str()), (budget.clone(), "0"));
    let (var, flag, _) = invalid(serve(&["--layer-budget", "125"], &[]).unwrap_err());
    assert_eq!((var, flag), budget);
    let (var, _, _) = invalid(serve(&["--nix-timeout", "0"], &[]).unwrap_err());
    assert_eq!(var, "NIX_TIMEOUT");
    assert_eq!(serve(&["--layer-budget", "124"], &[]).unwrap().build.policy.layers.budget, 124);
}

#[test]
fn layer_compression_is_gzip_unless_set_and_workers_are_a_hidden_count() {
    assert_eq!(parse(&[]).unwrap().archive, ArchivePolicy { compression: Compression::Gzip, workers: None });
    let c = serve(&[], &[("NIXERY_LAYER_COMPRESSION", "zstd"), ("NIXERY_COMPRESSION_WORKERS", "3")]).unwrap();
    assert_eq!(c.archive, ArchivePolicy { compression: Compression::Zstd, workers: NonZeroUsize::new(3) });
    assert_eq!(serve(&["--layer-compression", "gzip"], &[]).unwrap().archive.compression, Compression::Gzip);
    let err = serve(&[], &[("NIXERY_LAYER_COMPRESSION", "xz")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid value 'xz' for NIXERY_LAYER_COMPRESSION (--layer-compression): expected one of gzip, zstd"
    );
    let (var, _, value) = invalid(serve(&[], &[("NIXERY_COMPRESSION_WORKERS", "0")]).unwrap_err());
    assert_eq!((var.as_str(), value.as_str()), ("NIXERY_COMPRESSION_WORKERS", "0"));
    let ConfigError::Help(help) = command(&["--help"], &[]).unwrap_err() else { panic!("--help is not help") };
    assert!(help.to_string().contains("NIXERY_LAYER_COMPRESSION"), "{help}");
    assert!(!help.to_string().contains("NIXERY_COMPRESSION_WORKERS"), "a setting for tests: {help}");
}

#[test]
fn connection_limits_and_shutdown_have_defaults_and_bounds() {
    let c = serve(&[], &[]).unwrap();
    let expected = server::Limits {
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_connections: 4096,
    };
    assert_eq!((c.connections, c.shutdown_timeout), (expected, Duration::from_secs(25)));
    let vars = [
        ("NIXERY_HEADER_TIMEOUT", "2"),
        ("NIXERY_IDLE_TIMEOUT", "3"),
        ("NIXERY_MAX_CONNECTIONS", "100"),
        ("NIXERY_SHUTDOWN_TIMEOUT", "5"),
    ];
    let c = serve(&[], &vars).unwrap();
    assert_eq!(c.connections.header_timeout, Duration::from_secs(2));
    assert_eq!(c.connections.idle_timeout, Duration::from_secs(3));
    assert_eq!(c.connections.max_connections, 100);
    assert_eq!(c.shutdown_timeout, Duration::from_secs(5));
    let (var, _, _) = invalid(serve(&[], &[("NIXERY_HEADER_TIMEOUT", "0")]).unwrap_err());
    assert_eq!(var, "NIXERY_HEADER_TIMEOUT");
    let (var, _, _) = invalid(serve(&[], &[("NIXERY_MAX_CONNECTIONS", "3")]).unwrap_err());
    assert_eq!(var, "NIXERY_MAX_CONNECTIONS");
}

#[test]
fn object_store_backends_need_a_bucket_and_take_the_proxy_flag() {
    let err = parse(&["--storage-backend", "gcs"]).unwrap_err();
    assert!(err.to_string().contains("GCS_BUCKET"), "{err}");
    let err = parse(&["--storage-backend", "s3"]).unwrap_err();
    assert!(err.to_string().contains("NIXERY_S3_BUCKET"), "{err}");
    let c =
        parse(&["--storage-backend", "gcs", "--gcs-bucket", "b", "--proxy-blobs", "--signed-url-ttl", "60"]).unwrap();
    let StorageConfig::Gcs(gcs) = c.storage else { panic!("not gcs") };
    assert_eq!(gcs.bucket, "b");
    assert!(gcs.proxy_blobs);
    assert_eq!(gcs.url_ttl, Duration::from_secs(60));
    let c =
        parse(&["--storage-backend", "s3", "--s3-bucket", "b", "--aws-endpoint-url-s3", "http://127.0.0.1:9"]).unwrap();
    let StorageConfig::S3(s3) = c.storage else { panic!("not s3") };
    assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9"));
    assert!(!s3.proxy_blobs);
}

#[test]
fn subcommands_take_their_own_arguments() {
    let layers = command(&["layers", "shell/git", "--pkgs-path", "/", "--layer-budget", "10"], &[]).unwrap();
    let Command::Layers { image, tag, build, .. } = layers else { panic!("not layers") };
    assert_eq!(image, "shell/git");
    assert_eq!(tag, "latest");
    assert_eq!(build.policy.layers.budget, 10);
    let popcount = command(&["popcount", "--pkgs-path", "/", "-o", "/tmp/p.json"], &[]).unwrap();
    let Command::Popcount(p) = popcount else { panic!("not popcount") };
    assert_eq!(p.output, PathBuf::from("/tmp/p.json"));
    assert_eq!(p.binary_cache.as_str(), "https://cache.nixos.org/");
    assert_eq!(p.connections, 32);
}

#[test]
fn variables_set_what_the_command_line_does_not() {
    let vars = [
        ("PORT", "9000"),
        ("NIXERY_PKGS_PATH", "/"),
        ("NIXERY_LAYER_BUDGET", "10"),
        ("NIXERY_LAYER_GROUPING", "nixery"),
        ("NIX_TIMEOUT", "30"),
        // Empty counts as unset: not a second package source.
        ("NIXERY_CHANNEL", ""),
    ];
    let c = serve(&[], &vars).unwrap();
    assert_eq!(c.port, 9000);
    assert_eq!(c.build.policy.source, PkgSource::Path("/".into()));
    assert_eq!(c.build.policy.layers, LayerPolicy { grouping: Grouping::Nixery, budget: 10 });
    assert_eq!(c.build.policy.nix.timeout, Duration::from_secs(30));
    // The command line wins, and a variable it overrides is not even checked.
    let c = serve(&["--port", "9001", "--layer-budget", "11"], &[("PORT", "eighty"), ("NIXERY_LAYER_BUDGET", "10")])
        .unwrap();
    assert_eq!((c.port, c.build.policy.layers.budget), (9001, 11));
}

#[test]
fn every_grouping_is_selectable_by_name() {
    for (name, grouping) in [
        ("banded", Grouping::Banded),
        ("stable", Grouping::Stable),
        ("nixery", Grouping::Nixery),
        ("sizefirst", Grouping::SizeFirst),
    ] {
        let c = serve(&[], &[("NIXERY_PKGS_PATH", "/"), ("NIXERY_LAYER_GROUPING", name)]).unwrap();
        assert_eq!(c.build.policy.layers.grouping, grouping, "{name}");
    }
    let err = serve(&[], &[("NIXERY_PKGS_PATH", "/"), ("NIXERY_LAYER_GROUPING", "size-first")]).unwrap_err();
    assert!(err.to_string().contains("sizefirst"), "the error lists the values: {err}");
}

#[test]
fn subcommands_read_their_variables_after_their_name() {
    let vars = [("NIX_TIMEOUT", "30"), ("NIXERY_PKGS_PATH", "/")];
    let Command::Layers { image, build, .. } = command(&["layers", "--", "shell/git"], &vars).unwrap() else {
        panic!("not layers")
    };
    assert_eq!(image, "shell/git");
    assert_eq!(build.policy.nix.timeout, Duration::from_secs(30));
    assert_eq!(build.policy.source, PkgSource::Path("/".into()));
    let Command::Popcount(p) = command(&["--port", "1", "popcount", "--nix-timeout", "5"], &vars).unwrap() else {
        panic!("not popcount")
    };
    assert_eq!(p.nix_timeout, Duration::from_secs(5));
}

#[test]
fn switches_take_true_or_false_from_their_variables() {
    let gcs = [("NIXERY_STORAGE_BACKEND", "gcs"), ("GCS_BUCKET", "b")];
    let proxied = |value: &str| {
        let vars = [gcs[0], gcs[1], ("NIXERY_PROXY_BLOBS", value)];
        serve(&[], &vars).map(|c| matches!(c.storage, StorageConfig::Gcs(g) if g.proxy_blobs))
    };
    assert!(proxied("true").unwrap());
    assert!(!proxied("false").unwrap());
    let (var, flag, value) = invalid(proxied("yes").unwrap_err());
    assert_eq!((var.as_str(), flag.as_str(), value.as_str()), ("NIXERY_PROXY_BLOBS", "--proxy-blobs", "yes"));
}

#[test]
fn bad_values_name_the_variable_the_flag_and_the_reason() {
    let err = serve(&[], &[("PORT", "eighty")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid value 'eighty' for PORT (--port): invalid digit found in string",
        "the value parser's own error is the reason"
    );
    let err = serve(&["--storage-backend", "floppy"], &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid value 'floppy' for NIXERY_STORAGE_BACKEND (--storage-backend): expected one of filesystem, gcs, s3"
    );
    let err = serve(&[], &[("NIXERY_LAYER_BUDGET", "500")]).unwrap_err();
    assert!(err.to_string().ends_with("500 is not in 1..=124"), "{err}");
    let err = command(&["popcount", "--batch", "0"], &[]).unwrap_err();
    assert!(matches!(err, ConfigError::Usage(_)), "--batch has no variable: {err}");
}

#[test]
fn popcount_takes_http_binary_caches_only() {
    let cache = |url: &'static str| match command(&["popcount", "--binary-cache", url], &[]) {
        Ok(Command::Popcount(p)) => Ok(p.binary_cache),
        Ok(other) => panic!("not popcount: {other:?}"),
        Err(e) => Err(e.to_string()),
    };
    assert_eq!(cache("http://127.0.0.1:8081/sub").unwrap().as_str(), "http://127.0.0.1:8081/sub");
    assert_eq!(cache("https://cache.example").unwrap().as_str(), "https://cache.example/");
    for (bad, why) in [
        ("file:///srv/cache", "expected an http or https URL, not file"),
        ("s3://bucket", "expected an http or https URL, not s3"),
        ("cache.nixos.org", "relative URL without a base"),
    ] {
        let err = cache(bad).unwrap_err();
        assert!(err.contains(bad) && err.contains(why), "{bad}: {err}");
    }
}

#[test]
fn nix_settings_map_into_the_nix_policy() {
    let vars = [("NIXERY_LOCAL_BUILDS", "false"), ("NIXERY_MAX_NIX_JOBS", "3")];
    let nix = serve(&[], &vars).unwrap().build.policy.nix;
    assert!(!nix.local_builds);
    assert_eq!(nix.max_jobs, 3);
    let (var, _, value) = invalid(serve(&[], &[("NIXERY_LOCAL_BUILDS", "no")]).unwrap_err());
    assert_eq!((var.as_str(), value.as_str()), ("NIXERY_LOCAL_BUILDS", "no"));
    let (var, _, _) = invalid(serve(&[], &[("NIXERY_MAX_NIX_JOBS", "0")]).unwrap_err());
    assert_eq!(var, "NIXERY_MAX_NIX_JOBS");
    assert!(
        serve(&["--local-builds", "true"], &[("NIXERY_LOCAL_BUILDS", "false")]).unwrap().build.policy.nix.local_builds
    );
}

#[test]
fn nixpkgs_config_is_inline_json_or_a_file() {
    let config =
        |value: &str| serve(&[], &[("NIXERY_NIXPKGS_CONFIG", value)]).map(|c| c.build.policy.nix.nixpkgs_config);
    let NixpkgsConfig::Attrs(attrs) = config(r#"{"allowUnfree": true}"#).unwrap() else { panic!("not attrs") };
    assert_eq!(attrs["allowUnfree"], serde_json::Value::Bool(true));
    let err = config("{allowUnfree = true;}").unwrap_err().to_string();
    assert!(err.starts_with("NIXERY_NIXPKGS_CONFIG: the value is not a JSON object"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("config.json");
    std::fs::write(&json, r#"{"permittedInsecurePackages": ["insecure-1.0"]}"#).unwrap();
    let NixpkgsConfig::Attrs(attrs) = config(json.to_str().unwrap()).unwrap() else { panic!("not attrs") };
    assert!(attrs.contains_key("permittedInsecurePackages"));
    std::fs::write(&json, "[1]").unwrap();
    assert!(config(json.to_str().unwrap()).unwrap_err().to_string().contains("JSON but not an object"));
    let nix = dir.path().join("config.nix");
    std::fs::write(&nix, "{ allowUnfreePredicate = pkg: true; }").unwrap();
    let NixpkgsConfig::File { path, .. } = config(nix.to_str().unwrap()).unwrap() else { panic!("not a file") };
    assert_eq!(path, std::fs::canonicalize(&nix).unwrap());
    let err = config("/no/such/config.nix").unwrap_err().to_string();
    assert!(err.starts_with("NIXERY_NIXPKGS_CONFIG: /no/such/config.nix:"), "{err}");
}

#[test]
fn help_and_version_are_answers_for_main_to_print() {
    let ConfigError::Help(help) = command(&["--help"], &[]).unwrap_err() else { panic!("--help is not help") };
    assert!(help.to_string().contains("[env: NIXERY_LAYER_GROUPING="), "{help}");
    assert!(matches!(command(&["layers", "--help"], &[]), Err(ConfigError::Help(_))));
    assert!(matches!(command(&["--version"], &[]), Err(ConfigError::Help(_))));
    assert!(matches!(command(&["--bogus"], &[]), Err(ConfigError::Usage(_))));
    assert!(matches!(command(&["layers"], &[]), Err(ConfigError::Usage(_))), "the image is required");
}

#[test]
fn s3_falls_back_to_the_generic_aws_variables() {
    let s3 = |vars: &[(&str, &str)]| {
        let mut all = vec![("NIXERY_STORAGE_BACKEND", "s3"), ("NIXERY_S3_BUCKET", "b")];
        all.extend_from_slice(vars);
        let StorageConfig::S3(s3) = serve(&[], &all).unwrap().storage else { panic!("not s3") };
        s3
    };
    let fallback = s3(&[("AWS_DEFAULT_REGION", "eu-west-1"), ("AWS_ENDPOINT_URL", "http://generic")]);
    assert_eq!(fallback.region.as_deref(), Some("eu-west-1"));
    assert_eq!(fallback.endpoint.as_deref(), Some("http://generic"));
    let specific = s3(&[
        ("AWS_DEFAULT_REGION", "eu-west-1"),
        ("AWS_REGION", "us-west-2"),
        ("AWS_ENDPOINT_URL", "http://generic"),
        ("AWS_ENDPOINT_URL_S3", "http://s3"),
    ]);
    assert_eq!(specific.region.as_deref(), Some("us-west-2"));
    assert_eq!(specific.endpoint.as_deref(), Some("http://s3"));
    assert_eq!(s3(&[("AWS_DEFAULT_REGION", "")]).region, None, "empty counts as unset");
}

/// Runs in a child process of this test binary whose environment sets the variables to
/// values that would fail or change the result if anything read them.
#[test]
fn the_process_environment_is_not_consulted() {
    const CHILD: &str = "NIXERY_CONFIG_TEST_CHILD";
    if std::env::var_os(CHILD).is_none() {
        let name = "config::tests::the_process_environment_is_not_consulted";
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--nocapture"])
            .env(CHILD, "1")
            .envs([("PORT", "eighty"), ("NIXERY_LAYER_BUDGET", "500"), ("NIXERY_PKGS_REPO", "https://x")])
            .envs([("NIXERY_STORAGE_BACKEND", "s3"), ("AWS_DEFAULT_REGION", "process")])
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && log.contains("1 passed"), "{log}");
        return;
    }
    assert_eq!(std::env::var("PORT").as_deref(), Ok("eighty"), "the child sees the garbage");
    let c = serve(&[], &[("PORT", "9000")]).unwrap();
    assert_eq!(c.port, 9000);
    assert_eq!(c.build.policy.layers.budget, 94);
    assert!(matches!(c.build.policy.source, PkgSource::Channel { .. }));
    assert!(matches!(c.storage, StorageConfig::Filesystem(_)));
    let s3 = serve(&[], &[("NIXERY_STORAGE_BACKEND", "s3"), ("NIXERY_S3_BUCKET", "b")]).unwrap();
    let StorageConfig::S3(s3) = s3.storage else { panic!("not s3") };
    assert_eq!(s3.region, None);
    assert_eq!(parse(&[]).unwrap().port, 8080);
}

#[test]
fn the_signing_key_is_opened_at_start_up_and_errors_name_the_variable_not_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cosign.key");
    std::fs::write(&key, include_str!("../signing/testdata/cosign.key")).unwrap();
    let key = key.to_str().unwrap().to_owned();
    let public = include_str!("../signing/testdata/cosign.pub").trim();
    let c = serve(&[], &[("NIXERY_SIGNING_KEY", &key), ("NIXERY_SIGNING_KEY_PASSWORD", "pw")]).unwrap();
    assert_eq!(c.artifacts.signing.as_ref().unwrap().public_pem().trim(), public);
    let password = dir.path().join("password");
    std::fs::write(&password, "pw\n").unwrap();
    let from_file =
        [("NIXERY_SIGNING_KEY", key.as_str()), ("NIXERY_SIGNING_KEY_PASSWORD_FILE", password.to_str().unwrap())];
    assert_eq!(serve(&[], &from_file).unwrap().artifacts.signing.unwrap().public_pem().trim(), public);
    assert!(serve(&[], &[]).unwrap().artifacts.signing.is_none(), "no key: nothing signed");

    let err = serve(&[], &[("NIXERY_SIGNING_KEY", &key), ("NIXERY_SIGNING_KEY_PASSWORD", "s3cret-wrong")]).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("NIXERY_SIGNING_KEY: the password does not open the key"), "{text}");
    assert!(!text.contains("s3cret") && !text.contains(&key), "{text}");
    let err = serve(&[], &[("NIXERY_SIGNING_KEY", &key)]).unwrap_err();
    assert!(err.to_string().contains("no password was given"), "{err}");
    let missing = dir.path().join("nope.key");
    let err = serve(&[], &[("NIXERY_SIGNING_KEY", missing.to_str().unwrap())]).unwrap_err();
    assert_eq!(err.to_string(), "NIXERY_SIGNING_KEY: cannot read the key file: entity not found");
}

#[test]
fn the_registry_name_is_a_host_and_optional_path() {
    let name = |v: &str| serve(&[], &[("NIXERY_REGISTRY_NAME", v)]).map(|c| c.artifacts.registry_name);
    assert_eq!(name("registry.example.com:5000/").unwrap().as_deref(), Some("registry.example.com:5000"));
    assert_eq!(name("r.example/images").unwrap().as_deref(), Some("r.example/images"));
    for bad in ["https://r.example", "r example", "/images"] {
        assert!(matches!(name(bad), Err(ConfigError::RegistryName(_))), "{bad}");
    }
}

#[test]
fn access_settings_map_into_the_access_and_package_policies() {
    use crate::auth::AnonymousAccess;
    use crate::auth::keys::KeySource;
    use crate::registry::Scheme;
    let c = serve(&[], &[]).unwrap();
    assert_eq!(c.access, AccessPolicy::default(), "no authentication, anonymous clients build: Nixery's behaviour");
    assert!(c.build.policy.nix.packages.is_open());

    let vars = [
        ("NIXERY_AUTH_HTPASSWD", "/etc/nixery/htpasswd"),
        ("NIXERY_ANONYMOUS", "pull"),
        ("NIXERY_PACKAGES_ALLOW", "hello, python3Packages.*"),
        ("NIXERY_PACKAGES_DENY", "bashInteractive"),
        ("NIXERY_BUILD_RATE", "10/3600"),
        ("NIXERY_TRUSTED_PROXIES", "10.0.0.0/8,127.0.0.1"),
    ];
    let c = serve(&[], &vars).unwrap();
    assert_eq!(c.access.scheme, Some(Scheme::Htpasswd("/etc/nixery/htpasswd".into())));
    assert_eq!(c.access.anonymous, AnonymousAccess::Pull);
    assert_eq!(c.access.build_rate.map(|r| r.to_string()), Some("10/3600".into()));
    assert_eq!(c.access.trusted_proxies, crate::rate_limit::TrustedProxies::parse("10.0.0.0/8,127.0.0.1").unwrap());
    let packages = &c.build.policy.nix.packages;
    let rules = |r: &[crate::package_policy::Rule]| r.iter().map(|r| r.as_str().to_owned()).collect::<Vec<_>>();
    assert_eq!(
        (rules(&packages.allow), rules(&packages.deny)),
        (vec!["hello".into(), "python3Packages.*".into()], vec!["bashInteractive".into()])
    );
    assert_eq!(c.access.to_string(), "htpasswd /etc/nixery/htpasswd, anonymous pull, build rate 10/3600");

    let token = [
        ("NIXERY_AUTH_TOKEN_REALM", "https://auth.example/token"),
        ("NIXERY_AUTH_TOKEN_SERVICE", "nixery.example"),
        ("NIXERY_AUTH_TOKEN_ISSUER", "auth.example"),
        ("NIXERY_AUTH_TOKEN_KEYS", "https://auth.example/jwks.json"),
    ];
    let c = serve(&[], &token).unwrap();
    let Some(Scheme::Token { service, keys }) = c.access.scheme else { panic!("no token scheme") };
    assert_eq!(
        (service.realm.as_str(), service.service.as_str(), service.issuer.as_str()),
        ("https://auth.example/token", "nixery.example", "auth.example")
    );
    assert!(matches!(keys, KeySource::Url(u) if u.as_str() == "https://auth.example/jwks.json"));
    let c = serve(&["--auth-token-keys", "/etc/nixery/keys.pem"], &token).unwrap();
    assert!(
        matches!(c.access.scheme, Some(Scheme::Token { keys: KeySource::File(p), .. }) if p.to_str() == Some("/etc/nixery/keys.pem"))
    );
}

#[test]
fn access_settings_that_cannot_work_stop_start_up() {
    let err = serve(&[], &[("NIXERY_AUTH_HTPASSWD", "/h"), ("NIXERY_AUTH_TOKEN_REALM", "https://a/t")]).unwrap_err();
    assert!(matches!(err, ConfigError::TwoSchemes), "{err}");
    let err = serve(&[], &[("NIXERY_AUTH_TOKEN_REALM", "https://a/t"), ("NIXERY_AUTH_TOKEN_KEYS", "/k")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "token authentication needs all of NIXERY_AUTH_TOKEN_REALM, _SERVICE, _ISSUER and _KEYS; missing NIXERY_AUTH_TOKEN_SERVICE, NIXERY_AUTH_TOKEN_ISSUER"
    );
    for mode in ["pull", "none"] {
        let err = serve(&[], &[("NIXERY_ANONYMOUS", mode)]).unwrap_err();
        assert!(err.to_string().starts_with(&format!("NIXERY_ANONYMOUS={mode} needs authentication")), "{err}");
    }
    let bad = [
        ("NIXERY_ANONYMOUS", "maybe"),
        ("NIXERY_BUILD_RATE", "10"),
        ("NIXERY_BUILD_RATE", "0/60"),
        ("NIXERY_TRUSTED_PROXIES", "proxy.local"),
        ("NIXERY_PACKAGES_DENY", ","),
        ("NIXERY_PACKAGES_ALLOW", "a b"),
        ("NIXERY_AUTH_TOKEN_REALM", "ftp://auth/token"),
        ("NIXERY_AUTH_TOKEN_SERVICE", "a\"b"),
    ];
    for (var, value) in bad {
        let (variable, _, shown) = invalid(serve(&[], &[(var, value)]).unwrap_err());
        assert_eq!((variable.as_str(), shown.as_str()), (var, value));
    }
}

#[test]
fn storage_lifecycle_takes_durations_and_has_defaults() {
    let c = serve(&[], &[]).unwrap();
    assert_eq!(c.lifecycle, crate::retention::Lifecycle::default());
    assert_eq!(c.lifecycle.retention, Duration::from_secs(30 * 86_400));
    assert_eq!(c.lifecycle.gc_interval, Duration::from_secs(86_400));
    assert_eq!(c.lifecycle.gc_grace, Duration::from_secs(3600));
    assert_eq!(c.lifecycle.build_lease, Duration::from_secs(30));
    assert_eq!(c.build.policy.nix.gc_roots, Some(PathBuf::from("/nix/var/nix/gcroots/nixery")));
    let vars = [
        ("NIXERY_RETENTION", "5s"),
        ("NIXERY_GC_INTERVAL", "0"),
        ("NIXERY_GC_GRACE", "1h 30m"),
        ("NIXERY_BUILD_LEASE", "90"),
        ("NIXERY_GC_ROOTS", "/srv/roots"),
    ];
    let c = serve(&[], &vars).unwrap();
    assert_eq!(c.lifecycle.retention, Duration::from_secs(5));
    assert_eq!(c.lifecycle.gc_interval, Duration::ZERO, "0 turns periodic collection off");
    assert_eq!(c.lifecycle.gc_grace, Duration::from_secs(5400));
    assert_eq!(c.lifecycle.build_lease, Duration::from_secs(90), "a number alone is seconds");
    assert_eq!(c.build.policy.nix.gc_roots, Some(PathBuf::from("/srv/roots")));
    assert_eq!(serve(&["--retention", "0"], &[]).unwrap().lifecycle.retention, Duration::ZERO);
    let (var, flag, value) = invalid(serve(&[], &[("NIXERY_RETENTION", "a month")]).unwrap_err());
    assert_eq!((var.as_str(), flag.as_str(), value.as_str()), ("NIXERY_RETENTION", "--retention", "a month"));
    let err = serve(&[], &[("NIXERY_BUILD_LEASE", "0s")]).unwrap_err();
    assert!(err.to_string().contains("NIXERY_BUILD_LEASE") && err.to_string().contains("longer than zero"), "{err}");
}

#[test]
fn gc_runs_with_the_server_s_storage_and_retention() {
    let vars = [
        ("NIXERY_STORAGE_BACKEND", "s3"),
        ("NIXERY_S3_BUCKET", "b"),
        ("NIXERY_RETENTION", "7d"),
        ("NIXERY_GC_GRACE", "2h"),
        ("NIXERY_PKGS_PATH", "/does/not/matter/to/gc"),
    ];
    let Command::Gc { storage, policy, dry_run } = command(&["gc", "--dry-run"], &vars).unwrap() else {
        panic!("not gc")
    };
    assert!(matches!(storage, StorageConfig::S3(s3) if s3.bucket == "b"));
    assert_eq!(
        policy,
        crate::gc::GcPolicy { retention: Duration::from_secs(7 * 86_400), grace: Duration::from_secs(7200) }
    );
    assert!(dry_run);
    let Command::Gc { storage, dry_run, .. } = command(&["--storage-path", "/srv/st", "gc"], &[]).unwrap() else {
        panic!("not gc")
    };
    assert!(matches!(storage, StorageConfig::Filesystem(p) if p == std::path::Path::new("/srv/st")));
    assert!(!dry_run);
    let err = command(&["gc"], &[("NIXERY_STORAGE_BACKEND", "gcs")]).unwrap_err();
    assert!(matches!(err, ConfigError::MissingBucket { variable: "GCS_BUCKET", .. }), "{err}");
}

/// A bad value is repeated in the error, but not the credentials a URL in it carries.
#[test]
fn a_bad_url_value_is_shown_without_its_credentials() {
    let err =
        serve(&[], &[("NIXERY_AUTH_TOKEN_KEYS", "https://u:SECRETpw@[::1/jwks?access_token=SECRETtoken")]).unwrap_err();
    let shown = err.to_string();
    let (variable, _, value) = invalid(err);
    assert_eq!(variable, "NIXERY_AUTH_TOKEN_KEYS");
    assert!(value.starts_with("https://***@") && !shown.contains("SECRET"), "{shown}");
}
