//! Why a peer's connection was refused, in words an operator can act on, and how long to wait before the
//! next attempt.
//!
//! A refused handshake reaches us as a QUIC close with a TLS alert number, or as the text of our own TLS
//! library's verdict; neither says "peer edge-ap at 127.0.0.1:4433 presented a certificate for edge-us".
//! [`refusal`] reads a [`quinn::ConnectionError`] into a [`Refused`] that does. A refusal will not pass by
//! itself (someone must fix a certificate or a topology), so [`Backoff`] lets the wait after refusals grow
//! further than after an unreachable peer, which comes back by itself.

use std::fmt;
use std::time::Duration;

/// The TLS alert numbers (RFC 8446, section 6) a refused certificate comes with.
const BAD_CERTIFICATE: u8 = 42;
const UNSUPPORTED_CERTIFICATE: u8 = 43;
const CERTIFICATE_EXPIRED: u8 = 45;
const CERTIFICATE_UNKNOWN: u8 = 46;
const UNKNOWN_CA: u8 = 48;
const CERTIFICATE_REQUIRED: u8 = 116;

/// QUIC carries a TLS alert as transport error `0x100 + alert` (RFC 9001, section 4.8).
const CRYPTO_ERRORS: std::ops::RangeInclusive<u64> = 0x100..=0x1ff;

/// A connection refused for who one side is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// We refused the peer's certificate: it names other nodes.
    ForAnotherNode {
        /// The names it holds.
        names: Vec<String>,
    },
    /// We refused the peer's certificate: not from the mesh CA.
    UnknownCa,
    /// We refused the peer's certificate: expired or not yet valid.
    OutsideValidity,
    /// We refused the peer's certificate for another reason (the TLS library's words).
    TheirCertificate(String),
    /// The peer refused our certificate, with this TLS alert.
    OurCertificate {
        /// The TLS alert number.
        alert: u8,
    },
    /// The peer closed the connection on purpose after the handshake, with its reason ("not a neighbour",
    /// "bad hello").
    ClosedByPeer(String),
    /// The peer's hello named another node or protocol than expected.
    Hello(String),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::ForAnotherNode { names } if names.is_empty() => f.write_str("presented a certificate for no node"),
            Refused::ForAnotherNode { names } => write!(f, "presented a certificate for {}", names.join(", ")),
            Refused::UnknownCa => f.write_str("presented a certificate from an unknown CA, not the mesh's"),
            Refused::OutsideValidity => f.write_str("presented a certificate outside its validity period"),
            Refused::TheirCertificate(why) => write!(f, "presented a certificate refused: {why}"),
            Refused::OurCertificate { alert } => {
                let why = match *alert {
                    UNKNOWN_CA => "unknown CA",
                    CERTIFICATE_EXPIRED => "expired",
                    BAD_CERTIFICATE => "bad certificate",
                    UNSUPPORTED_CERTIFICATE => "unsupported certificate",
                    CERTIFICATE_UNKNOWN => "certificate unknown",
                    CERTIFICATE_REQUIRED => "certificate required",
                    _ => "TLS alert",
                };
                write!(f, "refused this node's certificate ({why}, TLS alert {alert})")
            }
            Refused::ClosedByPeer(reason) => write!(f, "refused this node: {reason}"),
            Refused::Hello(what) => write!(f, "said hello wrongly: {what}"),
        }
    }
}

/// Reads a failed handshake or a connection closed right after it as a refusal, if it is one; `None` for
/// failures that are not about identity (timeouts, resets, the network).
pub fn refusal(error: &quinn::ConnectionError) -> Option<Refused> {
    match error {
        quinn::ConnectionError::TransportError(e) if CRYPTO_ERRORS.contains(&u64::from(e.code)) => {
            Some(our_verdict(&e.reason))
        }
        quinn::ConnectionError::ConnectionClosed(close) if CRYPTO_ERRORS.contains(&u64::from(close.error_code)) => {
            Some(Refused::OurCertificate { alert: (u64::from(close.error_code) - 0x100) as u8 })
        }
        quinn::ConnectionError::ApplicationClosed(close) if !close.reason.is_empty() => {
            Some(Refused::ClosedByPeer(String::from_utf8_lossy(&close.reason).into_owned()))
        }
        _ => None,
    }
}

