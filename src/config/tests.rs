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
    assert_eq!(c.build.policy.layers, LayerPolicy { grouping: Grouping::Stable, budget: 94 });
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
