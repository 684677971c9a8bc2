//! `host:port` addresses as operators write them in topology files.
//!
//! An [`Address`] keeps the host as written, a DNS name or an IP literal, so that a node whose address
//! changes in DNS is found again on the next reconnect without editing the topology. Parsing checks the
//! syntax only (a port that is not 0, a well-formed name or IP); nothing is looked up until
//! [`Address::resolve`] is called when connecting. Listeners bind the literal [`Address::socket_addr`], or the
//! node config's `mesh_listen` / `http_listen` when the topology names a host.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// Why an address was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Nothing was written.
    #[error("empty address (write host:port)")]
    Empty,
    /// There is no `:port` after the host.
    #[error("{0:?} has no port (write host:port)")]
    MissingPort(String),
    /// The port is not a number from 1 to 65535.
    #[error("{0:?} has a bad port (expected a number from 1 to 65535)")]
    BadPort(String),
    /// The port is 0, which would mean "any port" to a listener and nothing to a peer.
    #[error("{0:?} has port 0 (expected a port from 1 to 65535)")]
    PortZero(String),
    /// An IPv6 literal without brackets: the port cannot be told apart from the address.
    #[error("{0:?}: write IPv6 addresses in brackets, e.g. [::1]:7000")]
    Ipv6NeedsBrackets(String),
    /// The host is neither an IP address nor a valid DNS name.
    #[error("{0:?} has a bad host (expected a DNS name, an IPv4 address or a bracketed IPv6 address)")]
    BadHost(String),
}

/// A host:port address as operators write it. Host names are resolved when connecting (and again on each
/// reconnect).
///
/// `host` is an IP literal (IPv6 without its brackets) or a DNS name. Displays as `host:port`, IPv6 as
/// `[::1]:7000`; parses from and serializes to that same text.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Address {
    /// A DNS name or an IP literal, as written (IPv6 without brackets).
    pub host: String,
    /// The port, 1 to 65535.
    pub port: u16,
}

impl Address {
    /// The literal IP when the host is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// The literal socket address when the host is an IP (used for binding listeners).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.ip().map(|ip| SocketAddr::new(ip, self.port))
    }

    /// A form for comparing addresses: IPs in canonical form, names in lower case without a trailing dot.
    pub(crate) fn canonical(&self) -> String {
        match self.ip() {
            Some(ip) => SocketAddr::new(ip, self.port).to_string(),
            None => format!("{}:{}", self.host.trim_end_matches('.').to_ascii_lowercase(), self.port),
        }
    }

    /// Resolves with hickory-resolver (system config, falling back to defaults); a literal IP needs no
    /// lookup. Returns all addresses.
    ///
    /// A new resolver is built on each call: calls happen on connect and reconnect, not per packet, and a
    /// fresh resolver picks up changes to `/etc/resolv.conf` and `/etc/hosts`.
    pub async fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        use hickory_resolver::config::{ResolverConfig, ResolverOpts};
        use hickory_resolver::TokioAsyncResolver;

        if let Some(addr) = self.socket_addr() {
            return Ok(vec![addr]);
        }
        let resolver = TokioAsyncResolver::tokio_from_system_conf()
            .unwrap_or_else(|_| TokioAsyncResolver::tokio(ResolverConfig::default(), ResolverOpts::default()));
        let lookup = resolver
            .lookup_ip(self.host.as_str())
            .await
            .map_err(|e| std::io::Error::other(format!("resolving {}: {e}", self.host)))?;
        let addrs: Vec<SocketAddr> = lookup.iter().map(|ip| SocketAddr::new(ip, self.port)).collect();
        if addrs.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("resolving {}: no addresses", self.host),
            ));
        }
        Ok(addrs)
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Self {
        Self { host: addr.ip().to_string(), port: addr.port() }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, AddressError> {
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| AddressError::BadHost(s.to_owned()))?;
            if host.parse::<Ipv6Addr>().is_err() {
                return Err(AddressError::BadHost(s.to_owned()));
            }
            if after.is_empty() {
                return Err(AddressError::MissingPort(s.to_owned()));
            }
            let port = after.strip_prefix(':').ok_or_else(|| AddressError::BadHost(s.to_owned()))?;
            (host, port)
        } else {
            match s.rsplit_once(':') {
                None => return Err(AddressError::MissingPort(s.to_owned())),
                Some((host, _)) if host.contains(':') => {
                    return Err(AddressError::Ipv6NeedsBrackets(s.to_owned()));
                }
                Some((host, port)) => {
                    if !valid_host(host) {
                        return Err(AddressError::BadHost(s.to_owned()));
                    }
                    (host, port)
                }
            }
        };
        if port.is_empty() {
            return Err(AddressError::MissingPort(s.to_owned()));
        }
        if !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AddressError::BadPort(s.to_owned()));
        }
        let port: u16 = port.parse().map_err(|_| AddressError::BadPort(s.to_owned()))?;
        if port == 0 {
            return Err(AddressError::PortZero(s.to_owned()));
        }
        Ok(Self { host: host.to_owned(), port })
    }
}

