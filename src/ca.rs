//! The mesh certificate authority and the TLS configurations built from it.
//!
//! `lightpath ca init` creates a CA key and self-signed certificate; `lightpath ca issue` signs a node
//! certificate whose only subject name is the node's id (a DNS name). Nodes then speak mutual TLS:
//! each side's chain must lead to the mesh CA, and the dialer checks that the server's certificate names
//! the node it meant to reach. The accepting side learns who dialed from the certificate itself
//! ([`peer_node_id`]), never from anything the peer says.
//!
//! [`check_files`] is what `lightpath check config` and a node's start run before anything dials: the
//! certificate chains to the configured CA, names this node, matches the key and is within its validity,
//! each problem naming its file. Without it a node with another node's certificate only finds out from its
//! peers, one refused handshake after another.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::config::TlsFiles;
use crate::id::NodeId;

/// ALPN protocol id of the mesh protocol.
pub const ALPN: &[u8] = b"lightpath/1";

/// A CA certificate and key in PEM.
pub struct CaFiles {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A node's certificate chain (node certificate, then the CA certificate) and key, in PEM.
pub struct NodeFiles {
    pub chain_pem: String,
    pub key_pem: String,
}

/// Creates a new mesh CA valid for ten years.
pub fn create_ca(name: &str) -> Result<CaFiles> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(3650);
    let key = KeyPair::generate().context("generating the CA key")?;
    let cert = params.self_signed(&key).context("self-signing the CA certificate")?;
    Ok(CaFiles { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// Issues a certificate for `node`, valid for `days`, signed by the CA.
pub fn issue(ca: &CaFiles, node: &NodeId, days: i64) -> Result<NodeFiles> {
    let now = time::OffsetDateTime::now_utc();
    issue_between(ca, node, now - time::Duration::hours(1), now + time::Duration::days(days))
}

/// Issues a certificate for `node` valid from `not_before` to `not_after` (an expired one too, for tests of
/// the checks).
pub fn issue_between(
    ca: &CaFiles,
    node: &NodeId,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> Result<NodeFiles> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).context("reading the CA key")?;
    let ca_params = CertificateParams::from_ca_cert_pem(&ca.cert_pem).context("reading the CA certificate")?;
    let ca_cert = ca_params.self_signed(&ca_key).context("loading the CA")?;
    let mut params = CertificateParams::new(vec![node.as_str().to_owned()])
        .with_context(|| format!("node id {node} is not a valid certificate name"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node.as_str());
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = not_before;
    params.not_after = not_after;
    let key = KeyPair::generate().context("generating the node key")?;
    let cert = params.signed_by(&key, &ca_cert, &ca_key).context("signing the node certificate")?;
    Ok(NodeFiles { chain_pem: format!("{}{}", cert.pem(), ca.cert_pem), key_pem: key.serialize_pem() })
}

/// The CA's files in `dir`: `ca.pem` and `ca.key`.
pub fn ca_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("ca.pem"), dir.join("ca.key"))
}

/// `lightpath ca init --dir DIR`: writes a new CA, refusing to overwrite one.
pub fn init_dir(dir: &Path) -> Result<()> {
    let (cert, key) = ca_paths(dir);
    if cert.exists() || key.exists() {
        bail!("{} already holds a CA; refusing to overwrite it", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca = create_ca("lightpath mesh CA")?;
    write_private(&key, &ca.key_pem)?;
    std::fs::write(&cert, &ca.cert_pem).with_context(|| format!("writing {}", cert.display()))?;
    Ok(())
}

/// `lightpath ca issue --dir DIR --node ID`: writes `ID.pem` (chain) and `ID.key` into `out`.
pub fn issue_into(dir: &Path, node: &NodeId, out: &Path, days: i64) -> Result<(PathBuf, PathBuf)> {
    let (cert, key) = ca_paths(dir);
    let ca = CaFiles {
        cert_pem: std::fs::read_to_string(&cert).with_context(|| format!("reading {}", cert.display()))?,
        key_pem: std::fs::read_to_string(&key).with_context(|| format!("reading {}", key.display()))?,
    };
    let files = issue(&ca, node, days)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let chain = out.join(format!("{node}.pem"));
    let node_key = out.join(format!("{node}.key"));
    std::fs::write(&chain, &files.chain_pem).with_context(|| format!("writing {}", chain.display()))?;
    write_private(&node_key, &files.key_pem)?;
    Ok((chain, node_key))
}

fn write_private(path: &Path, pem: &str) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(pem.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

/// The TLS material a node runs with, parsed.
#[derive(Clone)]
pub struct Identity {
    pub ca: CertificateDer<'static>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Arc<PrivateKeyDer<'static>>,
}

impl Identity {
    /// Parses PEM text: the CA certificate, the node's chain and its key.
    pub fn from_pem(ca_pem: &str, chain_pem: &str, key_pem: &str) -> Result<Self> {
        let ca = rustls_pemfile::certs(&mut ca_pem.as_bytes())
            .next()
            .context("no certificate in the CA file")?
            .context("bad PEM in the CA file")?;
        let chain = rustls_pemfile::certs(&mut chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .context("bad PEM in the certificate file")?;
        if chain.is_empty() {
            bail!("no certificate in the certificate file");
        }
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .context("bad PEM in the key file")?
            .context("no private key in the key file")?;
        Ok(Self { ca, chain, key: Arc::new(key) })
    }

    /// When the node's own certificate (the chain's first) stops being valid, in seconds since the Unix
    /// epoch; `None` if it does not parse. Exported as a gauge so that an alert sees a renewal coming.
    pub fn not_after_unix(&self) -> Option<i64> {
        let params = CertificateParams::from_ca_cert_der(&self.chain[0]).ok()?;
        Some(params.not_after.unix_timestamp())
    }

    /// Reads the three PEM files.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self> {
        let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
        Self::from_pem(&read(ca)?, &read(cert)?, &read(key)?)
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).context("the CA certificate is not usable as a trust anchor")?;
        Ok(Arc::new(roots))
    }

    /// The QUIC server side: only clients with a certificate from the mesh CA complete the handshake.
    pub fn server_config(&self) -> Result<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(self.roots()?, provider.clone())
            .build()
            .context("building the client-certificate verifier")?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .context("the node certificate does not match its key")?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        Ok(cfg)
    }

    /// The QUIC client side: presents the node certificate and accepts only servers from the mesh CA.
    pub fn client_config(&self) -> Result<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .context("the node certificate does not match its key")?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        Ok(cfg)
    }
}

/// Which of `candidates` the (already CA-verified) end-entity certificate names, if any.
pub fn peer_node_id<'a>(cert: &CertificateDer<'_>, candidates: impl IntoIterator<Item = &'a NodeId>) -> Option<NodeId> {
    let ee = webpki::EndEntityCert::try_from(cert).ok()?;
    candidates.into_iter().find_map(|id| {
        let name = ServerName::try_from(id.as_str()).ok()?;
        ee.verify_is_valid_for_subject_name(&name).ok().map(|_| id.clone())
    })
}

