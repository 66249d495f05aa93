//! `NIXERY_AUTH_HTPASSWD`: users and their bcrypt password hashes, in the file format of
//! Apache's `htpasswd`, as `htpasswd -B` writes it (and as Docker's distribution reads it):
//!
//! ```text
//! alice:$2y$05$t0VMsiPptdaaIs/ST5UVEe5kP9kqISLzeXH41K1gRQSjpflgqBDYS
//! # a comment, and blank lines, are ignored
//! bob:$2y$12$8fdl99AD0OrCpAHP.eObXe3PK6pH7rulQ4/W18xhwCpFZJ4QxmngO
//! ```
//!
//! One `user:hash` per line, split at the first `:` (user names cannot hold one, as in
//! htpasswd). Only bcrypt (`$2y$`, `$2b$`, `$2a$`) is accepted: htpasswd's other formats
//! (`$apr1$` MD5, `{SHA}`, crypt) are fast hashes, and a file with one is refused at start-up
//! naming the line and user (never the hash), rather than the user being silently locked out.
//! The file is re-read when it changes ([`super::watched`]).
//!
//! bcrypt is slow on purpose (cost 12 is about a quarter of a CPU second), and clients send
//! the credentials with every request: `docker pull` of a ten-layer image is a dozen requests.
//! So a verified password is remembered for [`VERIFIED_FOR`] — as a keyed SHA-256 of the user
//! and password under a key drawn at start-up, compared in constant time ([`subtle`]) — and
//! bcrypt itself runs on blocking threads, at most half the cores at once, so a stream of
//! wrong passwords queues instead of taking every core from Nix and compression. An unknown
//! user costs a bcrypt verification too (against another user's hash), so the answer's timing
//! does not say which users exist. A changed file forgets every remembered password.
//!
//! When a remembered password's minute ends, a client is usually in the middle of a pull,
//! with several requests in flight carrying the same credentials: each would run bcrypt
//! again (one run of the serving benchmark saw its p99 go from 4 ms to 1.1 s). So bcrypt
//! runs once per user and password at a time: the requests that arrive while it runs wait
//! for it and then find its answer remembered. Only the same credentials wait for each
//! other, so wrong passwords for a user do not hold up the right one.

use super::watched::Watched;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// How long a verified user and password are accepted without bcrypt.
pub const VERIFIED_FOR: Duration = Duration::from_secs(60);

/// The users of an htpasswd file.
#[derive(Debug, PartialEq, Eq)]
pub struct Users {
    hashes: HashMap<String, String>,
}

impl Users {
    /// The hash to verify `user`'s password against, and whether the user exists: an
    /// unknown user gets some other user's hash, so that the work (and time) is the same.
    fn hash_for(&self, user: &str) -> Option<(&str, bool)> {
        match self.hashes.get(user) {
            Some(hash) => Some((hash, true)),
            None => self.hashes.values().next().map(|h| (h.as_str(), false)),
        }
    }
}

/// Parses an htpasswd file (see the module docs); errors name the line and the user.
pub fn parse(bytes: &[u8]) -> Result<Users, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the file is not UTF-8".to_owned())?;
    let mut hashes = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            return Err(format!("line {number}: expected user:hash"));
        };
        if user.is_empty() {
            return Err(format!("line {number}: the user name is empty"));
        }
        if hash.parse::<bcrypt::HashParts>().is_err() {
            return Err(format!(
                "line {number}: the password hash of user '{user}' is not bcrypt (write it with htpasswd -B)"
            ));
        }
        if hashes.insert(user.to_owned(), hash.to_owned()).is_some() {
            return Err(format!("line {number}: user '{user}' is listed twice"));
        }
    }
    Ok(Users { hashes })
}

/// Why a user and password were refused (the client is told neither).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("no such user")]
    UnknownUser,
    #[error("wrong password")]
    WrongPassword,
}

/// A password verified recently.
struct Verified {
    digest: [u8; 32],
    until: Instant,
}

/// The verifications running, by digest of user and password, each a lock to wait on.
type Flights = Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>;

/// One request's place in the verification of its digest: the last to leave, however it
/// leaves (answered, or dropped when its client went away), removes the entry.
struct Seat<'a> {
    flights: &'a Flights,
    digest: [u8; 32],
    flight: Arc<tokio::sync::Mutex<()>>,
}

