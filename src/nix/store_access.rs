//! A Nix store the server cannot write: told apart from every failure of an image, because it
//! is none.
//!
//! Every image needs the store written: its evaluation writes `.drv` files, its realise adds
//! paths and registers them in Nix's database. When `/nix` is mounted read-only (a container
//! with a read-only root filesystem and no volume at `/nix`), or the store is opened
//! read-only, Nix fails at the first write, whatever the image. As Nix 2.18 to 2.26 say it
//! (local-store.cc; SQLite's own words for the database; captured from 2.26.3 here):
//!
//! ```text
//! error: remounting /nix/store writable: Invalid argument          (a read-only /nix/store)
//! error: opening lock file '/nix/var/nix/db/big-lock': Read-only file system
//! error: executing SQLite statement 'insert into ValidPaths …': attempt to write a readonly database, attempt to write a readonly database (in '/nix/var/nix/db/db.sqlite')
//! error: Nix database directory '/nix/var/nix/db' is not writable: Permission denied
//! error: cannot create database while in read-only mode
//! ```
//!
//! This is the server's fault, not the image's: the deployment decides it, it fails every
//! image that needs a new path (so the images' names would be blamed for nothing), and only
//! the operator can mend it. So it is a 500 whose log line says plainly that the store cannot
//! be written and why (see [`super::NixError::StoreNotWritable`]), instead of an evaluation
//! error named after the requested packages or a generic "failed".

/// The words of Nix's error that say its store cannot be written, or `None`. Only Nix's own
/// `error:` lines are read: a build log quoted in the error (`> …`) is the package's.
pub fn unwritable_store(stderr: &str) -> Option<String> {
    const SIGNS: [&str; 5] = [
        "Read-only file system",
        "attempt to write a readonly database",
        "cannot create database while in read-only mode",
        "is not writable",
        "writable: ",
    ];
    stderr.lines().map(str::trim).filter_map(|l| l.strip_prefix("error: ")).find_map(|line| {
        let about_the_store = line.contains("/nix/") || line.contains("database");
        (about_the_store && SIGNS.iter().any(|s| line.contains(s))).then(|| line.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from Nix 2.26.3, with `/nix` bind-mounted read-only, `/nix/var` alone, and
    /// `store = local?read-only=true`.
    #[test]
    fn a_read_only_store_as_nix_says_it() {
        for (stderr, want) in [
            (
                "this derivation will be built:\n  /nix/store/x3blqx5ipa42ggs1sha5fsa77wp1vdk7-exp.drv\nerror: remounting /nix/store writable: Invalid argument\n",
                "remounting /nix/store writable: Invalid argument",
            ),
            (
                "error: opening lock file '/nix/var/nix/db/big-lock': Read-only file system\n",
                "opening lock file '/nix/var/nix/db/big-lock': Read-only file system",
            ),
            (
                "error:\n       … while calling the 'derivationStrict' builtin\n\n       error: executing SQLite statement 'insert into ValidPaths (path) values (1);': attempt to write a readonly database, attempt to write a readonly database (in '/nix/var/nix/db/db.sqlite')\n",
                "executing SQLite statement 'insert into ValidPaths (path) values (1);': attempt to write a readonly database, attempt to write a readonly database (in '/nix/var/nix/db/db.sqlite')",
            ),
            (
                "error: Nix database directory '/nix/var/nix/db' is not writable: Permission denied\n",
                "Nix database directory '/nix/var/nix/db' is not writable: Permission denied",
            ),
        ] {
            assert_eq!(unwritable_store(stderr).as_deref(), Some(want), "{stderr}");
        }
    }

    #[test]
    fn a_build_that_meets_a_read_only_file_system_is_the_packages_failure() {
        let build =
            "error: builder for '/nix/store/3z5b87fakr8m7xlizalp43x4w7lbhmw2-broken-1.0.drv' failed with exit code 1;
       last 1 log lines:
       > error: cannot write /nix/store/x/etc: Read-only file system
";
        assert_eq!(unwritable_store(build), None);
        assert_eq!(unwritable_store("error: attribute 'writable: ' missing"), None);
    }
}