/// Why a node's TLS files cannot carry it into the mesh. Each names the file to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// A file does not hold what it should (no certificate, no key, bad PEM or DER).
    #[error("{path}: {what}")]
    Unreadable {
        /// The config field naming the file (`tls.ca`, `tls.cert`, `tls.key`).
        field: &'static str,
        /// The file.
        path: String,
        /// What is wrong with it.
        what: String,
    },
    /// The certificate is not signed by the configured CA (peers would answer "unknown CA").
    #[error("{cert} does not chain to the mesh CA in {ca}: {reason}")]
    OtherCa {
        /// The certificate file.
        cert: String,
        /// The CA file.
        ca: String,
        /// What the verifier found.
        reason: String,
    },
    /// The certificate names another node than this one: peers dialing this node would refuse it.
    #[error("{cert} is a certificate for {names}, not for this node {node}; issue one with `lightpath ca issue --node {node}`")]
    OtherNode {
        /// The certificate file.
        cert: String,
        /// This node's id.
        node: NodeId,
        /// The names the certificate holds, comma separated.
        names: String,
    },
    /// The private key is not the certificate's.
    #[error("{key} is not the private key of the certificate in {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
    },
    /// The certificate is not valid yet or any more.
    #[error("{cert} is {when}")]
    OutsideValidity {
        /// The certificate file.
        cert: String,
        /// "expired since ..." or "not valid before ...".
        when: String,
    },
}

impl IdentityError {
    /// The config field naming the file to fix.
    pub fn field(&self) -> &'static str {
        match self {
            IdentityError::Unreadable { field, .. } => field,
            IdentityError::KeyMismatch { .. } => "tls.key",
            IdentityError::OtherCa { .. } | IdentityError::OtherNode { .. } | IdentityError::OutsideValidity { .. } => {
                "tls.cert"
            }
        }
    }
}