impl<'a> Seat<'a> {
    fn take(flights: &'a Flights, digest: [u8; 32]) -> Seat<'a> {
        let flight = flights.lock().expect("htpasswd flights").entry(digest).or_default().clone();
        Seat { flights, digest, flight }
    }
}

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        let mut flights = self.flights.lock().expect("htpasswd flights");
        // Counts change only under this lock: 2 is the map's and this seat's.
        if Arc::strong_count(&self.flight) == 2
            && flights.get(&self.digest).is_some_and(|f| Arc::ptr_eq(f, &self.flight))
        {
            flights.remove(&self.digest);
        }
    }
}

/// The htpasswd file and the passwords verified recently.
pub struct Htpasswd {
    file: Watched<Users>,
    verified: Mutex<HashMap<String, Verified>>,
    /// The bcrypt verification running for each digest of user and password, to wait on.
    in_flight: Flights,
    /// Key of the remembered digests: random per process, never stored.
    key: [u8; 32],
    /// bcrypt verifications running at once, at most.
    slots: tokio::sync::Semaphore,
    /// bcrypt verifications started, for the tests.
    #[cfg(test)]
    bcrypt_runs: std::sync::atomic::AtomicUsize,
}

impl Htpasswd {
    /// Reads the file at `path` (start-up: a missing or bad file is an error).
    pub fn open(path: &Path) -> Result<Htpasswd, String> {
        let file = Watched::open(path, parse)?;
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the operating system's random number generator");
        let slots = (crate::nix::cores() / 2).max(1);
        Ok(Htpasswd {
            file,
            verified: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            key,
            slots: tokio::sync::Semaphore::new(slots),
            #[cfg(test)]
            bcrypt_runs: Default::default(),
        })
    }

