//! Certificate chains and private keys from PEM files: parsed, checked to belong together,
//! and dated. The one reader of these files, for config validation (every load and
//! `--check`) and for the TLS listener's certificate store (startup and hot reload), so a
//! pair is judged the same way wherever it is read.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, RootCertStore};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::limits::MAX_PEM_FILE_BYTES;

/// The cryptography every TLS object of the process uses: rustls' default provider,
/// aws-lc-rs (ADR 0009). Named here once, so no code path depends on a process-wide default
/// being installed.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())))
}

/// Why a certificate or key file cannot be served. Each names the file at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error("{}: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("{} is {size} bytes; certificate and key files are limited to {MAX_PEM_FILE_BYTES}", path.display())]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{}: not valid PEM: {reason}", path.display())]
    BadPem { path: PathBuf, reason: String },
    #[error("{}: no certificate in it (expected a PEM \"BEGIN CERTIFICATE\" block)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: the certificate cannot be parsed: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{}: no private key in it (expected a PKCS#8, PKCS#1 or SEC1 PEM block)", path.display())]
    NoKey { path: PathBuf },
    #[error("{}: the private key cannot be used: {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("{} does not belong to the certificate in {} (their public keys differ)", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
}

/// Which file of a pair an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairFile {
    Cert,
    Key,
}

impl CertificateError {
    /// The file to fix. A mismatch names the key: the certificate is what clients check the
    /// name against, so it is the key that is the stranger.
    pub fn file(&self) -> PairFile {
        match self {
            CertificateError::NoKey { .. }
            | CertificateError::BadKey { .. }
            | CertificateError::KeyMismatch { .. } => PairFile::Key,
            CertificateError::Unreadable { .. }
            | CertificateError::TooLarge { .. }
            | CertificateError::BadPem { .. }
            | CertificateError::NoCertificate { .. }
            | CertificateError::BadCertificate { .. } => PairFile::Cert,
        }
    }

    /// The path of the file at fault.
    pub fn path(&self) -> &Path {
        match self {
            CertificateError::Unreadable { path, .. }
            | CertificateError::TooLarge { path, .. }
            | CertificateError::BadPem { path, .. }
            | CertificateError::NoCertificate { path }
            | CertificateError::BadCertificate { path, .. }
            | CertificateError::NoKey { path }
            | CertificateError::BadKey { path, .. } => path,
            CertificateError::KeyMismatch { key, .. } => key,
        }
    }
}

/// A certificate chain with the key that signs for it, ready to hand to rustls.
#[derive(Debug, Clone)]
pub struct CertificatePair {
    pub certified: Arc<CertifiedKey>,
    pub validity: Validity,
}

/// When a chain may be served: from its leaf's `notBefore` until the earliest `notAfter` in
/// it (an expired intermediate fails clients as surely as an expired leaf).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// Where a chain stands on its validity dates at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Valid,
    /// Valid, but for less than the warning window.
    ExpiresSoon {
        left: Duration,
    },
    Expired {
        ago: Duration,
    },
    NotYetValid,
}

impl Validity {
    pub fn expiry(&self, now: SystemTime, warn_within: Duration) -> Expiry {
        if now < self.not_before {
            return Expiry::NotYetValid;
        }
        match self.not_after.duration_since(now) {
            Ok(left) if left < warn_within => Expiry::ExpiresSoon { left },
            Ok(_) => Expiry::Valid,
            Err(past) => Expiry::Expired {
                ago: past.duration(),
            },
        }
    }
}

/// Read `path` whole, refusing files larger than any certificate chain or key.
pub fn read_pem_file(path: &Path) -> Result<Vec<u8>, CertificateError> {
    let unreadable = |error: std::io::Error| CertificateError::Unreadable {
        path: path.to_path_buf(),
        reason: io_reason(&error),
    };
    let size = std::fs::metadata(path).map_err(unreadable)?.len();
    if size > MAX_PEM_FILE_BYTES {
        return Err(CertificateError::TooLarge {
            path: path.to_path_buf(),
            size,
        });
    }
    std::fs::read(path).map_err(unreadable)
}

