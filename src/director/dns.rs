//! The director's DNS front door: an authoritative server (hickory-server) for one host name, answering
//! A and AAAA queries with the address of the edge [`super::Steering::pick`] chooses for the client.
//!
//! The client is the query's EDNS Client Subnet (RFC 7871) when it carries one, as a public resolver sends
//! for its users, else the address the query came from (the resolver itself). An answer to a query with a
//! client subnet carries the option back with the same family, address and source prefix, and a scope
//! prefix saying how many leading bits the answer depended on: the coverage zone's length, or 0 when the
//! director's own region decided (every client of that family gets the same answer), so resolvers cache it
//! for exactly the clients it fits. TTLs are `director.dns_ttl_s`, at most 30 s, so an edge that dies or
//! fills stops getting new viewers once resolvers' copies expire.
//!
//! An edge whose HTTP address is a host name is answered with a CNAME to it. Other names are REFUSED
//! (the server is authoritative for its one name only); other types get an empty answer (NODATA); no
//! edge up is SERVFAIL, which makes resolvers try again rather than cache a denial.
//!
//! hickory-server runs each UDP query as its own task; answering takes no I/O and no lock held across an
//! await, so a query's task ends as soon as its answer is sent and a flood costs CPU, not memory.

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use hickory_proto::op::{Edns, Header, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};

use super::Steering;
use crate::id::NodeId;

/// The UDP payload size answers offer (the DNS flag day's 1232 bytes: no fragmentation).
const MAX_PAYLOAD: u16 = 1232;

/// Whether `name` is a host name this server can answer for.
pub fn valid_name(name: &str) -> Result<Name, String> {
    let trimmed = name.trim_end_matches('.');
    let ok = !trimmed.is_empty()
        && trimmed.len() <= 253
        && trimmed.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !ok {
        return Err(format!("{name:?} is not a host name"));
    }
    Name::from_str(&format!("{trimmed}.")).map_err(|e| e.to_string())
}

/// A client subnet as a query sends it: the address (host bits zero) and how many leading bits count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub address: IpAddr,
    pub source_prefix: u8,
}

/// Reads an ECS option's bytes (family, source prefix, scope prefix, truncated address; RFC 7871 section
/// 6): `None` for a family other than IPv4 (1) and IPv6 (2), a source prefix longer than the family's
/// address, an address of the wrong length, or bits set past the source prefix.
pub fn read_subnet(bytes: &[u8]) -> Option<Subnet> {
    let [f0, f1, source, _scope, address @ ..] = bytes else { return None };
    let (width, v4) = match u16::from_be_bytes([*f0, *f1]) {
        1 => (32u8, true),
        2 => (128u8, false),
        _ => return None,
    };
    if *source > width || address.len() != usize::from(source.div_ceil(8)) {
        return None;
    }
    let mut full = [0u8; 16];
    full[..address.len()].copy_from_slice(address);
    let ip = if v4 { IpAddr::from([full[0], full[1], full[2], full[3]]) } else { IpAddr::from(full) };
    crate::steering::zones::host_bits_clear(ip, *source).then_some(Subnet { address: ip, source_prefix: *source })
}

/// Answers queries for one name.
struct Answerer {
    name: LowerName,
    ttl: u32,
    steering: Arc<Steering>,
    me: NodeId,
}

/// Serves DNS on `socket` until the task is dropped.
pub(super) async fn serve(socket: tokio::net::UdpSocket, name: String, ttl: u32, steering: Arc<Steering>, me: NodeId) {
    let name = match valid_name(&name) {
        Ok(n) => LowerName::from(n),
        Err(e) => {
            tracing::error!(director = %me, error = %e, "director.dns_name: DNS director not started");
            return;
        }
    };
    let mut server = hickory_server::ServerFuture::new(Answerer { name, ttl, steering, me: me.clone() });
    server.register_socket(socket);
    if let Err(e) = server.block_until_done().await {
        tracing::error!(director = %me, error = %e, "DNS director stopped");
    }
}