/// Checks that `files` can carry node `node` into the mesh at `now`: the certificate chains to the CA,
/// names `node` (the name peers verify), matches the key and is valid. Every problem found.
pub fn check_files(files: &TlsFiles, node: &NodeId, now: UnixTime) -> Vec<IdentityError> {
    let shown = |p: &Path| p.display().to_string();
    let (ca_path, cert_path, key_path) = (shown(&files.ca), shown(&files.cert), shown(&files.key));
    let unreadable = |field, path: &str, what: String| IdentityError::Unreadable { field, path: path.into(), what };
    let read = |field, path: &Path| {
        std::fs::read_to_string(path).map_err(|e| unreadable(field, &shown(path), format!("cannot read: {e}")))
    };
    let mut problems = Vec::new();
    let certs = |field, path: &str, text: &str| -> Result<Vec<CertificateDer<'static>>, IdentityError> {
        let certs = rustls_pemfile::certs(&mut text.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| unreadable(field, path, format!("bad PEM: {e}")))?;
        if certs.is_empty() {
            return Err(unreadable(field, path, "holds no certificate".into()));
        }
        Ok(certs)
    };
    let ca = read("tls.ca", &files.ca).and_then(|t| certs("tls.ca", &ca_path, &t));
    let chain = read("tls.cert", &files.cert).and_then(|t| certs("tls.cert", &cert_path, &t));
    let key = read("tls.key", &files.key).and_then(|t| {
        rustls_pemfile::private_key(&mut t.as_bytes())
            .map_err(|e| unreadable("tls.key", &key_path, format!("bad PEM: {e}")))?
            .ok_or_else(|| unreadable("tls.key", &key_path, "holds no private key".into()))
    });
    let (ca, chain, key) = match (ca, chain, key) {
        (Ok(ca), Ok(chain), Ok(key)) => (ca, chain, key),
        (ca, chain, key) => {
            problems.extend([ca.err(), chain.err(), key.err()].into_iter().flatten());
            return problems;
        }
    };
    let ee = match webpki::EndEntityCert::try_from(&chain[0]) {
        Ok(ee) => ee,
        Err(e) => {
            problems.push(unreadable("tls.cert", &cert_path, format!("the first certificate does not parse: {e}")));
            return problems;
        }
    };
    // The chain, with each usage the mesh puts it to: server (accepting) and client (dialing).
    let anchors: Vec<_> = ca.iter().filter_map(|c| webpki::anchor_from_trusted_cert(c).ok()).collect();
    for usage in [webpki::KeyUsage::server_auth(), webpki::KeyUsage::client_auth()] {
        let verified =
            ee.verify_for_usage(webpki::ALL_VERIFICATION_ALGS, &anchors, &chain[1..], now, usage, None, None);
        match verified {
            Ok(_) => {}
            Err(webpki::Error::CertExpired { not_after, .. }) => {
                let when = format!("expired since {}", http_date(not_after));
                problems.push(IdentityError::OutsideValidity { cert: cert_path.clone(), when });
                break;
            }
            Err(webpki::Error::CertNotValidYet { not_before, .. }) => {
                let when = format!("not valid before {}", http_date(not_before));
                problems.push(IdentityError::OutsideValidity { cert: cert_path.clone(), when });
                break;
            }
            Err(e) => {
                let reason = match e {
                    webpki::Error::UnknownIssuer => "signed by another CA (unknown issuer)".to_owned(),
                    // Every `lightpath ca init` CA has the same name; another one's signature does not verify.
                    webpki::Error::InvalidSignatureForPublicKey => {
                        "signed by another CA of the same name (bad signature)".to_owned()
                    }
                    e => e.to_string(),
                };
                problems.push(IdentityError::OtherCa { cert: cert_path.clone(), ca: ca_path.clone(), reason });
                break;
            }
        }
    }
    if peer_node_id(&chain[0], [node]).is_none() {
        let names = certificate_names(&chain[0]);
        let names = if names.is_empty() { "no node name".to_owned() } else { names.join(", ") };
        problems.push(IdentityError::OtherNode { cert: cert_path.clone(), node: node.clone(), names });
    }
    let provider = rustls::crypto::ring::default_provider();
    match rustls::sign::CertifiedKey::from_der(chain.clone(), key, &provider) {
        Ok(_) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            problems.push(IdentityError::KeyMismatch { cert: cert_path.clone(), key: key_path.clone() })
        }
        Err(e) => problems.push(unreadable("tls.key", &key_path, format!("not a usable private key: {e}"))),
    }
    problems
}

/// The DNS names a certificate holds (its subject alternative names), for messages.
pub fn certificate_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok(params) = CertificateParams::from_ca_cert_der(cert) else {
        return Vec::new();
    };
    params
        .subject_alt_names
        .iter()
        .filter_map(|san| match san {
            rcgen::SanType::DnsName(name) => Some(name.as_str().to_owned()),
            _ => None,
        })
        .collect()
}

