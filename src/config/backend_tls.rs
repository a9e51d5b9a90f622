//! TLS to backends as configured: which certificate authorities a group trusts
//! (`tls_ca_file`, read and checked at load so `--check` catches a broken file) and which name
//! each TLS backend's certificate must carry. Plain data; the proxy builds the rustls client
//! configuration from it.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use super::raw::RawBackend;
use super::{io_reason, Validator};

/// Largest `tls_ca_file` read: a bundle of every public root is about 200 KiB, so this is
/// room for any real one while a wrong path (a log, a disk image) is refused before it is
/// read into memory.
const MAX_CA_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// The certificate authorities a group's TLS backends are verified against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsRoots {
    /// The operating system's trust store, read when the group is built.
    System,
    /// Only the CA certificates in `tls_ca_file`.
    File {
        path: PathBuf,
        certificates: Arc<[CertificateDer<'static>]>,
    },
}

/// What a TLS backend must prove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendTls {
    /// The name its certificate must be valid for (a DNS name, or an IP address for an IP
    /// SAN); also sent as SNI when it is a DNS name.
    pub server_name: ServerName<'static>,
}

impl Validator<'_> {
    /// The roots under `key` (`proxy.tls_ca_file`, `proxy.upstreams.NAME.tls_ca_file`), or
    /// `inherited` when the key is not set.
    pub(super) fn tls_roots(&self, key: &str, raw: Option<&str>, inherited: &TlsRoots) -> TlsRoots {
        let Some(file) = raw else {
            return inherited.clone();
        };
        let path = self.resolve(file);
        match read_ca_file(&path) {
            Ok(certificates) => TlsRoots::File {
                path,
                certificates: certificates.into(),
            },
            Err(reason) => {
                self.report(key, reason);
                // A stand-in: the config is refused anyway.
                TlsRoots::System
            }
        }
    }

    /// The TLS settings of the backend at `entry` (`proxy.backends[0]`), `None` when it
    /// speaks plain HTTP.
    pub(super) fn backend_tls(&self, entry: &str, backend: &RawBackend) -> Option<BackendTls> {
        if !backend.tls {
            if backend.tls_server_name.is_some() {
                // Without TLS the name would be silently ignored, and the operator would
                // believe the backend is verified.
                self.report(
                    &format!("{entry}.tls_server_name"),
                    "is set but tls is not: add `tls: true` to speak TLS to this backend",
                );
            }
            return None;
        }
        let (key, name) = match &backend.tls_server_name {
            Some(name) => (format!("{entry}.tls_server_name"), name.as_str()),
            // An address that is not host:port is reported on its own.
            None => (
                format!("{entry}.address"),
                address_host(&backend.address).unwrap_or("localhost"),
            ),
        };
        match server_name(name) {
            Some(server_name) => Some(BackendTls { server_name }),
            None => {
                self.report(
                    &key,
                    format!("{name:?} is not a DNS name or IP address a certificate can carry"),
                );
                None
            }
        }
    }
}

/// The host of `host:port` or `[v6]:port`, without brackets.
fn address_host(address: &str) -> Option<&str> {
    let (host, _port) = address.rsplit_once(':')?;
    Some(
        host.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host),
    )
}

/// `name` as a certificate name: an IP address (matched against IP SANs, RFC 6125 §1.7.2
/// leaves IPs out of SNI) or a DNS name.
fn server_name(name: &str) -> Option<ServerName<'static>> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Some(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(name.to_string()).ok()
}

/// The CA certificates in the PEM file at `path`, each checked to be usable as a trust
/// anchor; the reason in the operator's terms otherwise.
fn read_ca_file(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| io_reason(path, &e))?
        .len();
    if size > MAX_CA_FILE_BYTES {
        return Err(format!(
            "{} is {size} bytes; a CA file is limited to {MAX_CA_FILE_BYTES}",
            path.display()
        ));
    }
    let pem = std::fs::read(path).map_err(|e| io_reason(path, &e))?;
    parse_ca_pem(&pem).map_err(|reason| format!("{}: {reason}", path.display()))
}

/// The certificates of a PEM bundle; other sections (keys, CRLs) are skipped.
fn parse_ca_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("not a PEM file: {error}"))?;
    if certificates.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    for (index, certificate) in certificates.iter().enumerate() {
        if let Err(error) = rustls::RootCertStore::empty().add(certificate.clone()) {
            return Err(format!(
                "certificate {} is not a usable CA certificate: {error}",
                index + 1
            ));
        }
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_name_is_the_host_of_the_address() {
        assert_eq!(address_host("api.internal:443"), Some("api.internal"));
        assert_eq!(address_host("10.0.0.7:8443"), Some("10.0.0.7"));
        assert_eq!(address_host("[::1]:443"), Some("::1"));
        assert_eq!(address_host("no-port"), None);
    }

    #[test]
    fn an_ip_is_verified_against_an_ip_san_and_a_name_against_a_dns_name() {
        assert!(matches!(
            server_name("10.0.0.7"),
            Some(ServerName::IpAddress(_))
        ));
        assert!(matches!(server_name("::1"), Some(ServerName::IpAddress(_))));
        assert!(matches!(
            server_name("api.internal"),
            Some(ServerName::DnsName(_))
        ));
        assert_eq!(server_name("not a name"), None);
        assert_eq!(server_name(""), None);
    }

    #[test]
    fn a_ca_file_needs_at_least_one_parseable_certificate() {
        assert!(parse_ca_pem(b"")
            .unwrap_err()
            .contains("no PEM certificate"));
        assert!(parse_ca_pem(b"garbage, not PEM at all\n")
            .unwrap_err()
            .contains("no PEM certificate"));
        let broken = b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
        assert!(parse_ca_pem(broken).unwrap_err().contains("not a PEM file"));
        let not_der = b"-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
        assert!(parse_ca_pem(not_der)
            .unwrap_err()
            .contains("not a usable CA certificate"));
    }
}