#[async_trait::async_trait]
impl RequestHandler for Answerer {
    async fn handle_request<R: ResponseHandler>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut header = Header::response_from_request(request.header());
        header.set_authoritative(true);
        let fail = |mut header: Header, code: ResponseCode| {
            header.set_response_code(code);
            header
        };
        if request.op_code() != OpCode::Query || request.message_type() != MessageType::Query {
            let header = fail(header, ResponseCode::NotImp);
            return send(&mut response, builder.build_no_records(header), &self.me).await;
        }
        let query = request.query();
        if query.name() != &self.name {
            let header = fail(header, ResponseCode::Refused);
            return send(&mut response, builder.build_no_records(header), &self.me).await;
        }
        let subnet = request.edns().and_then(|edns| match edns.options().get(EdnsCode::Subnet) {
            Some(EdnsOption::Subnet(cs)) => Vec::<u8>::try_from(cs).ok().and_then(|b| read_subnet(&b)),
            _ => None,
        });
        let (client, bits) = match subnet {
            Some(s) => (s.address, s.source_prefix),
            None => (request.src().ip(), 128),
        };
        let pick = self.steering.pick(client, bits, None);
        let mut answers = Vec::new();
        let owner = Name::from(query.name().clone());
        match &pick.edge {
            None => {
                header.set_response_code(ResponseCode::ServFail);
            }
            Some((edge, http)) => {
                let rdata = match (http.ip(), query.query_type()) {
                    (Some(IpAddr::V4(ip)), RecordType::A) => Some(RData::A(A::from(ip))),
                    (Some(IpAddr::V6(ip)), RecordType::AAAA) => Some(RData::AAAA(AAAA::from(ip))),
                    (None, RecordType::A | RecordType::AAAA | RecordType::CNAME) => {
                        Name::from_str(&format!("{}.", http.host.trim_end_matches('.')))
                            .ok()
                            .map(|n| RData::CNAME(CNAME(n)))
                    }
                    _ => None,
                };
                if let Some(rdata) = rdata {
                    answers.push(Record::from_rdata(owner, self.ttl, rdata));
                    metrics::counter!("lightpath_director_dns_answers_total", "director" => self.me.to_string(), "edge" => edge.to_string())
                        .increment(1);
                }
            }
        }
        let mut message = builder.build(header, answers.iter(), [].iter(), [].iter(), [].iter());
        if let Some(asked) = request.edns() {
            let mut edns = Edns::new();
            edns.set_max_payload(MAX_PAYLOAD.min(asked.max_payload().max(512)));
            if let Some(s) = subnet {
                // RFC 7871 7.2.1: the scope is at most what the answer depended on; it may exceed the source.
                let width = if s.address.is_ipv4() { 32 } else { 128 };
                edns.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
                    s.address,
                    s.source_prefix,
                    pick.scope.min(width),
                )));
            }
            message.set_edns(edns);
        }
        send(&mut response, message, &self.me).await
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    message: hickory_server::authority::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    me: &NodeId,
) -> ResponseInfo {
    let header = *message.header();
    match response.send_response(message).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(director = %me, error = %e, "DNS answer not sent");
            header.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_read_as_rfc_7871_writes_them() {
        assert_eq!(
            read_subnet(&[0, 1, 24, 0, 203, 0, 113]),
            Some(Subnet { address: "203.0.113.0".parse().unwrap(), source_prefix: 24 })
        );
        assert_eq!(read_subnet(&[0, 1, 0, 0]), Some(Subnet { address: "0.0.0.0".parse().unwrap(), source_prefix: 0 }));
        let v6 = [0, 2, 48, 0, 0x20, 0x01, 0x0d, 0xb8, 0, 5];
        assert_eq!(read_subnet(&v6), Some(Subnet { address: "2001:db8:5::".parse().unwrap(), source_prefix: 48 }));
        for bad in [
            &[0, 1, 24, 0, 203, 0][..],         // too few address bytes
            &[0, 1, 24, 0, 203, 0, 113, 0][..], // too many
            &[0, 1, 23, 0, 203, 0, 113][..],    // a bit past the prefix
            &[0, 1, 33, 0, 1, 2, 3, 4, 5][..],  // longer than IPv4
            &[0, 3, 8, 0, 1][..],               // unknown family
            &[0, 1][..],
        ] {
            assert_eq!(read_subnet(bad), None, "{bad:?}");
        }
        assert!(valid_name("live.example.com").is_ok());
        assert!(valid_name("live..example").is_err());
        assert!(valid_name("-x.example").is_err());
    }

    proptest::proptest! {
        /// Any bytes read as a subnet or as nothing, never a panic; a subnet read is one hickory writes back
        /// the same.
        #[test]
        fn any_bytes_read_without_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..24)) {
            if let Some(s) = read_subnet(&bytes) {
                let written = Vec::<u8>::try_from(&ClientSubnet::new(s.address, s.source_prefix, 0)).unwrap();
                proptest::prop_assert_eq!(read_subnet(&written), Some(s));
            }
        }
    }
}
