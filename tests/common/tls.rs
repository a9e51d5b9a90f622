//! TLS for the tests: a CA made at run time (nothing secret is committed), certificates it
//! issues written to a temporary directory, and rustls clients that trust it (or trust
//! anything, to see which certificate the server picked).

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
    StreamOwned, SupportedProtocolVersion,
};

use super::{RawClient, IO_TIMEOUT};

/// A client connection over TLS.
pub type TlsClient = RawClient<StreamOwned<ClientConnection, TcpStream>>;

/// A certificate and key on disk.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The leaf, as the server presents it.
    pub der: Vec<u8>,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A test CA and the directory its certificates are written to.
pub struct Pki {
    pub dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    pub ca_path: PathBuf,
}

impl Default for Pki {
    fn default() -> Pki {
        Pki::new("Sentinel test CA")
    }
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA");
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).expect("write CA");
        Pki { dir, ca, ca_path }
    }

    /// A certificate for `names`, valid from yesterday for a year, as `stem.pem`/`stem.key`.
    pub fn issue(&self, stem: &str, names: &[&str]) -> Issued {
        self.issue_until(
            stem,
            names,
            time::OffsetDateTime::now_utc() + time::Duration::days(365),
        )
    }

    /// A certificate for `names` valid until `not_after` (in the past: expired).
    pub fn issue_until(
        &self,
        stem: &str,
        names: &[&str],
        not_after: time::OffsetDateTime,
    ) -> Issued {
        let mut params = CertificateParams::new(
            names
                .iter()
                .map(|name| name.to_string())
                .collect::<Vec<_>>(),
        )
        .expect("params");
        params.not_before =
            not_after.min(time::OffsetDateTime::now_utc()) - time::Duration::days(30);
        params.not_after = not_after;
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        let issued = Issued {
            cert: self.dir.path().join(format!("{stem}.pem")),
            key: self.dir.path().join(format!("{stem}.key")),
            der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        std::fs::write(&issued.cert, &issued.cert_pem).expect("write cert");
        std::fs::write(&issued.key, &issued.key_pem).expect("write key");
        issued
    }

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).expect("CA root");
        roots
    }

    /// A client that trusts this CA, speaks `versions` and offers `h2` and `http/1.1`.
    pub fn client(&self, versions: &[&'static SupportedProtocolVersion]) -> Arc<ClientConfig> {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(self.roots())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// As [`Pki::client`], presenting `identity` as its client certificate.
    pub fn client_with_certificate(&self, identity: &Issued) -> Arc<ClientConfig> {
        let chain = vec![CertificateDer::from(identity.der.clone())];
        let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).expect("key");
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(self.roots())
            .with_client_auth_cert(chain, key)
            .expect("client certificate");
        Arc::new(config)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client that accepts any certificate: for seeing which one the server chose.
pub fn trusting_anything() -> Arc<ClientConfig> {
    let provider = provider();
    let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Connect to `addr` and complete the handshake as `name` (an IP address sends no SNI).
pub fn connect(addr: SocketAddr, name: &str, config: Arc<ClientConfig>) -> io::Result<TlsClient> {
    let server_name = ServerName::try_from(name.to_string()).expect("server name");
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
    tcp.set_write_timeout(Some(IO_TIMEOUT))?;
    tcp.set_nodelay(true)?;
    let connection = ClientConnection::new(config, server_name).map_err(io::Error::other)?;
    let mut stream = StreamOwned::new(connection, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(RawClient::over(stream))
}

/// The rustls error inside an I/O error from a handshake, if that is what it was.
pub fn tls_error(error: &io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

/// The leaf certificate the server presented.
pub fn presented(client: &TlsClient) -> Vec<u8> {
    client
        .stream
        .conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| leaf.to_vec())
        .expect("a certificate")
}

/// A `tls:` section on `listen` with these certificates (each with its server names),
/// plus `extra` lines (two-space indent).
pub fn tls_yaml(certificates: &[(&Issued, &[&str])], extra: &str) -> String {
    let mut yaml = String::from("tls:\n  listen_addr: \"127.0.0.1:0\"\n  certificates:\n");
    for (issued, names) in certificates {
        yaml.push_str(&format!(
            "    - cert: \"{}\"\n      key: \"{}\"\n      server_names: [{}]\n",
            issued.cert.display(),
            issued.key.display(),
            names
                .iter()
                .map(|name| format!("\"{name}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    yaml.push_str(extra);
    yaml
}
