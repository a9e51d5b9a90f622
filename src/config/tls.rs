//! The `tls` section: the HTTPS listener, its certificates (each pair read and checked
//! here, so a bad file fails `--check`, startup and reload alike, with its line) and the
//! protocol settings.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::raw::{RawCertificate, RawTls};
use super::Validator;
use crate::certificates::{self, CertificateError, Expiry, PairFile};
use crate::limits::CERTIFICATE_EXPIRY_WARNING;

/// The validated `tls` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The HTTPS listener; `server.listen_addr` stays plain HTTP.
    pub listen_addr: SocketAddr,
    /// The first is the default: served when the client sends no name or one no entry has.
    pub certificates: Vec<CertificateConfig>,
    /// The plain listener answers every request with a redirect to HTTPS.
    pub redirect_http: bool,
    /// The port redirects name; `None`: the port the HTTPS listener is bound to.
    pub redirect_port: Option<u16>,
    pub min_version: TlsVersion,
    pub handshake_timeout: Duration,
    /// Clients must present a certificate issued by one of these CAs.
    pub client_ca: Option<PathBuf>,
    /// Sessions kept for resumption by session ID; 0: none.
    pub session_cache_entries: usize,
    /// Resumption by ticket, with keys that rotate.
    pub session_tickets: bool,
    /// Each connection begins with a PROXY protocol header, read before the handshake.
    pub proxy_protocol: bool,
}

/// One certificate chain, its key, and the names it is chosen for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Lower case; exact names, or `*.` and a name (any one label in its place).
    pub server_names: Vec<String>,
}

/// The oldest protocol version a client may use (`tls.min_version`). Nothing older than
/// TLS 1.2 exists to choose: rustls implements neither SSL nor TLS 1.0/1.1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TlsVersion {
    #[default]
    Tls12,
    Tls13,
}

impl TlsVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        }
    }
}

/// `"1.2"` or `"1.3"`, quoted or not (unquoted, YAML reads a number).
impl<'de> Deserialize<'de> for TlsVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<TlsVersion, D::Error> {
        struct Version;

        impl Visitor<'_> for Version {
            type Value = TlsVersion;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"1.2\" or \"1.3\"")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<TlsVersion, E> {
                match value.trim() {
                    "1.2" => Ok(TlsVersion::Tls12),
                    "1.3" => Ok(TlsVersion::Tls13),
                    other => Err(E::custom(format_args!(
                        "{other:?} is not a TLS version Sentinel speaks (expected \"1.2\" or \"1.3\")"
                    ))),
                }
            }

            fn visit_f64<E: de::Error>(self, value: f64) -> Result<TlsVersion, E> {
                self.visit_str(&value.to_string())
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<TlsVersion, E> {
                self.visit_str(&value.to_string())
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<TlsVersion, E> {
                self.visit_str(&value.to_string())
            }
        }

        deserializer.deserialize_any(Version)
    }
}