/// Our TLS library's verdict on the peer's certificate, from its text (rustls names the presented DNS names
/// as `DnsName("edge-us")`; the tests below hold that format to the rustls in use).
fn our_verdict(reason: &str) -> Refused {
    if reason.contains("not valid for name") {
        let names =
            reason.split("DnsName(\"").skip(1).filter_map(|rest| rest.split('"').next()).map(str::to_owned).collect();
        Refused::ForAnotherNode { names }
    } else if reason.contains("UnknownIssuer") || reason.contains("BadSignature") {
        // Two CAs made by `lightpath ca init` share a name: a certificate of the other one names our CA as
        // its issuer, and only its signature tells them apart.
        Refused::UnknownCa
    } else if reason.to_ascii_lowercase().contains("expired") || reason.contains("NotValidYet") {
        Refused::OutsideValidity
    } else {
        Refused::TheirCertificate(reason.to_owned())
    }
}

/// Waits between dial attempts: doubling from `first`, capped at `unreachable_cap` after failures that
/// may pass by themselves and at `refused_cap` after refusals, and back to `first` after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    unreachable_cap: Duration,
    refused_cap: Duration,
    next: Duration,
}

impl Backoff {
    /// A mesh link's: from 100 ms, up to 5 s while the peer is unreachable (a restarted node rejoins within
    /// seconds) and up to 30 s while it refuses (nothing changes until someone fixes a certificate, and
    /// each attempt is a log line on both sides).
    pub fn mesh() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5), Duration::from_secs(30))
    }

    pub fn new(first: Duration, unreachable_cap: Duration, refused_cap: Duration) -> Self {
        Self { first, unreachable_cap, refused_cap, next: first }
    }

    /// A connection was established: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// The wait before the next attempt after a failure (`refused`: one about identity).
    pub fn after_failure(&mut self, refused: bool) -> Duration {
        let cap = if refused { self.refused_cap } else { self.unreachable_cap };
        let wait = self.next.min(cap);
        self.next = (self.next * 2).min(cap.max(self.unreachable_cap));
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_verdicts_read_as_words() {
        let wrong_name = rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext {
            expected: rustls::pki_types::ServerName::try_from("edge-ap").unwrap().to_owned(),
            presented: vec!["DnsName(\"edge-us\")".into()],
        });
        let refused = our_verdict(&wrong_name.to_string());
        assert_eq!(refused, Refused::ForAnotherNode { names: vec!["edge-us".into()] });
        assert_eq!(refused.to_string(), "presented a certificate for edge-us");
        for unknown in [rustls::CertificateError::UnknownIssuer, rustls::CertificateError::BadSignature] {
            assert_eq!(our_verdict(&rustls::Error::InvalidCertificate(unknown).to_string()), Refused::UnknownCa);
        }
        let not_yet = rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidYet);
        assert_eq!(our_verdict(&not_yet.to_string()), Refused::OutsideValidity);
        let expired = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        assert_eq!(our_verdict(&expired.to_string()), Refused::OutsideValidity);
        assert_eq!(
            Refused::OurCertificate { alert: UNKNOWN_CA }.to_string(),
            "refused this node's certificate (unknown CA, TLS alert 48)"
        );
    }

    #[test]
    fn refusals_back_off_further_than_outages_and_reset_on_success() {
        let ms = Duration::from_millis;
        let mut b = Backoff::mesh();
        let outage: Vec<_> = (0..8).map(|_| b.after_failure(false)).collect();
        assert_eq!(outage, [ms(100), ms(200), ms(400), ms(800), ms(1600), ms(3200), ms(5000), ms(5000)]);
        b.reset();
        let refusals: Vec<_> = (0..12).map(|_| b.after_failure(true)).collect();
        assert_eq!(refusals[..4], [ms(100), ms(200), ms(400), ms(800)]);
        assert_eq!(*refusals.last().unwrap(), ms(30_000));
        assert!(refusals.iter().all(|w| *w <= ms(30_000)));
        // A refusal-length backoff followed by an outage is capped at the outage's cap.
        assert_eq!(b.after_failure(false), ms(5000));
        b.reset();
        assert_eq!(b.after_failure(true), ms(100));
    }
}
