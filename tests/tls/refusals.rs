//! Versions and cipher suites that rustls clients cannot offer: hand-made ClientHellos, and
//! `openssl s_client`. The server must refuse each with its own alert.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use super::common::tls::Pki;
use super::common::IO_TIMEOUT;
use super::{https, tls_server};

/// A ClientHello record offering `version` and `suites`, with the extensions a TLS 1.2
/// client sends (so that what is refused is the version or the suites, not a missing
/// extension), and no `supported_versions` (so `version` is all it offers).
pub(super) fn client_hello(version: u16, suites: &[u16], extensions: bool) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&version.to_be_bytes());
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for suite in suites {
        body.extend_from_slice(&suite.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null only
    if extensions {
        let mut ext = Vec::new();
        let mut add = |kind: u16, data: &[u8]| {
            ext.extend_from_slice(&kind.to_be_bytes());
            ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
            ext.extend_from_slice(data);
        };
        // server_name: localhost
        add(
            0x0000,
            &[
                0, 12, 0, 0, 9, b'l', b'o', b'c', b'a', b'l', b'h', b'o', b's', b't',
            ],
        );
        // supported_groups: x25519, secp256r1
        add(0x000a, &[0, 4, 0x00, 0x1d, 0x00, 0x17]);
        // ec_point_formats: uncompressed
        add(0x000b, &[1, 0]);
        // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256
        add(0x000d, &[0, 6, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
    }
    let mut handshake = vec![1]; // client_hello
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16];
    // Record versions above TLS 1.0 confuse some servers; clients write 0x0301 or their own.
    record.extend_from_slice(&version.min(0x0301).to_be_bytes());
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// What the server answered a raw ClientHello with.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// An alert record, by its description code.
    Alert(u8),
    ServerHello,
    Other(Vec<u8>),
}

fn send_hello(addr: SocketAddr, hello: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.write_all(hello).expect("send hello");
    let mut header = [0u8; 5];
    if stream.read_exact(&mut header).is_err() {
        return Answer::Other(Vec::new());
    }
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).expect("record body");
    match (header[0], body.as_slice()) {
        (0x15, [_level, description, ..]) => Answer::Alert(*description),
        (0x16, [2, ..]) => Answer::ServerHello,
        _ => Answer::Other(header.iter().chain(&body).copied().collect()),
    }
}

/// TLS alert codes (RFC 8446 §6).
const HANDSHAKE_FAILURE: u8 = 40;
const PROTOCOL_VERSION: u8 = 70;

/// A suite every TLS 1.2 client offers and the server (ECDSA P-256 certificate) takes.
const ECDHE_ECDSA_AES128_GCM: u16 = 0xc02b;

#[test]
fn ssl_3_tls_1_0_and_tls_1_1_hellos_are_refused_with_a_protocol_version_alert() {
    let pki = Pki::default();
    let site = pki.issue("site", &["localhost"]);
    let server = tls_server(&[(&site, &["localhost"])], "", "");
    let suites = [ECDHE_ECDSA_AES128_GCM, 0xc009, 0xc013, 0x002f];
    // The same hello as TLS 1.2 is served: only the version is refused.
    assert_eq!(
        send_hello(https(&server), &client_hello(0x0303, &suites, true)),
        Answer::ServerHello
    );
    for (name, version) in [
        ("SSL 3.0", 0x0300),
        ("TLS 1.0", 0x0301),
        ("TLS 1.1", 0x0302),
    ] {
        assert_eq!(
            send_hello(https(&server), &client_hello(version, &suites, true)),
            Answer::Alert(PROTOCOL_VERSION),
            "{name}"
        );
    }
}

#[test]
fn weak_cipher_suites_are_refused_with_a_handshake_failure_alert() {
    let pki = Pki::default();
    let site = pki.issue("site", &["localhost"]);
    let server = tls_server(&[(&site, &["localhost"])], "", "");
    assert_eq!(
        send_hello(
            https(&server),
            &client_hello(0x0303, &[ECDHE_ECDSA_AES128_GCM], true)
        ),
        Answer::ServerHello,
        "the control hello, with one good suite"
    );
    let weak: [(&str, &[u16]); 7] = [
        ("RC4", &[0x0005, 0xc007, 0xc011]),
        ("3DES", &[0x000a, 0xc008, 0xc012]),
        ("NULL", &[0x003b, 0x0002, 0xc006]),
        ("EXPORT", &[0x0003, 0x0008, 0x0014]),
        ("anonymous", &[0x00a6, 0x0034, 0xc018]),
        (
            "static RSA key exchange (no forward secrecy)",
            &[0x009c, 0x002f],
        ),
        ("CBC (not AEAD)", &[0xc009, 0xc013, 0xc023]),
    ];
    for (name, suites) in weak {
        assert_eq!(
            send_hello(https(&server), &client_hello(0x0303, suites, true)),
            Answer::Alert(HANDSHAKE_FAILURE),
            "{name}"
        );
    }
}

/// `openssl s_client` against the server with `args`; its combined output. Missing
/// `openssl` fails the test: `.ci/run` installs it.
fn s_client(addr: SocketAddr, args: &[&str]) -> String {
    let output = std::process::Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .args(["-servername", "localhost"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run openssl ({error}): install it (Debian: apt-get install openssl)")
        });
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The suites `spec` names that this openssl can offer: the test must offer some, or its
/// failure would be the client's own.
fn openssl_suites(spec: &str) -> Vec<String> {
    let output = std::process::Command::new("openssl")
        .args(["ciphers", "-s", "-tls1_2", spec])
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run openssl ({error}): install it (Debian: apt-get install openssl)")
        });
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .split(':')
        .filter(|suite| !suite.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn openssl_clients_with_old_versions_or_weak_suites_get_the_servers_alert() {
    let pki = Pki::default();
    let site = pki.issue("site", &["localhost"]);
    let server = tls_server(&[(&site, &["localhost"])], "", "");
    let addr = https(&server);
    let good = s_client(
        addr,
        &["-tls1_2", "-CAfile", &pki.ca_path.display().to_string()],
    );
    assert!(good.contains("Verify return code: 0 (ok)"), "{good}");
    // A TLS 1.0 or 1.1 hello carries no signature_algorithms extension, and rustls names
    // that missing (handshake_failure) before the version (protocol_version, as the raw
    // hellos above show); either way it is the server's alert that ends the handshake.
    for version in ["-tls1", "-tls1_1"] {
        let output = s_client(addr, &[version, "-cipher", "DEFAULT:@SECLEVEL=0"]);
        assert!(
            received_alert(&output, 70) || received_alert(&output, 40),
            "{version}: {output}"
        );
        assert!(output.contains("Cipher is (NONE)"), "{version}: {output}");
    }
    let weak = "RC4:3DES:eNULL:aNULL:EXPORT:@SECLEVEL=0";
    let offered = openssl_suites(weak);
    assert!(!offered.is_empty(), "this openssl offers none of {weak}");
    let output = s_client(addr, &["-tls1_2", "-cipher", weak]);
    assert!(
        received_alert(&output, 40),
        "offering {offered:?}: {output}"
    );
}

/// openssl reports an alert it received (not one it sent) from its record reader.
fn received_alert(output: &str, code: u8) -> bool {
    output.lines().any(|line| {
        line.contains("ssl3_read_bytes") && line.ends_with(&format!("SSL alert number {code}"))
    })
}