/// An IPv4 literal or a DNS name (RFC 1123 labels, at most 253 bytes, optional trailing dot). A name whose
/// last label is all digits is a mistyped IPv4 address, not a name.
fn valid_host(host: &str) -> bool {
    if host.parse::<Ipv4Addr>().is_ok() {
        return true;
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    name.split('.').all(label_ok) && !name.rsplit('.').next().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

impl TryFrom<String> for Address {
    type Error = AddressError;
    fn try_from(s: String) -> Result<Self, AddressError> {
        s.parse()
    }
}

impl From<Address> for String {
    fn from(a: Address) -> String {
        a.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_ipv4_and_bracketed_ipv6() {
        let a: Address = "eastus.mesh.example.net:4433".parse().unwrap();
        assert_eq!((a.host.as_str(), a.port), ("eastus.mesh.example.net", 4433));
        assert_eq!(a.socket_addr(), None);
        let a: Address = "127.0.0.1:47101".parse().unwrap();
        assert_eq!(a.socket_addr(), Some("127.0.0.1:47101".parse().unwrap()));
        let a: Address = "[::1]:7000".parse().unwrap();
        assert_eq!(a.host, "::1");
        assert_eq!(a.to_string(), "[::1]:7000");
        assert_eq!(a.socket_addr(), Some("[::1]:7000".parse().unwrap()));
        assert!("localhost:80".parse::<Address>().is_ok());
        assert!("example.net.:80".parse::<Address>().is_ok());
    }

    #[test]
    fn rejects_each_kind_of_mistake() {
        use AddressError::*;
        let cases = [
            ("", Empty),
            ("example.net", MissingPort(String::new())),
            ("example.net:", MissingPort(String::new())),
            ("[::1]", MissingPort(String::new())),
            ("example.net:0", PortZero(String::new())),
            ("example.net:65536", BadPort(String::new())),
            ("example.net:+80", BadPort(String::new())),
            ("example.net:http", BadPort(String::new())),
            ("::1:7000", Ipv6NeedsBrackets(String::new())),
            ("[1.2.3.4]:80", BadHost(String::new())),
            ("[::1]7000", BadHost(String::new())),
            ("300.1.1.1:80", BadHost(String::new())),
            ("bad_host:80", BadHost(String::new())),
            ("-x.example:80", BadHost(String::new())),
            ("a..b:80", BadHost(String::new())),
            (":80", BadHost(String::new())),
        ];
        for (text, kind) in cases {
            let err = text.parse::<Address>().expect_err(text);
            let same = std::mem::discriminant(&err) == std::mem::discriminant(&kind);
            assert!(same, "{text:?} gave {err:?}, expected {kind:?}");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in ["a.example:1", "10.0.0.1:65535", "[fe80::1]:443"] {
            assert_eq!(text.parse::<Address>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn canonical_form_compares_equal_spellings() {
        let a: Address = "[::1]:7".parse().unwrap();
        let b: Address = "[0:0::1]:7".parse().unwrap();
        assert_eq!(a.canonical(), b.canonical());
        let a: Address = "Mesh.Example.net.:7".parse().unwrap();
        let b: Address = "mesh.example.net:7".parse().unwrap();
        assert_eq!(a.canonical(), b.canonical());
    }

    #[tokio::test]
    async fn literal_ip_resolves_without_lookup() {
        let a: Address = "192.0.2.7:9".parse().unwrap();
        assert_eq!(a.resolve().await.unwrap(), vec!["192.0.2.7:9".parse().unwrap()]);
    }

    #[tokio::test]
    async fn host_names_resolve_through_the_hosts_file() {
        let a: Address = "localhost:9".parse().unwrap();
        let addrs = a.resolve().await.unwrap();
        assert!(addrs.iter().all(|s| s.port() == 9 && s.ip().is_loopback()), "{addrs:?}");
        assert!(!addrs.is_empty());
    }
}
