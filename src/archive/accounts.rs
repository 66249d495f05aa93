//! The user database every image carries: `/etc/passwd`, `/etc/group`, `/etc/nsswitch.conf`.
//!
//! Programs look users up by uid through glibc's NSS (or musl's direct read of
//! `/etc/passwd`): `whoami` and `id -un` print a name, git needs one for its reflog
//! identity, ssh refuses to run for a uid with no passwd entry ("No user exists for uid 0"),
//! and many programs take `$HOME` from the entry when the variable is unset. An image made of
//! store paths has none of these files, so every image gets them here, with root and, for
//! `nonroot` images, user and group 1000.
//!
//! `nsswitch.conf` says `files` for users and groups (no NIS or systemd modules the image
//! does not have; without the file, glibc falls back to a default list that tries those
//! first), and `files dns` for hosts, which is what `/etc/hosts` (written by the runtime) and
//! resolv.conf need.
//!
//! Root's login shell is `/bin/bash` when the image has one, else `/bin/sh` (the path
//! programs such as ssh and `su` run; it is the conventional value even when absent, as in
//! distroless images). The files are generated, not taken from a package: if a package also
//! ships `etc/passwd` (or `group`, `nsswitch.conf`), the registry's wins, because an image
//! whose users do not match its config's `User` is broken in ways the user cannot see (the
//! package's link is dropped, with a debug line).

use crate::image::ImageUser;

/// The nonroot user's name and home.
pub const NONROOT_NAME: &str = "nonroot";
pub const NONROOT_HOME: &str = "home/nonroot";

const NSSWITCH: &str = "\
passwd:    files
group:     files
shadow:    files
hosts:     files dns
networks:  files
protocols: files
services:  files
ethers:    files
rpc:       files
";

/// The three files' contents, for an image run by `user` whose root shell is `shell`.
pub fn user_database(user: ImageUser, shell: &str) -> [(&'static str, String); 3] {
    let mut passwd = format!("root:x:0:0:root:/root:{shell}\n");
    let mut group = "root:x:0:\n".to_owned();
    if user == ImageUser::NonRoot {
        let id = ImageUser::NONROOT_ID;
        passwd.push_str(&format!("{NONROOT_NAME}:x:{id}:{id}:{NONROOT_NAME}:/{NONROOT_HOME}:{shell}\n"));
        group.push_str(&format!("{NONROOT_NAME}:x:{id}:\n"));
    }
    // nobody/nogroup: the ids NFS and user namespaces map unknown owners to.
    passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n");
    group.push_str("nogroup:x:65534:\n");
    [("etc/passwd", passwd), ("etc/group", group), ("etc/nsswitch.conf", NSSWITCH.to_owned())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_always_nonroot_only_when_asked() {
        let [(_, passwd), (_, group), (_, nss)] = user_database(ImageUser::Root, "/bin/sh");
        assert!(passwd.starts_with("root:x:0:0:root:/root:/bin/sh\n"), "{passwd}");
        assert!(!passwd.contains("1000"), "{passwd}");
        assert!(group.starts_with("root:x:0:\n"), "{group}");
        assert!(nss.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["passwd:", "files"]));

        let [(_, passwd), (_, group), _] = user_database(ImageUser::NonRoot, "/bin/bash");
        assert!(passwd.contains("\nnonroot:x:1000:1000:nonroot:/home/nonroot:/bin/bash\n"), "{passwd}");
        assert!(group.contains("\nnonroot:x:1000:\n"), "{group}");
        for line in passwd.lines() {
            assert_eq!(line.split(':').count(), 7, "{line}");
        }
        for line in group.lines() {
            assert_eq!(line.split(':').count(), 4, "{line}");
        }
    }
}
