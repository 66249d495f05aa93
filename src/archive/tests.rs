//! Archives on real directory trees: determinism, contents, the forest rules, and both compressions.

use super::*;
use crate::image::ImageUser;
use flate2::read::MultiGzDecoder;
use sha2::Digest as _;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{PermissionsExt, symlink};
use tempfile::TempDir;

/// A store path `/nix/store/<hash>-<name>` (the hash is `hash` 32 times) with `files`, in the
/// fake store below `root`.
fn package(root: &Path, hash: char, name: &str, files: &[(&str, &str)]) -> StorePath {
    let path = StorePath::parse(&format!("/nix/store/{}-{name}", hash.to_string().repeat(32))).unwrap();
    let dir = on_disk(root, &path);
    for (rel, content) in files {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
    }
    path
}

/// One tar entry as read back.
struct Entry {
    path: String,
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    mtime: u64,
    link: Option<String>,
    data: Vec<u8>,
}

fn entries(blob: &[u8]) -> Vec<Entry> {
    let mut archive = tar::Archive::new(MultiGzDecoder::new(blob));
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            Entry {
                path: e.path().unwrap().to_string_lossy().into_owned(),
                kind: h.entry_type(),
                mode: h.mode().unwrap(),
                uid: h.uid().unwrap(),
                mtime: h.mtime().unwrap(),
                link: e.link_name().unwrap().map(|l| l.to_string_lossy().into_owned()),
                data,
            }
        })
        .collect()
}

fn forest_of(packages: Vec<StorePath>, user: ImageUser) -> LayerContents {
    LayerContents::Forest { packages, user }
}

fn archiver(compression: Compression, workers: Option<usize>) -> Archiver {
    let workers = workers.map(|n| NonZeroUsize::new(n).unwrap());
    Archiver::new(ArchivePolicy { compression, workers }).unwrap()
}

/// A gzip layer, as servers write them by default.
fn build(root: &Path, contents: &LayerContents) -> (Vec<u8>, LayerBlob) {
    archiver(Compression::Gzip, None).write_layer_from(root, contents, Vec::new()).unwrap()
}

/// The uncompressed tar of a blob.
fn decompress(compression: Compression, blob: &[u8]) -> Vec<u8> {
    match compression {
        Compression::Gzip => {
            let mut tar = Vec::new();
            MultiGzDecoder::new(blob).read_to_end(&mut tar).unwrap();
            tar
        }
        Compression::Zstd => zstd::decode_all(blob).unwrap(),
    }
}

/// `len` bytes of text with repeats, then `len` bytes of noise: several gzip blocks of each
/// kind, and more than one zstd job.
fn text_then_noise(len: usize) -> Vec<u8> {
    let text = (0..).map(|i: u32| format!("line {} of a manual page, /nix/store/{i:x}\n", i % 97));
    let mut data: Vec<u8> = text.flat_map(String::into_bytes).take(len).collect();
    let noise = (0..len.div_ceil(32) as u32).flat_map(|i| sha2::Sha256::digest(i.to_le_bytes()));
    data.extend(noise.take(len));
    data
}

