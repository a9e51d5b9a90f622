//! TLS termination for the HTTPS listener: the rustls server configuration (TLS 1.2 and
//! 1.3 only, rustls' default AEAD suites with forward secrecy, ALPN `http/1.1`, session
//! resumption by cache and by tickets whose keys rotate), the certificates it serves (see
//! [`store`]) and the handshake each accepted connection goes through (see [`handshake`]).
//! A reload prepares a new configuration beside the running one and swaps it in; each
//! handshake takes the one current when it starts.

mod handshake;
mod sni;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::version::{TLS12, TLS13};
use rustls::ServerConfig;
use rustls::SupportedProtocolVersion;

pub(crate) use handshake::accept;
use sni::SniResolver;
pub use store::{CertificateStore, Look, PreparedCertificates};

use crate::certificates::{self, CertificateError};
use crate::config::{TlsConfig, TlsVersion};

/// The only application protocol offered: HTTP/2 does not exist here yet, and a client
/// that offers only `h2` is refused in the handshake rather than misread after it.
const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// Why TLS could not be set up from a config.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    #[error("tls.client_ca: {0}")]
    ClientCa(String),
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// What a handshake needs, swapped whole by a reload.
#[derive(Debug)]
pub(crate) struct Active {
    pub(crate) server_config: Arc<ServerConfig>,
    pub(crate) handshake_timeout: Duration,
    /// The settings this was built from, to tell what a reload changes.
    settings: TlsConfig,
}

/// The HTTPS listener's TLS state, shared by its accept loops.
#[derive(Debug)]
pub struct TlsTerminator {
    active: ArcSwap<Active>,
    store: Arc<CertificateStore>,
}

/// A configuration checked and built by [`TlsTerminator::prepare`], not yet in use.
#[derive(Debug)]
pub struct PreparedTls {
    active: Active,
    certificates: PreparedCertificates,
}

impl TlsTerminator {
    pub fn new(config: &TlsConfig) -> Result<TlsTerminator, TlsError> {
        let store = Arc::new(CertificateStore::load(&config.certificates)?);
        let server_config = server_config(config, &store, None)?;
        Ok(TlsTerminator {
            active: ArcSwap::from_pointee(Active {
                server_config: Arc::new(server_config),
                handshake_timeout: config.handshake_timeout,
                settings: config.clone(),
            }),
            store,
        })
    }

    /// Build everything `config` needs beside what is running; fails without changing
    /// anything. Session caches and ticket keys carry over when their settings did not
    /// change, so a reload does not cost every client a full handshake.
    pub fn prepare(&self, config: &TlsConfig) -> Result<PreparedTls, TlsError> {
        let current = self.active.load();
        let certificates = self.store.prepare(&config.certificates)?;
        let server_config = server_config(config, &self.store, Some(&current))?;
        Ok(PreparedTls {
            active: Active {
                server_config: Arc::new(server_config),
                handshake_timeout: config.handshake_timeout,
                settings: config.clone(),
            },
            certificates,
        })
    }

    /// Use `prepared` from the next handshake on.
    pub fn commit(&self, prepared: PreparedTls) {
        self.store.commit(prepared.certificates);
        self.active.store(Arc::new(prepared.active));
    }

    pub fn store(&self) -> &Arc<CertificateStore> {
        &self.store
    }

    pub(crate) fn active(&self) -> Arc<Active> {
        self.active.load_full()
    }
}

/// The rustls configuration for `config`, choosing certificates from `store`'s table.
fn server_config(
    config: &TlsConfig,
    store: &CertificateStore,
    previous: Option<&Active>,
) -> Result<ServerConfig, TlsError> {
    let provider = certificates::crypto_provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions(config.min_version))?;
    let builder = match &config.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let roots = certificates::load_roots(path)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| TlsError::ClientCa(error.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server_config = builder.with_cert_resolver(Arc::new(SniResolver {
        table: store.table(),
    }));
    server_config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
    let carried = previous.map(|active| (&active.settings, &active.server_config));
    server_config.session_storage = match carried {
        Some((was, previous)) if was.session_cache_entries == config.session_cache_entries => {
            Arc::clone(&previous.session_storage)
        }
        _ if config.session_cache_entries == 0 => {
            Arc::new(rustls::server::NoServerSessionStorage {})
        }
        _ => ServerSessionMemoryCache::new(config.session_cache_entries),
    };
    match carried {
        Some((was, previous)) if was.session_tickets == config.session_tickets => {
            server_config.ticketer = Arc::clone(&previous.ticketer);
        }
        // Keys rotate every six hours; tickets under the previous key are still taken for
        // another six, so a client resumes within a day of its last visit at most.
        _ if config.session_tickets => {
            server_config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
        }
        // The builder's default produces no tickets.
        _ => {}
    }
    Ok(server_config)
}

/// TLS 1.3 always; TLS 1.2 unless `min_version` is 1.3.
fn versions(min_version: TlsVersion) -> &'static [&'static SupportedProtocolVersion] {
    static FROM_1_2: [&SupportedProtocolVersion; 2] = [&TLS13, &TLS12];
    static ONLY_1_3: [&SupportedProtocolVersion; 1] = [&TLS13];
    match min_version {
        TlsVersion::Tls12 => &FROM_1_2,
        TlsVersion::Tls13 => &ONLY_1_3,
    }
}
