//! The `tls` section's validation.

use sentinel::config::{Config, TlsVersion};

use super::common::tls::{tls_yaml, Pki};

fn load(pki: &Pki, tls: &str) -> Result<Config, String> {
    let dir = pki.dir.path();
    std::fs::create_dir_all(dir.join("site")).unwrap();
    let yaml = format!(
        "server:\n  listen_addr: \"127.0.0.1:8080\"\nstatic_files:\n  root: \"site\"\n{tls}"
    );
    Config::from_yaml(&yaml, &dir.join("config.yaml"), dir).map_err(|e| e.to_string())
}

#[test]
fn defaults_and_relative_paths() {
    let pki = Pki::default();
    pki.issue("site", &["localhost"]);
    let tls = "tls:\n  listen_addr: \"127.0.0.1:8443\"\n  certificates:\n    \
               - cert: \"site.pem\"\n      key: \"site.key\"\n";
    let config = load(&pki, tls).expect("valid");
    let tls = config.tls.expect("tls");
    assert_eq!(tls.min_version, TlsVersion::Tls12);
    assert_eq!(tls.handshake_timeout, std::time::Duration::from_secs(10));
    assert!(!tls.redirect_http && tls.session_tickets && tls.client_ca.is_none());
    assert_eq!(tls.certificates[0].cert, pki.dir.path().join("site.pem"));
    // min_version unquoted reads as a number, and is taken as meant.
    let config = load(&pki, &format!("{}  min_version: 1.3\n", "tls:\n  listen_addr: \"127.0.0.1:8443\"\n  certificates:\n    - cert: \"site.pem\"\n      key: \"site.key\"\n")).expect("valid");
    assert_eq!(config.tls.expect("tls").min_version, TlsVersion::Tls13);
}

#[test]
fn mistakes_are_reported_with_their_keys() {
    let pki = Pki::default();
    let one = pki.issue("one", &["a.test"]);
    let two = pki.issue("two", &["b.test"]);
    let cases = [
        (
            tls_yaml(&[(&one, &["a.test"])], "  min_version: \"1.1\"\n"),
            "is not a TLS version Sentinel speaks",
        ),
        (
            tls_yaml(&[(&one, &["a.test"]), (&two, &["a.test"])], ""),
            "tls.certificates[1].server_names: \"a.test\" is already served by tls.certificates[0]",
        ),
        (
            tls_yaml(&[(&one, &["a.test"]), (&two, &[])], ""),
            "tls.certificates[1]: is never chosen",
        ),
        (
            tls_yaml(&[(&one, &["*.*.test"])], ""),
            "a wildcard stands for the whole first label only",
        ),
        (
            tls_yaml(&[(&one, &["10.0.0.1"])], ""),
            "SNI never carries an IP address",
        ),
        (
            tls_yaml(&[(&one, &["a.test"])], "  redirect_port: 0\n"),
            "tls.redirect_port: must be a port",
        ),
        (
            tls_yaml(&[(&one, &["a.test"])], "  handshake_timeout_ms: 0\n"),
            "tls.handshake_timeout_ms: must be greater than 0",
        ),
        (
            tls_yaml(&[(&one, &["a.test"])], "  client_ca: \"nowhere.pem\"\n"),
            "tls.client_ca: ",
        ),
        (
            tls_yaml(&[(&one, &["a.test"])], "").replace("127.0.0.1:0", "127.0.0.1:8080"),
            "is server.listen_addr too",
        ),
        (
            "tls:\n  listen_addr: \"127.0.0.1:8443\"\n  certificates: []\n".to_string(),
            "needs at least one certificate",
        ),
        (
            tls_yaml(&[(&one, &["a.test"])], "  ciphers: \"RC4\"\n"),
            "unknown key \"ciphers\"",
        ),
    ];
    for (tls, want) in cases {
        let error = load(&pki, &tls).expect_err(want);
        assert!(error.contains(want), "want {want:?} in:\n{error}");
    }
}
