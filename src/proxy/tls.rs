//! TLS to backends: one rustls client configuration per upstream group (its trust roots, ALPN
//! `http/1.1`, rustls' in-memory session cache so reconnects resume), the handshake of one
//! backend connection, and why a handshake failed, typed so callers never read messages.

use std::io;
use std::sync::Arc;

use rustls::client::ClientConfig;
use rustls::RootCertStore;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::TlsRoots;

/// The one protocol offered by ALPN: a backend that also speaks h2 must not pick it, since
/// what we send is HTTP/1.1.
const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// A group's client configuration and the roots it was built from, so that a reload can
/// tell whether it still fits (and keep it, with its session cache).
#[derive(Debug)]
pub struct GroupTls {
    roots: TlsRoots,
    /// `Err` only if rustls refused the provider's defaults: logged once when built, and
    /// then every handshake of the group fails with it.
    client: Result<Arc<ClientConfig>, rustls::Error>,
}

impl GroupTls {
    /// The configuration for `roots`: `previous`'s when it was built from the same roots,
    /// a new one otherwise. `group` names the group in logs.
    pub fn carried_over(
        roots: &TlsRoots,
        previous: Option<&Arc<GroupTls>>,
        group: &str,
    ) -> Arc<GroupTls> {
        if let Some(previous) = previous.filter(|p| p.roots == *roots) {
            return Arc::clone(previous);
        }
        let client = client_config(root_store(roots, group));
        if let Err(error) = &client {
            tracing::error!(upstream = %group, %error, "cannot build the TLS client configuration: TLS backends of this group are unreachable");
        }
        Arc::new(GroupTls {
            roots: roots.clone(),
            client,
        })
    }
}

/// The client side of rustls with its defaults: TLS 1.2 and 1.3, AEAD suites with forward
/// secrecy only, resumption through an in-memory cache of 256 sessions. The provider is
/// named rather than taken from the process default, which panics when a build enables two.
fn client_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
    Ok(Arc::new(config))
}

fn root_store(roots: &TlsRoots, group: &str) -> RootCertStore {
    match roots {
        TlsRoots::File { certificates, .. } => {
            let mut store = RootCertStore::empty();
            // Each was checked to be a usable trust anchor when the config was loaded.
            store.add_parsable_certificates(certificates.iter().cloned());
            store
        }
        TlsRoots::System => system_store(group),
    }
}

/// The operating system's trust store (`SSL_CERT_FILE`/`SSL_CERT_DIR` when set, else the
/// distribution's bundle). Unreadable entries are skipped with a warning: one bad file in a
/// certificate directory must not take every TLS backend down.
fn system_store(group: &str) -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(upstream = %group, %error, "cannot read part of the system's CA certificates");
    }
    let mut store = RootCertStore::empty();
    let (_, ignored) = store.add_parsable_certificates(found.certs);
    if ignored > 0 {
        tracing::debug!(upstream = %group, ignored, "system CA certificates rustls cannot use");
    }
    if store.is_empty() {
        tracing::warn!(upstream = %group, "the system trust store holds no CA certificate: TLS backends of this group will be refused until it does or the group sets tls_ca_file");
    }
    store
}

/// What a backend's connections need to speak TLS: its group's configuration and the name
/// its certificate must carry.
#[derive(Debug, Clone)]
pub struct TlsTarget {
    group: Arc<GroupTls>,
    server_name: ServerName<'static>,
}

impl TlsTarget {
    pub fn new(group: &Arc<GroupTls>, server_name: ServerName<'static>) -> TlsTarget {
        TlsTarget {
            group: Arc::clone(group),
            server_name,
        }
    }

    /// Whether connections made for `other` could serve this target: the same client
    /// configuration (the same roots) and the same name. A pooled connection was verified
    /// against both.
    pub fn is_same(&self, other: &TlsTarget) -> bool {
        Arc::ptr_eq(&self.group, &other.group) && self.server_name == other.server_name
    }

    /// TLS over `tcp`: the handshake, with the certificate verified against the group's
    /// roots and `server_name`. No deadline of its own: the caller's connect deadline covers
    /// it.
    pub async fn handshake(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>, TlsFailure> {
        let config = match &self.group.client {
            Ok(config) => Arc::clone(config),
            Err(error) => return Err(TlsFailure::Setup(error.clone())),
        };
        TlsConnector::from(config)
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(TlsFailure::from)
    }
}

/// Why a TLS handshake with a backend failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsFailure {
    /// The backend's certificate did not verify: unknown issuer (self-signed, another CA),
    /// not valid for the server name, expired or not yet valid, revoked, malformed.
    #[error("certificate refused: {0}")]
    Certificate(rustls::CertificateError),
    /// The handshake broke down otherwise: a fatal alert, no common version or suite, or
    /// bytes that are not TLS at all (a backend that speaks plain HTTP).
    #[error("handshake failed: {0}")]
    Protocol(rustls::Error),
    /// The connection closed or failed in the middle of the handshake.
    #[error("connection lost during the handshake: {0}")]
    Io(io::Error),
    /// The group has no client configuration (see [`GroupTls::carried_over`]).
    #[error("no client configuration: {0}")]
    Setup(rustls::Error),
}

impl TlsFailure {
    /// Whether the certificate was refused, as opposed to the handshake failing.
    pub fn is_certificate(&self) -> bool {
        matches!(self, TlsFailure::Certificate(_))
    }
}

/// tokio-rustls reports rustls' own errors inside `io::Error`: taken out by type.
impl From<io::Error> for TlsFailure {
    fn from(error: io::Error) -> TlsFailure {
        match error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(rustls::Error::InvalidCertificate(refused)) => {
                TlsFailure::Certificate(refused.clone())
            }
            Some(other) => TlsFailure::Protocol(other.clone()),
            None => TlsFailure::Io(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_errors_are_told_apart_by_type() {
        let wrapped = |error: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, error);
        let refused = TlsFailure::from(wrapped(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        )));
        assert!(refused.is_certificate(), "{refused:?}");
        assert_eq!(refused.to_string(), "certificate refused: UnknownIssuer");
        let not_tls = TlsFailure::from(wrapped(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        )));
        assert!(matches!(not_tls, TlsFailure::Protocol(_)), "{not_tls:?}");
        let closed = TlsFailure::from(io::Error::from(io::ErrorKind::UnexpectedEof));
        assert!(matches!(closed, TlsFailure::Io(_)), "{closed:?}");
    }

    #[test]
    fn a_group_keeps_its_configuration_while_its_roots_are_the_same() {
        let roots = TlsRoots::File {
            path: "ca.pem".into(),
            certificates: Arc::from(Vec::new()),
        };
        let first = GroupTls::carried_over(&roots, None, "g");
        assert!(first.client.is_ok());
        let again = GroupTls::carried_over(&roots, Some(&first), "g");
        assert!(Arc::ptr_eq(&first, &again), "the session cache survives");
        let other = TlsRoots::File {
            path: "other.pem".into(),
            certificates: Arc::from(Vec::new()),
        };
        let rebuilt = GroupTls::carried_over(&other, Some(&first), "g");
        assert!(!Arc::ptr_eq(&first, &rebuilt));
        let name = ServerName::try_from("backend.test").unwrap();
        let a = TlsTarget::new(&first, name.clone());
        assert!(a.is_same(&TlsTarget::new(&again, name.clone())));
        assert!(!a.is_same(&TlsTarget::new(&rebuilt, name)));
        let renamed = ServerName::try_from("other.test").unwrap();
        assert!(!a.is_same(&TlsTarget::new(&first, renamed)));
    }
}