#[test]
fn store_path_layers_are_deterministic_and_self_describing() {
    let tmp = TempDir::new().unwrap();
    let a =
        package(tmp.path(), 'a', "pkg", &[("bin/tool", "#!/bin/sh\n"), ("share/doc/README", "docs"), ("z", "last")]);
    let disk = on_disk(tmp.path(), &a);
    fs::set_permissions(disk.join("bin/tool"), fs::Permissions::from_mode(0o555)).unwrap();
    symlink("tool", disk.join("bin/alias")).unwrap();
    let contents = LayerContents::StorePaths(vec![a.clone()]);

    let (bytes1, blob1) = build(tmp.path(), &contents);
    // Touch the files: a different mtime must not change the layer.
    fs::write(disk.join("z"), "last").unwrap();
    let (bytes2, blob2) = build(tmp.path(), &contents);
    assert_eq!(bytes1, bytes2);
    assert_eq!(blob1, blob2);
    assert_eq!(blob1.digest, crate::digest::Digest::of(&bytes1));
    assert_eq!(blob1.size, bytes1.len() as u64);
    let mut tar = Vec::new();
    MultiGzDecoder::new(&bytes1[..]).read_to_end(&mut tar).unwrap();
    assert_eq!(blob1.diff_id, crate::digest::Digest::of(&tar));

    let e = entries(&bytes1);
    let rel = a.as_str().trim_start_matches('/');
    let names: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
    let expected = [
        "nix".to_string(),
        "nix/store".to_string(),
        rel.to_string(),
        format!("{rel}/bin"),
        format!("{rel}/bin/alias"),
        format!("{rel}/bin/tool"),
        format!("{rel}/share"),
        format!("{rel}/share/doc"),
        format!("{rel}/share/doc/README"),
        format!("{rel}/z"),
    ];
    assert_eq!(names, expected.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    for Entry { path, uid, mtime, .. } in &e {
        assert_eq!(*uid, 0, "{path}");
        assert_eq!(*mtime, 1, "{path}");
    }
    let tool = e.iter().find(|e| e.path.ends_with("bin/tool")).unwrap();
    assert_eq!(tool.mode, 0o555);
    assert_eq!(tool.data, b"#!/bin/sh\n");
    let alias = e.iter().find(|e| e.path.ends_with("bin/alias")).unwrap();
    assert_eq!(alias.kind, tar::EntryType::Symlink);
    assert_eq!(alias.link.as_deref(), Some("tool"));
}

#[test]
fn long_paths_and_link_targets_survive() {
    let tmp = TempDir::new().unwrap();
    let deep = format!("{}/file", "d".repeat(120));
    let a = package(tmp.path(), 'b', "pkg", &[(&deep, "x")]);
    let target = format!("/{}", "t".repeat(200));
    symlink(&target, on_disk(tmp.path(), &a).join("long-link")).unwrap();
    let (bytes, _) = build(tmp.path(), &LayerContents::StorePaths(vec![a.clone()]));
    let e = entries(&bytes);
    assert!(e.iter().any(|e| e.path.ends_with(&deep) && e.data == b"x"));
    assert!(e.iter().any(|e| e.path.ends_with("long-link") && e.link.as_deref() == Some(target.as_str())));
}

#[test]
fn the_forest_merges_packages_and_adds_tmp_and_env() {
    let tmp = TempDir::new().unwrap();
    let core =
        package(tmp.path(), '1', "coreutils", &[("bin/env", "env"), ("bin/ls", "ls"), ("nix-support/x", "meta")]);
    let git = package(tmp.path(), '2', "git", &[("bin/git", "git"), ("bin/ls", "other ls"), ("share/git/x", "x")]);
    let forest = Forest::link(tmp.path(), &[core.clone(), git.clone()], ImageUser::Root).unwrap();
    let (bytes, _) = build(tmp.path(), &forest_of(vec![core.clone(), git.clone()], ImageUser::Root));
    let e = entries(&bytes);
    let get = |p: &str| {
        e.iter()
            .find(|e| e.path.trim_end_matches('/') == p)
            .unwrap_or_else(|| panic!("{p} missing: {:?}", e.iter().map(|e| &e.path).collect::<Vec<_>>()))
    };

    assert_eq!(get("bin").kind, tar::EntryType::Directory);
    assert_eq!(get("bin/git").link.as_deref(), Some(format!("{git}/bin/git").as_str()));
    // The first package wins a conflict.
    assert_eq!(get("bin/ls").link.as_deref(), Some(format!("{core}/bin/ls").as_str()));
    assert_eq!(get("share/git").kind, tar::EntryType::Directory);
    assert_eq!(get("tmp").mode, 0o1777);
    assert_eq!(get("usr/bin/env").link.as_deref(), Some(format!("{core}/bin/env").as_str()));
    assert!(!e.iter().any(|e| e.path.starts_with("nix-support")));
    assert_eq!(forest.target("bin/git"), Some(Path::new(&format!("{git}/bin/git"))));
}

#[test]
fn no_usr_bin_env_without_an_env() {
    let tmp = TempDir::new().unwrap();
    let hello = package(tmp.path(), 'h', "hello", &[("bin/hello", "hi")]);
    let (bytes, _) = build(tmp.path(), &forest_of(vec![hello], ImageUser::Root));
    let names: Vec<String> = entries(&bytes).into_iter().map(|e| e.path).collect();
    assert!(!names.iter().any(|n| n.starts_with("usr")), "{names:?}");
    assert!(names.contains(&"tmp".to_string()), "{names:?}");
}

#[test]
fn zstd_layers_hold_the_same_tar_and_are_other_blobs() {
    let tmp = TempDir::new().unwrap();
    let a = package(tmp.path(), 'z', "pkg", &[("bin/tool", "#!/bin/sh\n"), ("share/doc/README", "docs")]);
    let contents = LayerContents::StorePaths(vec![a]);
    let (gzip_bytes, gzip) = build(tmp.path(), &contents);
    let (zstd_bytes, zstd) =
        archiver(Compression::Zstd, None).write_layer_from(tmp.path(), &contents, Vec::new()).unwrap();
    assert_eq!(&zstd_bytes[..4], &[0x28, 0xb5, 0x2f, 0xfd], "a zstd frame");
    assert_eq!(zstd.digest, crate::digest::Digest::of(&zstd_bytes));
    assert_eq!(zstd.size, zstd_bytes.len() as u64);
    let tar = decompress(Compression::Zstd, &zstd_bytes);
    assert_eq!(zstd.diff_id, crate::digest::Digest::of(&tar));
    assert_eq!(tar, decompress(Compression::Gzip, &gzip_bytes), "the same tar");
    assert_eq!(zstd.diff_id, gzip.diff_id);
    assert_ne!(zstd.digest, gzip.digest);
}

#[test]
fn layers_do_not_depend_on_the_number_of_workers() {
    let tmp = TempDir::new().unwrap();
    let a = package(tmp.path(), 'w', "data", &[("share/small", "x")]);
    // 3 MiB of text and 3 MiB of noise: 6 gzip blocks (members), 3 zstd jobs.
    fs::write(on_disk(tmp.path(), &a).join("share/big"), text_then_noise(3 << 20)).unwrap();
    let contents = LayerContents::StorePaths(vec![a.clone()]);
    let forest = forest_of(vec![a], ImageUser::Root);
    for compression in Compression::ALL {
        let write = |workers, contents: &LayerContents| {
            archiver(compression, Some(workers)).write_layer_from(tmp.path(), contents, Vec::new()).unwrap()
        };
        let (bytes, blob) = write(1, &contents);
        assert!(blob.size > 3 << 20 && blob.size < 4 << 20, "{compression}: {} bytes", blob.size);
        assert_eq!(crate::digest::Digest::of(&decompress(compression, &bytes)), blob.diff_id, "{compression}");
        for workers in [2, 8] {
            assert_eq!(write(workers, &contents), (bytes.clone(), blob.clone()), "{compression}, {workers} workers");
        }
        assert_eq!(write(1, &forest), write(8, &forest), "{compression}: the forest");
    }
}

/// Every forest has root in a user database of real files, and /root; a package's own
/// etc/passwd loses to the registry's.
#[test]
fn the_forest_has_users_root_and_the_registrys_passwd_wins() {
    let tmp = TempDir::new().unwrap();
    let bash = package(tmp.path(), 'b', "bash", &[("bin/bash", "bash")]);
    let shadow = package(tmp.path(), 'p', "passwd-pkg", &[("etc/passwd", "evil:x:0:0::/:/bin/sh\n"), ("etc/x", "x")]);
    let (bytes, _) = build(tmp.path(), &forest_of(vec![bash.clone(), shadow], ImageUser::Root));
    let e = entries(&bytes);
    let get = |p: &str| e.iter().find(|e| e.path.trim_end_matches('/') == p).unwrap_or_else(|| panic!("{p} missing"));
    let passwd = get("etc/passwd");
    assert_eq!(passwd.kind, tar::EntryType::Regular, "a real file, not a link into a package");
    assert_eq!((passwd.mode, passwd.uid, passwd.mtime), (0o644, 0, 1));
    let text = String::from_utf8(passwd.data.clone()).unwrap();
    assert!(text.starts_with("root:x:0:0:root:/root:/bin/bash\n"), "bash present: {text}");
    assert!(!text.contains("evil"), "{text}");
    assert!(String::from_utf8_lossy(&get("etc/group").data).starts_with("root:x:0:\n"));
    assert!(String::from_utf8_lossy(&get("etc/nsswitch.conf").data).contains("passwd:    files"));
    assert_eq!(get("etc/x").kind, tar::EntryType::Symlink, "the package's other files stay");
    assert_eq!((get("root").kind, get("root").mode), (tar::EntryType::Directory, 0o700));
    assert!(!e.iter().any(|e| e.path.starts_with("home")), "no home without nonroot");
    assert_eq!(e.iter().filter(|e| e.path.trim_end_matches('/') == "etc/passwd").count(), 1);

    // Without bash root's shell is /bin/sh; the order of entries stays sorted.
    let hello = package(tmp.path(), 'h', "hello", &[("bin/hello", "hi")]);
    let (bytes, _) = build(tmp.path(), &forest_of(vec![hello], ImageUser::Root));
    let e = entries(&bytes);
    let passwd = e.iter().find(|e| e.path == "etc/passwd").unwrap();
    assert!(String::from_utf8_lossy(&passwd.data).starts_with("root:x:0:0:root:/root:/bin/sh\n"));
    let paths: Vec<&str> = e.iter().map(|e| e.path.trim_end_matches('/')).collect();
    let mut sorted = paths.clone();
    sorted.sort_by_key(|p| p.split('/').map(str::to_owned).collect::<Vec<_>>());
    assert_eq!(paths, sorted);
}

/// A nonroot forest adds user 1000 and its home, owned by it; a package's `home` link is
/// replaced by the directory.
#[test]
fn a_nonroot_forest_has_the_user_and_its_home() {
    let tmp = TempDir::new().unwrap();
    let hello = package(tmp.path(), 'h', "hello", &[("bin/hello", "hi"), ("home", "a file where home goes")]);
    let (bytes, blob) = build(tmp.path(), &forest_of(vec![hello.clone()], ImageUser::NonRoot));
    let e = entries(&bytes);
    let get = |p: &str| e.iter().find(|e| e.path.trim_end_matches('/') == p).unwrap_or_else(|| panic!("{p} missing"));
    assert_eq!((get("home").kind, get("home").mode, get("home").uid), (tar::EntryType::Directory, 0o755, 0));
    let home = get("home/nonroot");
    assert_eq!((home.kind, home.mode, home.uid), (tar::EntryType::Directory, 0o755, 1000));
    let passwd = String::from_utf8(get("etc/passwd").data.clone()).unwrap();
    assert!(passwd.contains("\nnonroot:x:1000:1000:nonroot:/home/nonroot:/bin/sh\n"), "{passwd}");
    let (_, root_blob) = build(tmp.path(), &forest_of(vec![hello], ImageUser::Root));
    assert_ne!(blob.diff_id, root_blob.diff_id);
}
