//! Coverage zones: which client networks belong to which region, read from a coverage-zone file.
//!
//! The file is plain text, one zone a line: a network in CIDR notation and the region it belongs to, apart
//! by white space; `#` starts a comment, blank lines are skipped:
//!
//! ```text
//! # an ISP's Singapore customers, and our office
//! 203.0.113.0/24    ap-southeast
//! 2001:db8:5::/48   ap-southeast
//! 198.51.100.7/32   us-east
//! ```
//!
//! A client address takes the region of the longest network that holds it (a /32 inside a /16 wins), as a
//! router picks a route. IPv4 and IPv6 are kept apart: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as a
//! dual-stack socket reports an IPv4 client) is looked up as the IPv4 address it is. Lookups cost one hash
//! probe per distinct prefix length in the file, whatever its size.

use std::collections::HashMap;
use std::net::IpAddr;

/// A network: an address with its first `len` bits significant (the rest zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Network {
    /// The address, host bits cleared, as 128 bits (an IPv4 network in the low 32).
    bits: u128,
    /// How many leading bits are significant.
    pub len: u8,
    /// Whether this is an IPv4 network.
    pub v4: bool,
}

/// Why a network in CIDR notation did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    /// No `/` between address and prefix length.
    #[error("{0:?} is not ADDRESS/LENGTH")]
    NoSlash(String),
    /// The part before `/` is not an IP address.
    #[error("{0:?} is not an IP address")]
    Address(String),
    /// The prefix length is not a number of bits the address has.
    #[error("prefix length {0:?} is not 0 to {1}")]
    Length(String, u8),
    /// Bits past the prefix are set, so the writer meant another network (or another length).
    #[error("{0} has bits set past its prefix length; the network is {1}")]
    HostBits(String, String),
}

impl Network {
    /// Parses `a.b.c.d/n` or `x:y::/n`, refusing host bits past the prefix (a likely typo).
    pub fn parse(text: &str) -> Result<Self, NetworkError> {
        let (addr, len) = text.split_once('/').ok_or_else(|| NetworkError::NoSlash(text.to_owned()))?;
        let addr: IpAddr = addr.parse().map_err(|_| NetworkError::Address(addr.to_owned()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len: u8 =
            len.parse().ok().filter(|l| *l <= max).ok_or_else(|| NetworkError::Length(len.to_owned(), max))?;
        let network = Self::containing(addr, len);
        if !host_bits_clear(addr, len) {
            return Err(NetworkError::HostBits(text.to_owned(), network.to_string()));
        }
        Ok(network)
    }

    /// The network of `len` bits that holds `addr` (`len` capped at the address's width). An IPv4-mapped
    /// IPv6 address counts as its IPv4 address.
    pub fn containing(addr: IpAddr, len: u8) -> Self {
        let addr = canonical(addr);
        let (raw, width) = match addr {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32u8),
            IpAddr::V6(a) => (u128::from(a), 128u8),
        };
        let len = len.min(width);
        let host_bits = u32::from(width - len);
        let bits = if host_bits >= 128 { 0 } else { raw >> host_bits << host_bits };
        Self { bits, len, v4: width == 32 }
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.v4 {
            write!(f, "{}/{}", std::net::Ipv4Addr::from(self.bits as u32), self.len)
        } else {
            write!(f, "{}/{}", std::net::Ipv6Addr::from(self.bits), self.len)
        }
    }
}

/// Whether every bit of `addr` past its first `len` is zero.
pub fn host_bits_clear(addr: IpAddr, len: u8) -> bool {
    Network::containing(addr, len).bits == Network::containing(addr, 128).bits
}

/// An IPv4-mapped IPv6 address as the IPv4 address it carries; any other address as it is.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// A line of a coverage-zone file that did not read, by its number (from 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ZoneError {
    /// The line, counted from 1.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// The zones of a coverage-zone file.
#[derive(Debug, Clone, Default)]
pub struct CoverageZones {
    /// Networks by prefix length, longest first, each a map from network to region.
    by_len: Vec<(u8, bool, HashMap<u128, String>)>,
    count: usize,
}

/// Where a client address falls: the region of the longest zone holding it, and that zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZoneMatch<'a> {
    /// The zone's region.
    pub region: &'a str,
    /// The zone.
    pub network: Network,
}

