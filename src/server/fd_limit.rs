//! The process's file descriptor limit (`RLIMIT_NOFILE`).
//!
//! Every connection is a descriptor, and so is every file a blob is served from and every
//! pipe to Nix. The soft limit is often far below the hard one (1024 against 524288 under
//! systemd; container runtimes differ), and only the soft one counts, while raising it to the
//! hard one needs no privilege. So the server raises it at start-up, and sizes its
//! connection limit to what it got, keeping [`RESERVED`] descriptors for everything else.

use std::io;

/// Descriptors kept for what is not a connection: blob files, Nix's pipes, storage clients,
/// logs.
pub const RESERVED: u64 = 256;

/// Raises the soft limit to the hard one; the soft limit in force afterwards.
pub fn raise_to_hard() -> io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a pointer to a valid rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(raised.rlim_cur);
        }
        // An unlimited hard limit may not be a valid soft one (it is capped by
        // fs.nr_open): keep the soft limit as it is.
        tracing::warn!(soft = limit.rlim_cur, hard = limit.rlim_max, error = %io::Error::last_os_error(),
            "cannot raise the open file limit");
    }
    Ok(limit.rlim_cur)
}

/// How many connections fit in `open_files` descriptors, the reserve kept aside (at least
/// a few, so a tiny limit still serves).
pub fn connections_within(open_files: u64) -> usize {
    usize::try_from(open_files.saturating_sub(RESERVED).max(16)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_kept_out_of_the_connection_budget() {
        assert_eq!(connections_within(1024), 768);
        assert_eq!(connections_within(100), 16);
        assert_eq!(connections_within(u64::MAX), usize::try_from(u64::MAX - RESERVED).unwrap_or(usize::MAX));
    }

    #[test]
    fn the_soft_limit_ends_at_the_hard_one() {
        let soft = raise_to_hard().unwrap();
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: as above.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
        assert_eq!(soft, limit.rlim_cur);
        assert_eq!(limit.rlim_cur, limit.rlim_max);
    }
}