fn http_date(t: UnixTime) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificate_names_its_node_only() {
        let ca = create_ca("test CA").unwrap();
        let a = NodeId::new("relay-a").unwrap();
        let b = NodeId::new("relay-b").unwrap();
        let files = issue(&ca, &a, 30).unwrap();
        let id = Identity::from_pem(&ca.cert_pem, &files.chain_pem, &files.key_pem).unwrap();
        assert_eq!(id.chain.len(), 2);
        assert_eq!(peer_node_id(&id.chain[0], [&b, &a]), Some(a.clone()));
        assert_eq!(peer_node_id(&id.chain[0], [&b]), None);
        id.server_config().unwrap();
        id.client_config().unwrap();
    }

    #[test]
    fn expiry_is_the_node_certificates_not_the_cas() {
        let ca = create_ca("test CA").unwrap();
        let files = issue(&ca, &NodeId::new("edge-1").unwrap(), 30).unwrap();
        let id = Identity::from_pem(&ca.cert_pem, &files.chain_pem, &files.key_pem).unwrap();
        let in_30_days = time::OffsetDateTime::now_utc().unix_timestamp() + 30 * 86_400;
        let not_after = id.not_after_unix().unwrap();
        assert!((not_after - in_30_days).abs() < 3_600, "{not_after} is not 30 days from now ({in_30_days})");
    }

    /// Writes the three files into `dir` and checks them for `node`.
    fn checked(dir: &Path, ca: &str, chain: &str, key: &str, node: &str) -> Vec<IdentityError> {
        for (name, pem) in [("ca.pem", ca), ("n.pem", chain), ("n.key", key)] {
            std::fs::write(dir.join(name), pem).unwrap();
        }
        let files = TlsFiles { ca: dir.join("ca.pem"), cert: dir.join("n.pem"), key: dir.join("n.key") };
        check_files(&files, &NodeId::new(node).unwrap(), UnixTime::now())
    }

    #[test]
    fn the_checks_find_each_wrong_file() {
        let dir = tempfile::tempdir().unwrap();
        let ca = create_ca("lightpath mesh CA").unwrap();
        let good = issue(&ca, &NodeId::new("edge-ap").unwrap(), 30).unwrap();
        assert_eq!(checked(dir.path(), &ca.cert_pem, &good.chain_pem, &good.key_pem, "edge-ap"), []);

        let other = issue(&ca, &NodeId::new("edge-us").unwrap(), 30).unwrap();
        let found = checked(dir.path(), &ca.cert_pem, &other.chain_pem, &other.key_pem, "edge-ap");
        assert!(matches!(&found[..], [IdentityError::OtherNode { names, .. }] if names == "edge-us"), "{found:?}");

        let found = checked(dir.path(), &ca.cert_pem, &good.chain_pem, &other.key_pem, "edge-ap");
        assert!(matches!(&found[..], [IdentityError::KeyMismatch { .. }]), "{found:?}");
        assert_eq!(found[0].field(), "tls.key");

        // Another CA, even one of the same name.
        let same_name = create_ca("lightpath mesh CA").unwrap();
        let foreign = issue(&same_name, &NodeId::new("edge-ap").unwrap(), 30).unwrap();
        let found = checked(dir.path(), &ca.cert_pem, &foreign.chain_pem, &foreign.key_pem, "edge-ap");
        assert!(matches!(&found[..], [IdentityError::OtherCa { .. }]), "{found:?}");
        assert!(found[0].to_string().contains("signed by another CA"), "{}", found[0]);

        let now = time::OffsetDateTime::now_utc();
        let old = issue_between(
            &ca,
            &NodeId::new("edge-ap").unwrap(),
            now - time::Duration::days(9),
            now - time::Duration::days(2),
        );
        let old = old.unwrap();
        let found = checked(dir.path(), &ca.cert_pem, &old.chain_pem, &old.key_pem, "edge-ap");
        assert!(matches!(&found[..], [IdentityError::OutsideValidity { .. }]), "{found:?}");
        assert!(found[0].to_string().contains("is expired since"), "{}", found[0]);

        let found = checked(dir.path(), "-----BEGIN CERTIFICATE-----\n", &good.chain_pem, "", "edge-ap");
        let fields: Vec<_> = found.iter().map(IdentityError::field).collect();
        assert_eq!(fields, ["tls.ca", "tls.key"], "{found:?}");
    }
}
