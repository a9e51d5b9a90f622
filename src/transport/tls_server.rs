//! A client connection that completed a TLS handshake with us: the same requests as over
//! plain TCP, but the bytes on the socket are records, so no zero-copy path applies
//! (`sendfile` and `splice` would send plaintext past the encryption) and readiness of the
//! socket says nothing about readiness of the plaintext (rustls may hold a whole record).

use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::Transport;
use crate::http::scheme::Scheme;

impl Transport for TlsStream<TcpStream> {
    fn scheme(&self) -> Scheme {
        Scheme::Https
    }
}