impl CoverageZones {
    /// Reads a coverage-zone file's text: every bad line at once. `known_region` says whether a region
    /// name is one the topology has (a zone for a region without edges would send nobody anywhere).
    pub fn parse(text: &str, known_region: impl Fn(&str) -> bool) -> Result<Self, Vec<ZoneError>> {
        let mut zones = Self::default();
        let mut errors = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let content = line.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let words: Vec<&str> = content.split_whitespace().collect();
            let [cidr, region] = words[..] else {
                errors.push(ZoneError {
                    line: line_no,
                    message: format!("expected NETWORK/LENGTH REGION, got {content:?}"),
                });
                continue;
            };
            let network = match Network::parse(cidr) {
                Ok(n) => n,
                Err(e) => {
                    errors.push(ZoneError { line: line_no, message: e.to_string() });
                    continue;
                }
            };
            if !known_region(region) {
                errors.push(ZoneError { line: line_no, message: format!("region {region:?} is not in the topology") });
                continue;
            }
            if let Some(other) = zones.insert(network, region) {
                errors.push(ZoneError {
                    line: line_no,
                    message: format!("{network} is listed twice (for {other:?} and {region:?})"),
                });
            }
        }
        if errors.is_empty() {
            Ok(zones)
        } else {
            Err(errors)
        }
    }

    /// Adds a zone; the region it had, if the network was already listed.
    pub fn insert(&mut self, network: Network, region: &str) -> Option<String> {
        let slot = match self.by_len.iter().position(|(len, v4, _)| *len == network.len && *v4 == network.v4) {
            Some(i) => i,
            None => {
                self.by_len.push((network.len, network.v4, HashMap::new()));
                self.by_len.sort_by_key(|b| std::cmp::Reverse(b.0));
                self.by_len
                    .iter()
                    .position(|(len, v4, _)| *len == network.len && *v4 == network.v4)
                    .expect("just added")
            }
        };
        let previous = self.by_len[slot].2.insert(network.bits, region.to_owned());
        if previous.is_none() {
            self.count += 1;
        }
        previous
    }

    /// How many zones there are.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The longest zone holding `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<ZoneMatch<'_>> {
        self.lookup_within(addr, 128)
    }

    /// The longest zone of at most `known_bits` bits holding `addr`, for a client known only by a network
    /// of that length (a DNS query's client subnet): a longer zone would judge by bits nobody sent.
    pub fn lookup_within(&self, addr: IpAddr, known_bits: u8) -> Option<ZoneMatch<'_>> {
        let v4 = canonical(addr).is_ipv4();
        self.by_len.iter().filter(|(len, is_v4, _)| *is_v4 == v4 && *len <= known_bits).find_map(|(len, _, map)| {
            let network = Network::containing(addr, *len);
            map.get(&network.bits).map(|region| ZoneMatch { region, network })
        })
    }

    /// The longest prefix among the zones of the address's family that lie inside `network` (longer than
    /// it, so that its bits alone cannot tell them apart). A DNS answer for a client subnet is good for all
    /// of `network` only when this is `None`.
    pub fn longest_inside(&self, network: Network) -> Option<u8> {
        self.by_len.iter().filter(|(len, v4, _)| *v4 == network.v4 && *len > network.len).find_map(|(len, _, map)| {
            let width = if network.v4 { 32 } else { 128 };
            let shift = u32::from(width - network.len);
            map.keys().any(|bits| shift >= 128 || (bits >> shift << shift) == network.bits).then_some(*len)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zones(text: &str) -> CoverageZones {
        CoverageZones::parse(text, |r| ["us-east", "ap-southeast", "eu-west"].contains(&r)).unwrap()
    }

    #[test]
    fn the_longest_zone_wins() {
        let z = zones(
            "# comment\n10.0.0.0/8 us-east\n10.1.0.0/16 ap-southeast  # inner\n\n10.1.2.3/32 eu-west\n::/0 eu-west\n",
        );
        assert_eq!(z.len(), 4);
        let region = |a: &str| z.lookup(a.parse().unwrap()).map(|m| m.region.to_owned());
        assert_eq!(region("10.9.9.9").as_deref(), Some("us-east"));
        assert_eq!(region("10.1.9.9").as_deref(), Some("ap-southeast"));
        assert_eq!(region("10.1.2.3").as_deref(), Some("eu-west"));
        assert_eq!(region("::ffff:10.1.9.9").as_deref(), Some("ap-southeast"), "a mapped address is IPv4");
        assert_eq!(region("11.0.0.1"), None);
        assert_eq!(region("2001:db8::1").as_deref(), Some("eu-west"));
        let m = z.lookup("10.1.9.9".parse().unwrap()).unwrap();
        assert_eq!(m.network.to_string(), "10.1.0.0/16");
        // Known by its /8 only, 10.1.2.3 is in 10.0.0.0/8, and zones inside that /8 exist.
        let m = z.lookup_within("10.1.2.0".parse().unwrap(), 8).unwrap();
        assert_eq!(m.region, "us-east");
        assert_eq!(z.longest_inside(Network::parse("10.0.0.0/8").unwrap()), Some(32));
        assert_eq!(z.longest_inside(Network::parse("10.9.0.0/16").unwrap()), None);
    }

    #[test]
    fn every_bad_line_is_named() {
        let errors = CoverageZones::parse(
            "10.0.0.0/8 us-east\n10.0.0.1/8 us-east\n10.0.0.0 us-east\n10.0.0.0/33 us-east\nx/8 us-east\n\
             10.0.0.0/8 mars\n1.0.0.0/8\n10.0.0.0/8 eu-west\n",
            |r| r != "mars",
        )
        .unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6, 7, 8], "{errors:?}");
        assert!(errors[0].message.contains("10.0.0.0/8"), "{}", errors[0]);
        assert!(errors[6].message.contains("twice"), "{}", errors[6]);
    }

    proptest::proptest! {
        /// A zone holds exactly the addresses that share its first bits, and a lookup finds the longest.
        #[test]
        fn lookup_agrees_with_a_linear_scan(
            nets in proptest::collection::vec((proptest::num::u32::ANY, 0u8..=32), 0..20),
            probes in proptest::collection::vec(proptest::num::u32::ANY, 1..20),
        ) {
            let mut z = CoverageZones::default();
            let mut all = Vec::new();
            for (i, (addr, len)) in nets.iter().enumerate() {
                let n = Network::containing(IpAddr::V4((*addr).into()), *len);
                if z.insert(n, &format!("r{i}")).is_none() {
                    all.push((n, format!("r{i}")));
                } else {
                    all.retain(|(m, _)| *m != n);
                    all.push((n, format!("r{i}")));
                }
            }
            for p in probes {
                let addr = IpAddr::V4(p.into());
                let expected = all
                    .iter()
                    .filter(|(n, _)| Network::containing(addr, n.len) == *n)
                    .max_by_key(|(n, _)| n.len)
                    .map(|(_, r)| r.clone());
                proptest::prop_assert_eq!(z.lookup(addr).map(|m| m.region.to_owned()), expected);
            }
        }

        /// Any text parses to zones or line-numbered errors, never a panic.
        #[test]
        fn any_text_reads_without_panic(text in "\\PC{0,200}") {
            let _ = CoverageZones::parse(&text, |_| true);
        }
    }
}
