//! Credentials as tests give them to servers and clients: htpasswd files written by the real
//! `htpasswd -B` (Debian's apache2-utils, installed by scripts/setup), and `Authorization`
//! values for requests the tests send themselves.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;

use super::{require_tool, run};

/// An htpasswd file in `dir` with `users` (bcrypt, cost 5 to keep the tests quick).
pub fn htpasswd(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    require_tool(&["htpasswd"]);
    let file = dir.join("htpasswd");
    for (i, (user, password)) in users.iter().enumerate() {
        let mut cmd = Command::new("htpasswd");
        cmd.args(["-B", "-b", "-C", "5"]);
        if i == 0 {
            cmd.arg("-c");
        }
        run(cmd.arg(&file).args([user, password]));
    }
    file
}

/// `Basic <base64 of user:password>`.
pub fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}
