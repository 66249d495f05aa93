//! Which client a request counts against: its principal if it authenticated, else its
//! address.
//!
//! The address is the TCP peer's, unless that peer is one of `NIXERY_TRUSTED_PROXIES`
//! (addresses or CIDR ranges: `10.0.0.0/8,127.0.0.1`), a load balancer or ingress that says
//! whom it forwards for in `X-Forwarded-For`:
//!
//! ```text
//! X-Forwarded-For: 203.0.113.9, 10.1.2.3
//! ```
//!
//! Each proxy appends the address it received the request from, so the header is read from
//! the right: addresses of trusted proxies are skipped, and the first other one is the
//! client. Anything to its left was written by the client itself and is not believed. From a
//! peer that is not trusted the header is ignored altogether: otherwise any client could name
//! a new address per request. (An entry that is not an address stops the walk at the last
//! trusted hop; if every entry is trusted, the leftmost is the client.) Several
//! `X-Forwarded-For` lines are read as one list, in order.
//!
//! IPv6 addresses count by their /64 network: a host usually has a whole /64 and could take
//! a new address per request.

use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv6Addr};

/// What a client's builds are counted under.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    Principal(String),
    /// An IPv4 address, or an IPv6 /64 network (its host bits zero).
    Address(IpAddr),
}

impl ClientKey {
    pub fn from_address(address: IpAddr) -> ClientKey {
        let address = match address.to_canonical() {
            IpAddr::V6(v6) => {
                let network = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(network))
            }
            v4 => v4,
        };
        ClientKey::Address(address)
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientKey::Principal(user) => write!(f, "user {user}"),
            ClientKey::Address(IpAddr::V6(net)) => write!(f, "{net}/64"),
            ClientKey::Address(v4) => write!(f, "{v4}"),
        }
    }
}

/// `NIXERY_TRUSTED_PROXIES`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Comma-separated addresses and CIDR ranges.
    pub fn parse(text: &str) -> Result<TrustedProxies, String> {
        let mut nets = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let net = match part.parse::<IpNet>() {
                Ok(net) => net.trunc(),
                Err(_) => part
                    .parse::<IpAddr>()
                    .map(IpNet::from)
                    .map_err(|_| format!("'{part}' is not an address or CIDR range"))?,
            };
            nets.push(net);
        }
        Ok(TrustedProxies(nets))
    }

    fn trusts(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.0.iter().any(|net| net.contains(&address))
    }

    /// The client address of a request from `peer` with `headers` (see the module docs).
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let mut last_trusted = peer;
        for hop in hops.iter().rev() {
            let Some(address) = parse_hop(hop) else { return last_trusted };
            if !self.trusts(address) {
                return address;
            }
            last_trusted = address;
        }
        last_trusted
    }
}

/// An `X-Forwarded-For` entry: an address, possibly with a port (`192.0.2.1:4711`,
/// `[2001:db8::1]:4711`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(address) = hop.parse() {
        return Some(address);
    }
    if let Ok(socket) = hop.parse::<std::net::SocketAddr>() {
        return Some(socket.ip());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn forwarded(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append("x-forwarded-for", HeaderValue::from_str(line).unwrap());
        }
        headers
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let proxies = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1").unwrap();
        let client = |peer: &str, lines: &[&str]| proxies.client_address(ip(peer), &forwarded(lines)).to_string();
        assert_eq!(client("203.0.113.9", &["198.51.100.1"]), "203.0.113.9", "an untrusted peer's header is ignored");
        assert_eq!(client("127.0.0.1", &["198.51.100.1"]), "198.51.100.1");
        assert_eq!(
            client("127.0.0.1", &["6.6.6.6, 198.51.100.1, 10.1.2.3"]),
            "198.51.100.1",
            "what the client wrote is not believed"
        );
        assert_eq!(client("127.0.0.1", &["6.6.6.6", "198.51.100.1", "10.1.2.3"]), "198.51.100.1", "lines are one list");
        assert_eq!(client("10.9.9.9", &["10.1.2.3"]), "10.1.2.3", "all trusted: the leftmost");
        assert_eq!(client("127.0.0.1", &[]), "127.0.0.1");
        assert_eq!(client("127.0.0.1", &["198.51.100.1, garbage, 10.1.2.3"]), "10.1.2.3", "stops at a bad entry");
        assert_eq!(client("127.0.0.1", &["198.51.100.1:4711"]), "198.51.100.1");
        assert_eq!(client("127.0.0.1", &["[2001:db8::1]:4711"]), "2001:db8::1");
        assert_eq!(client("::ffff:127.0.0.1", &["198.51.100.1"]), "198.51.100.1", "IPv4-mapped peers are IPv4");
        let none = TrustedProxies::default();
        assert_eq!(none.client_address(ip("127.0.0.1"), &forwarded(&["1.2.3.4"])), ip("127.0.0.1"));
    }

    #[test]
    fn proxies_are_addresses_or_ranges() {
        assert!(TrustedProxies::parse("10.0.0.0/8,::1,fd00::/8").is_ok());
        assert_eq!(TrustedProxies::parse("").unwrap(), TrustedProxies::default());
        assert!(TrustedProxies::parse("10.0.0.0/33").unwrap_err().contains("'10.0.0.0/33'"));
        assert!(TrustedProxies::parse("proxy.local").is_err());
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let a = ClientKey::from_address(ip("2001:db8:1:2:aaaa::1"));
        let b = ClientKey::from_address(ip("2001:db8:1:2:bbbb::2"));
        let other = ClientKey::from_address(ip("2001:db8:1:3::1"));
        assert_eq!(a, b);
        assert_ne!(a, other);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(ClientKey::from_address(ip("::ffff:192.0.2.1")).to_string(), "192.0.2.1");
    }
}