/// Read, parse and match the pair in `cert_path` and `key_path`.
pub fn load_pair(cert_path: &Path, key_path: &Path) -> Result<CertificatePair, CertificateError> {
    let cert_pem = read_pem_file(cert_path)?;
    let key_pem = read_pem_file(key_path)?;
    parse_pair(cert_path, &cert_pem, key_path, &key_pem)
}

/// Parse a PEM chain (leaf first) and a PEM key (PKCS#8, PKCS#1 or SEC1), and check that
/// the key is the leaf's: a mismatched pair would fail every handshake.
pub fn parse_pair(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<CertificatePair, CertificateError> {
    let chain = parse_chain(cert_path, cert_pem)?;
    let validity = chain_validity(cert_path, &chain)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|error| match error {
        pem::Error::NoItemsFound => CertificateError::NoKey {
            path: key_path.to_path_buf(),
        },
        other => CertificateError::BadPem {
            path: key_path.to_path_buf(),
            reason: pem_reason(&other),
        },
    })?;
    let signing_key = crypto_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|error| CertificateError::BadKey {
            path: key_path.to_path_buf(),
            reason: error.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(CertificatePair {
            certified: Arc::new(certified),
            validity,
        }),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(CertificateError::KeyMismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            })
        }
        // A key whose public half the provider cannot tell: serving it unchecked would turn
        // a mismatch into handshake failures, so it is refused.
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {
            Err(CertificateError::BadKey {
                path: key_path.to_path_buf(),
                reason: "cannot tell whether it belongs to the certificate".into(),
            })
        }
        Err(error) => Err(CertificateError::BadCertificate {
            path: cert_path.to_path_buf(),
            reason: error.to_string(),
        }),
    }
}

/// The trust anchors in a PEM file of CA certificates (`tls.client_ca`).
pub fn load_roots(path: &Path) -> Result<RootCertStore, CertificateError> {
    let pem = read_pem_file(path)?;
    let chain = parse_chain(path, &pem)?;
    let mut roots = RootCertStore::empty();
    for cert in chain {
        roots
            .add(cert)
            .map_err(|error| CertificateError::BadCertificate {
                path: path.to_path_buf(),
                reason: error.to_string(),
            })?;
    }
    Ok(roots)
}