impl Validator<'_> {
    pub(super) fn tls(
        &self,
        raw: &RawTls,
        plain: SocketAddr,
        admin: Option<SocketAddr>,
    ) -> TlsConfig {
        let clashes = |other: SocketAddr| other == raw.listen_addr && other.port() != 0;
        if clashes(plain) {
            self.report(
                "tls.listen_addr",
                "is server.listen_addr too: HTTPS needs a listener of its own",
            );
        }
        if admin.is_some_and(clashes) {
            self.report("tls.listen_addr", "is admin.listen_addr too");
        }
        if raw.redirect_port == Some(0) {
            self.report("tls.redirect_port", "must be a port between 1 and 65535");
        }
        if raw.certificates.is_empty() {
            self.report(
                "tls.certificates",
                "needs at least one certificate (the first is the default)",
            );
        }
        let mut claimed: HashMap<String, usize> = HashMap::new();
        let certificates = raw
            .certificates
            .iter()
            .enumerate()
            .map(|(index, entry)| self.certificate(index, entry, &mut claimed))
            .collect();
        let client_ca = raw.client_ca.as_deref().map(|ca| {
            let path = self.resolve(ca);
            if let Err(error) = certificates::load_roots(&path) {
                self.report("tls.client_ca", error.to_string());
            }
            path
        });
        TlsConfig {
            listen_addr: raw.listen_addr,
            certificates,
            redirect_http: raw.redirect_http,
            redirect_port: raw.redirect_port,
            min_version: raw.min_version,
            handshake_timeout: self
                .positive_millis("tls.handshake_timeout_ms", raw.handshake_timeout_ms),
            client_ca,
            session_cache_entries: raw.session_cache_entries,
            session_tickets: raw.session_tickets,
            proxy_protocol: raw.proxy_protocol,
        }
    }

    /// Entry `index`: its pair read and matched, its expiry judged, its names checked and
    /// claimed (a name belongs to one entry only).
    fn certificate(
        &self,
        index: usize,
        raw: &RawCertificate,
        claimed: &mut HashMap<String, usize>,
    ) -> CertificateConfig {
        let entry = format!("tls.certificates[{index}]");
        let cert = self.resolve(&raw.cert);
        let key = self.resolve(&raw.key);
        match certificates::load_pair(&cert, &key) {
            Ok(pair) => self.judge_expiry(
                &entry,
                &cert,
                pair.validity
                    .expiry(SystemTime::now(), CERTIFICATE_EXPIRY_WARNING),
                pair.validity.not_after,
            ),
            Err(error) => self.report(&pair_key(&entry, &error), error.to_string()),
        }
        let mut server_names = Vec::with_capacity(raw.server_names.len());
        for name in &raw.server_names {
            let key = format!("{entry}.server_names");
            let name = name.trim().to_ascii_lowercase();
            if let Err(reason) = check_server_name(&name) {
                self.report(&key, format!("{name:?}: {reason}"));
                continue;
            }
            match claimed.get(&name) {
                Some(first) if *first == index => {
                    self.report(&key, format!("{name:?} is listed twice"));
                }
                Some(first) => self.report(
                    &key,
                    format!("{name:?} is already served by tls.certificates[{first}]"),
                ),
                None => {
                    claimed.insert(name.clone(), index);
                }
            }
            server_names.push(name);
        }
        if index > 0 && raw.server_names.is_empty() {
            self.report(
                &entry,
                "is never chosen: give it server_names, or list it first to make it the default",
            );
        }
        CertificateConfig {
            cert,
            key,
            server_names,
        }
    }

    /// An expired chain is an error for `--check` and a warning when serving (it is still
    /// better than no HTTPS listener); one close to its end is a warning.
    fn judge_expiry(
        &self,
        entry: &str,
        cert: &std::path::Path,
        expiry: Expiry,
        not_after: SystemTime,
    ) {
        let key = format!("{entry}.cert");
        let date = httpdate::fmt_http_date(not_after);
        let file = cert.display();
        match expiry {
            Expiry::Valid => {}
            Expiry::ExpiresSoon { left } => self.warn(
                &key,
                format!("{file} expires in {} ({date})", in_days(left)),
            ),
            Expiry::NotYetValid => {
                self.warn(&key, format!("{file} is not valid yet"));
            }
            Expiry::Expired { ago } => {
                let reason = format!("{file} expired {} ago ({date})", in_days(ago));
                if self.strict_expiry {
                    self.report(&key, reason);
                } else {
                    self.warn(&key, reason);
                }
            }
        }
    }
}

/// `tls.certificates[i].cert` or `.key`, whichever file `error` is about.
fn pair_key(entry: &str, error: &CertificateError) -> String {
    match error.file() {
        PairFile::Cert => format!("{entry}.cert"),
        PairFile::Key => format!("{entry}.key"),
    }
}

/// `3 days`, `1 day`, `5 hours` for less than a day.
fn in_days(span: Duration) -> String {
    let hours = span.as_secs() / 3600;
    match hours / 24 {
        0 if hours == 1 => "1 hour".into(),
        0 => format!("{hours} hours"),
        1 => "1 day".into(),
        days => format!("{days} days"),
    }
}

/// A name a client can send in SNI (RFC 6066 §3): a DNS name, or `*.` and a DNS name.
fn check_server_name(name: &str) -> Result<(), &'static str> {
    let base = name.strip_prefix("*.").unwrap_or(name);
    if base.contains('*') {
        return Err("a wildcard stands for the whole first label only (*.example.com)");
    }
    if base.parse::<std::net::IpAddr>().is_ok() {
        return Err("SNI never carries an IP address: a client connecting by address gets the default certificate");
    }
    match rustls_pki_types::DnsName::try_from(base) {
        Ok(_) => Ok(()),
        Err(_) => Err("not a DNS name"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_are_dns_names_or_one_leading_wildcard() {
        for good in ["example.com", "*.example.com", "localhost", "a-b.c"] {
            assert_eq!(check_server_name(good), Ok(()), "{good}");
        }
        for bad in [
            "*",
            "*.*.example.com",
            "w*.example.com",
            "127.0.0.1",
            "a b",
            "",
            "ex_ample..com",
        ] {
            assert!(check_server_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn spans_read_in_days_or_hours() {
        assert_eq!(in_days(Duration::from_secs(3 * 86_400 + 5)), "3 days");
        assert_eq!(in_days(Duration::from_secs(86_400)), "1 day");
        assert_eq!(in_days(Duration::from_secs(7200)), "2 hours");
        assert_eq!(in_days(Duration::from_secs(3600)), "1 hour");
    }
}
