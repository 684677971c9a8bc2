//! HTTPS for viewers: the certificate an edge presents, read from PEM files and read again on SIGHUP.
//!
//! The edge's TLS listener ([`crate::http::serve_tls`]) asks [`Certificate`] for the certificate at each
//! handshake, so one that an operator replaced (a renewal) and signalled is served to the next connection,
//! while connections already open keep the session they made. A replacement that does not load (a key
//! that does not match, a half-written file) is refused with a log line and the old certificate stays.
//! ALPN offers HTTP/2 then HTTP/1.1.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Reads a certificate chain and its private key, and checks that they belong together.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>> {
    let chain_pem = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
    let key_pem = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
    let chain = rustls_pemfile::certs(&mut &chain_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not PEM certificates", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{}: no certificate in it", cert.display());
    let key_der = rustls_pemfile::private_key(&mut &key_pem[..])
        .with_context(|| format!("{}: not a PEM private key", key.display()))?
        .with_context(|| format!("{}: no private key in it", key.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key_der, &provider)
        .with_context(|| format!("{} and {} do not belong together", cert.display(), key.display()))?;
    Ok(Arc::new(certified))
}

/// The certificate the edge serves now, and where to read it again.
#[derive(Debug)]
pub struct Certificate {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificate {
    /// Reads the files.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>> {
        let current = RwLock::new(load(cert, key)?);
        Ok(Arc::new(Self { cert: cert.to_owned(), key: key.to_owned(), current }))
    }

    /// Reads the files again; on failure the certificate in use stays.
    pub fn reload(&self) -> Result<()> {
        let fresh = load(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// A rustls server config that takes its certificate from `self` at each handshake, with ALPN `h2`
    /// and `http/1.1`.
    pub fn server_config(self: &Arc<Self>) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }

    /// Reloads on every SIGHUP for as long as the task runs; `node` labels the log lines.
    pub async fn reload_on_hangup(self: Arc<Self>, node: String) {
        let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%node, error = %e, "cannot watch SIGHUP; the viewer certificate will not reload");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            match self.reload() {
                Ok(()) => tracing::info!(%node, cert = %self.cert.display(), "SIGHUP: viewer certificate reloaded"),
                Err(e) => {
                    tracing::error!(%node, error = %format!("{e:#}"), "SIGHUP: viewer certificate not reloaded; keeping the old one")
                }
            }
        }
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}
