//! `NIXERY_BUILD_RATE=N/SECONDS`: at most N cold builds per client in any window of SECONDS.
//!
//! A cold build is a manifest request whose image does not exist yet for the tag's current
//! revision (not in memory, not in storage), or a `/ui/` page that must plan an image: what
//! makes Nix run. Warm pulls (manifests that exist, blobs, tag lists) are never counted or
//! refused, so a client over its rate still pulls everything already built. A request that
//! joins a build another client started counts too: it could not know.
//!
//! The client is the authenticated principal (a user's builds count together from every
//! address), else the address the request came from ([`client`]: `X-Forwarded-For` only
//! from `NIXERY_TRUSTED_PROXIES`; IPv6 addresses by their /64, which one host usually has
//! whole).
//!
//! The window slides: a client's last N build times are kept, and a build is admitted if the
//! oldest of them is at least SECONDS old. So no window of SECONDS ever holds more than N
//! (a fixed window would allow 2N across its edge), and the refusal can say exactly when the
//! next build will be admitted: 429 `TOOMANYREQUESTS` with `Retry-After` of that wait.
//! Clients whose last build is older than the window are forgotten, so memory follows the
//! clients of the last window, not all clients ever.

pub mod client;

pub use client::{ClientKey, TrustedProxies};

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// N builds per window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuildRate {
    pub builds: NonZeroU32,
    pub window: Duration,
}

impl BuildRate {
    /// `N/SECONDS`, both positive integers.
    pub fn parse(text: &str) -> Result<BuildRate, String> {
        let (n, seconds) = text.split_once('/').ok_or("expected N/SECONDS, e.g. 10/3600")?;
        let builds = n.trim().parse::<NonZeroU32>().map_err(|_| format!("'{n}' is not a positive number of builds"))?;
        let seconds = seconds
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|s| *s > 0)
            .ok_or(format!("'{seconds}' is not a positive number of seconds"))?;
        Ok(BuildRate { builds, window: Duration::from_secs(seconds) })
    }
}

impl std::fmt::Display for BuildRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.builds, self.window.as_secs())
    }
}

/// How often the table of clients is swept of those whose builds are all older than the
/// window (in admissions).
const SWEEP_EVERY: u32 = 1024;

/// The build times of each client in the current window.
pub struct RateLimiter {
    rate: BuildRate,
    clients: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    builds: HashMap<ClientKey, VecDeque<Instant>>,
    since_sweep: u32,
}

impl RateLimiter {
    pub fn new(rate: BuildRate) -> Self {
        RateLimiter { rate, clients: Mutex::new(Table::default()) }
    }

    pub fn rate(&self) -> BuildRate {
        self.rate
    }

    /// Admits a build by `client` at `now` (and counts it), or says how long until one would
    /// be admitted.
    pub fn admit(&self, client: &ClientKey, now: Instant) -> Result<(), Duration> {
        let window = self.rate.window;
        let limit = self.rate.builds.get() as usize;
        let mut table = self.clients.lock().expect("rate table");
        table.since_sweep += 1;
        if table.since_sweep >= SWEEP_EVERY {
            table.since_sweep = 0;
            table
                .builds
                .retain(|_, times| times.back().is_some_and(|last| now.saturating_duration_since(*last) < window));
        }
        let times = table.builds.entry(client.clone()).or_default();
        while times.front().is_some_and(|first| now.saturating_duration_since(*first) >= window) {
            times.pop_front();
        }
        if times.len() >= limit {
            let oldest = *times.front().expect("limit is at least one");
            return Err(window - now.saturating_duration_since(oldest));
        }
        times.push_back(now);
        Ok(())
    }

    #[cfg(test)]
    fn clients(&self) -> usize {
        self.clients.lock().unwrap().builds.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn addr(s: &str) -> ClientKey {
        ClientKey::from_address(s.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn rates_are_n_per_seconds() {
        let rate = BuildRate::parse("10/3600").unwrap();
        assert_eq!((rate.builds.get(), rate.window), (10, Duration::from_secs(3600)));
        assert_eq!(rate.to_string(), "10/3600");
        for bad in ["10", "0/60", "10/0", "-1/60", "x/60", "10/y", "10/60/2"] {
            assert!(BuildRate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_window_holds_more_than_n_and_the_wait_is_exact() {
        let limiter = RateLimiter::new(BuildRate::parse("2/60").unwrap());
        let alice = ClientKey::Principal("alice".into());
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(limiter.admit(&alice, at(0)), Ok(()));
        assert_eq!(limiter.admit(&alice, at(30)), Ok(()));
        assert_eq!(limiter.admit(&alice, at(31)), Err(Duration::from_secs(29)));
        assert_eq!(limiter.admit(&alice, at(59)), Err(Duration::from_secs(1)), "refusals do not count");
        assert_eq!(limiter.admit(&alice, at(60)), Ok(()), "the first build left the window");
        assert_eq!(limiter.admit(&alice, at(61)), Err(Duration::from_secs(29)));
        // Others have their own windows.
        assert_eq!(limiter.admit(&ClientKey::Principal("bob".into()), at(61)), Ok(()));
        assert_eq!(limiter.admit(&addr("192.0.2.1"), at(61)), Ok(()));
    }

    #[test]
    fn clients_of_past_windows_are_forgotten() {
        let limiter = RateLimiter::new(BuildRate::parse("1/10").unwrap());
        let t0 = Instant::now();
        for i in 0..SWEEP_EVERY {
            let client = addr(&format!("10.0.{}.{}", i / 256, i % 256));
            limiter.admit(&client, t0).unwrap();
        }
        assert_eq!(limiter.clients(), SWEEP_EVERY as usize, "swept at the last admission, all still in the window");
        let later = t0 + Duration::from_secs(11);
        for i in 0..SWEEP_EVERY {
            limiter.admit(&addr("192.0.2.7"), later + Duration::from_millis(u64::from(i))).ok();
        }
        assert_eq!(limiter.clients(), 1, "only the client of the current window is left");
    }
}