/// Every certificate in `pem`, in file order; at least one.
fn parse_chain(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertificateError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| CertificateError::BadPem {
            path: path.to_path_buf(),
            reason: pem_reason(&error),
        })?;
    if chain.is_empty() {
        return Err(CertificateError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

fn chain_validity(
    path: &Path,
    chain: &[CertificateDer<'static>],
) -> Result<Validity, CertificateError> {
    let mut validity: Option<Validity> = None;
    for der in chain {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|error| {
            CertificateError::BadCertificate {
                path: path.to_path_buf(),
                reason: error.to_string(),
            }
        })?;
        let dates = cert.validity();
        let not_after = unix_time(dates.not_after.timestamp());
        validity = Some(match validity {
            None => Validity {
                not_before: unix_time(dates.not_before.timestamp()),
                not_after,
            },
            Some(leaf) => Validity {
                not_after: leaf.not_after.min(not_after),
                ..leaf
            },
        });
    }
    validity.ok_or_else(|| CertificateError::NoCertificate {
        path: path.to_path_buf(),
    })
}

fn unix_time(seconds: i64) -> SystemTime {
    let offset = Duration::from_secs(seconds.unsigned_abs());
    if seconds >= 0 {
        SystemTime::UNIX_EPOCH
            .checked_add(offset)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    } else {
        SystemTime::UNIX_EPOCH
            .checked_sub(offset)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

/// The PEM library's error in words (its own message prints bytes as numbers).
fn pem_reason(error: &pem::Error) -> String {
    match error {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "a block is not closed (no -----END {}----- line)",
            String::from_utf8_lossy(end_marker).trim()
        ),
        pem::Error::IllegalSectionStart { line } => format!(
            "malformed BEGIN line {:?}",
            String::from_utf8_lossy(line).trim()
        ),
        pem::Error::Base64Decode(reason) => format!("bad base64 ({reason})"),
        other => other.to_string(),
    }
}

fn io_reason(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "does not exist".into(),
        std::io::ErrorKind::PermissionDenied => "cannot be read (permission denied)".into(),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Issued {
        cert_pem: String,
        key_pem: String,
    }

    fn issue(names: &[&str]) -> Issued {
        let key = rcgen::KeyPair::generate().expect("key");
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        let cert = params.self_signed(&key).expect("cert");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn parse(cert: &str, key: &str) -> Result<CertificatePair, CertificateError> {
        parse_pair(
            Path::new("site.pem"),
            cert.as_bytes(),
            Path::new("site.key"),
            key.as_bytes(),
        )
    }

    #[test]
    fn a_matching_pair_is_accepted_and_dated() {
        let issued = issue(&["example.com"]);
        let pair = parse(&issued.cert_pem, &issued.key_pem).expect("pair");
        assert_eq!(pair.certified.cert.len(), 1);
        assert!(pair.validity.not_before < pair.validity.not_after);
    }

    #[test]
    fn a_key_of_another_certificate_is_a_mismatch_named_after_the_key() {
        let (one, other) = (issue(&["a.test"]), issue(&["b.test"]));
        let error = parse(&one.cert_pem, &other.key_pem).unwrap_err();
        assert!(
            matches!(error, CertificateError::KeyMismatch { .. }),
            "{error}"
        );
        assert_eq!(error.file(), PairFile::Key);
        assert!(
            error.to_string().contains("site.key does not belong"),
            "{error}"
        );
    }

    #[test]
    fn files_without_the_expected_blocks_say_which_block_is_missing() {
        let issued = issue(&["a.test"]);
        let error = parse(&issued.key_pem, &issued.key_pem).unwrap_err();
        assert!(
            matches!(error, CertificateError::NoCertificate { .. }),
            "{error}"
        );
        let error = parse(&issued.cert_pem, &issued.cert_pem).unwrap_err();
        assert!(matches!(error, CertificateError::NoKey { .. }), "{error}");
        let cut = &issued.cert_pem[..issued.cert_pem.len() / 2];
        let error = parse(cut, &issued.key_pem).unwrap_err();
        assert!(matches!(error, CertificateError::BadPem { .. }), "{error}");
        assert!(error.to_string().contains("END CERTIFICATE"), "{error}");
    }

    #[test]
    fn garbage_inside_a_certificate_block_is_refused_not_served() {
        let issued = issue(&["a.test"]);
        let bogus = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let error = parse(bogus, &issued.key_pem).unwrap_err();
        assert!(
            matches!(error, CertificateError::BadCertificate { .. }),
            "{error}"
        );
    }

    #[test]
    fn expiry_is_valid_soon_or_expired_against_the_window() {
        let day = Duration::from_secs(86_400);
        let now = SystemTime::UNIX_EPOCH + 1000 * day;
        let validity = |after: SystemTime| Validity {
            not_before: SystemTime::UNIX_EPOCH,
            not_after: after,
        };
        let window = 14 * day;
        assert_eq!(validity(now + 30 * day).expiry(now, window), Expiry::Valid);
        assert_eq!(
            validity(now + 3 * day).expiry(now, window),
            Expiry::ExpiresSoon { left: 3 * day }
        );
        assert_eq!(
            validity(now - day).expiry(now, window),
            Expiry::Expired { ago: day }
        );
        let future = Validity {
            not_before: now + day,
            not_after: now + 90 * day,
        };
        assert_eq!(future.expiry(now, window), Expiry::NotYetValid);
    }
}
