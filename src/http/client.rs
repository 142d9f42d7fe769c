//! Who is asking: the client's address, believing `X-Forwarded-For` only from the proxies in
//! `TRUSTED_PROXIES`. The card-testing caps and the staff console's sign-in limits count by it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct Proxies(Arc<[IpNet]>);

impl Proxies {
    pub fn new(trusted: Vec<IpNet>) -> Self {
        Self(trusted.into())
    }

    /// The client's address: the peer's, unless the peer is a trusted proxy; then the
    /// right-most address of `X-Forwarded-For` that is not a trusted proxy (each proxy appends
    /// the address it heard from, so everything left of the first untrusted one is the
    /// client's to make up).
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer.ip());
        if !self.trusts(peer) {
            return peer;
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|entry| entry.trim().parse::<IpAddr>().ok())
            .map(canonical)
            .collect();
        forwarded
            .iter()
            .rev()
            .find(|ip| !self.trusts(**ip))
            .or(forwarded.first())
            .copied()
            .unwrap_or(peer)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// An IPv4 address seen through IPv6 (`::ffff:a.b.c.d`) as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(trusted: &[&str]) -> Proxies {
        Proxies::new(trusted.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().unwrap());
        headers
    }

    #[test]
    fn the_client_is_the_peer_unless_the_peer_is_a_trusted_proxy() {
        let peer: SocketAddr = "203.0.113.9:5000".parse().unwrap();
        let untrusted = proxies(&[]);
        assert_eq!(
            untrusted.client_ip(peer, &forwarded("198.51.100.1")),
            "203.0.113.9".parse::<IpAddr>().unwrap(),
            "a header from anyone is ignored"
        );
        let proxy: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let behind = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            behind.client_ip(proxy, &forwarded("6.6.6.6, 198.51.100.1, 10.0.0.7")),
            "198.51.100.1".parse::<IpAddr>().unwrap(),
            "the right-most untrusted entry: what the client wrote itself is left of it"
        );
        assert_eq!(
            behind.client_ip(proxy, &HeaderMap::new()),
            "10.0.0.2".parse::<IpAddr>().unwrap()
        );
        let mapped: SocketAddr = "[::ffff:10.0.0.2]:5000".parse().unwrap();
        assert_eq!(
            behind.client_ip(mapped, &forwarded("198.51.100.1")),
            "198.51.100.1".parse::<IpAddr>().unwrap(),
            "an IPv4 peer seen through IPv6 is still the proxy"
        );
    }
}