    fn digest(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update((user.len() as u64).to_be_bytes());
        h.update(user.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Whether `user`'s password with this `digest` was verified within [`VERIFIED_FOR`]
    /// (forgetting everything first if the file was `reloaded`).
    fn is_remembered(&self, user: &str, digest: &[u8; 32], reloaded: bool) -> bool {
        let mut verified = self.verified.lock().expect("htpasswd cache");
        if reloaded {
            verified.clear();
        }
        verified.get(user).is_some_and(|known| known.until > Instant::now() && bool::from(known.digest.ct_eq(digest)))
    }

    /// Whether `password` is `user`'s: remembered for [`VERIFIED_FOR`], else checked with
    /// bcrypt, once at a time for the same user and password (see the module docs).
    pub async fn verify(&self, user: &str, password: &str) -> Result<(), Refused> {
        let (users, reloaded) = self.file.get();
        let digest = self.digest(user, password);
        if self.is_remembered(user, &digest, reloaded) {
            return Ok(());
        }
        let seat = Seat::take(&self.in_flight, digest);
        let _turn = seat.flight.lock().await;
        if self.is_remembered(user, &digest, false) {
            return Ok(());
        }
        self.run_bcrypt(&users, user, password, digest).await
    }

    /// The bcrypt verification itself, on a blocking thread when a slot is free; remembers
    /// a match.
    async fn run_bcrypt(&self, users: &Users, user: &str, password: &str, digest: [u8; 32]) -> Result<(), Refused> {
        let Some((hash, exists)) = users.hash_for(user) else {
            return Err(Refused::UnknownUser);
        };
        let (hash, password) = (hash.to_owned(), password.to_owned());
        let _slot = self.slots.acquire().await.expect("the semaphore is never closed");
        #[cfg(test)]
        self.bcrypt_runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let matches = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .unwrap_or(false);
        match (exists, matches) {
            (false, _) => Err(Refused::UnknownUser),
            (true, false) => Err(Refused::WrongPassword),
            (true, true) => {
                let until = Instant::now() + VERIFIED_FOR;
                self.verified.lock().expect("htpasswd cache").insert(user.to_owned(), Verified { digest, until });
                Ok(())
            }
        }
    }

    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.verified.lock().unwrap().len()
    }

    /// Ends every remembered password's minute now.
    #[cfg(test)]
    fn expire_remembered(&self) {
        for known in self.verified.lock().unwrap().values_mut() {
            known.until = Instant::now();
        }
    }

    #[cfg(test)]
    fn bcrypt_runs(&self) -> usize {
        self.bcrypt_runs.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `htpasswd -nbB alice secret` (cost 5), as the tool wrote it.
    const ALICE: &str = "alice:$2y$05$t0VMsiPptdaaIs/ST5UVEe5kP9kqISLzeXH41K1gRQSjpflgqBDYS";

    fn hash(password: &str) -> String {
        bcrypt::hash(password, 4).unwrap()
    }

    #[test]
    fn files_as_htpasswd_writes_them() {
        let text = format!("# users\n\n{ALICE}\nbob:{}\n", hash("pw"));
        let users = parse(text.as_bytes()).unwrap();
        assert_eq!(users.hashes.len(), 2);
        assert!(users.hashes["alice"].starts_with("$2y$05$"));
    }

    #[test]
    fn other_formats_and_mistakes_are_refused_naming_the_line_and_user_only() {
        let cases = [
            ("carol:$apr1$abc$0123456789abcdefghijkl", "line 1: the password hash of user 'carol' is not bcrypt"),
            ("dave:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "line 1: the password hash of user 'dave' is not bcrypt"),
            ("just a line", "line 1: expected user:hash"),
            (":$2y$05$t0VMsiPptdaaIs/ST5UVEe5kP9kqISLzeXH41K1gRQSjpflgqBDYS", "line 1: the user name is empty"),
        ];
        for (text, want) in cases {
            let error = parse(text.as_bytes()).unwrap_err();
            assert!(error.starts_with(want), "{text}: {error}");
            assert!(!error.contains('$') && !error.contains("{SHA}"), "no hash in {error}");
        }
        let twice = format!("{ALICE}\n{ALICE}\n");
        assert_eq!(parse(twice.as_bytes()).unwrap_err(), "line 2: user 'alice' is listed twice");
    }

    fn file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[tokio::test]
    async fn passwords_are_checked_and_remembered_until_the_file_changes() {
        let (_dir, path) = file(&format!("{ALICE}\n"));
        let htpasswd = Htpasswd::open(&path).unwrap();
        assert_eq!(htpasswd.verify("alice", "wrong").await, Err(Refused::WrongPassword));
        assert_eq!(htpasswd.verify("mallory", "secret").await, Err(Refused::UnknownUser));
        assert_eq!(htpasswd.remembered(), 0, "refusals are not remembered");
        assert_eq!(htpasswd.verify("alice", "secret").await, Ok(()));
        assert_eq!(htpasswd.remembered(), 1);
        assert_eq!(htpasswd.verify("alice", "secret").await, Ok(()), "from memory");
        assert_eq!(htpasswd.verify("alice", "secreT").await, Err(Refused::WrongPassword), "not a prefix match");

        // A new password: the old one stops working at once, however recently verified.
        std::fs::write(&path, format!("alice:{}\n", hash("new"))).unwrap();
        htpasswd.file.expire_check();
        assert_eq!(htpasswd.verify("alice", "secret").await, Err(Refused::WrongPassword));
        assert_eq!(htpasswd.verify("alice", "new").await, Ok(()));
    }

    /// A client's parallel requests when the remembered minute has ended: one bcrypt run
    /// answers them all; wrong passwords are never remembered, so each runs its own.
    #[tokio::test]
    async fn requests_with_the_same_credentials_share_one_bcrypt_run() {
        let (_dir, path) = file(&format!("alice:{}\n", hash("secret")));
        let htpasswd = Htpasswd::open(&path).unwrap();
        let at_once =
            |password: &'static str| futures::future::join_all((0..8).map(|_| htpasswd.verify("alice", password)));
        assert!(at_once("secret").await.iter().all(Result::is_ok));
        assert_eq!(htpasswd.bcrypt_runs(), 1, "eight requests before any was remembered");
        htpasswd.expire_remembered();
        assert!(at_once("secret").await.iter().all(Result::is_ok));
        assert_eq!(htpasswd.bcrypt_runs(), 2, "eight requests once the minute had ended");
        assert!(at_once("wrong").await.iter().all(|r| *r == Err(Refused::WrongPassword)));
        assert_eq!(htpasswd.bcrypt_runs(), 10, "a wrong password is checked every time");
        assert!(htpasswd.in_flight.lock().unwrap().is_empty(), "nothing left in flight");

        // A request dropped mid-verification (its client went away) leaves nothing behind.
        let dropped = htpasswd.verify("alice", "other");
        tokio::select! {
            biased;
            _ = dropped => panic!("bcrypt answered before its first poll returned"),
            _ = std::future::ready(()) => {}
        }
        assert!(htpasswd.in_flight.lock().unwrap().is_empty(), "a dropped request's entry is gone");
    }

    #[tokio::test]
    async fn an_empty_file_refuses_everyone() {
        let (_dir, path) = file("# nobody yet\n");
        let htpasswd = Htpasswd::open(&path).unwrap();
        assert_eq!(htpasswd.verify("alice", "secret").await, Err(Refused::UnknownUser));
    }
}
