//! Certificates replaced on disk while the server runs: in place, by rename, and by a
//! symlink swap, under keep-alive load with a request in flight.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::version::{TLS12, TLS13};

use super::common::backend::{ok, Backend, Reply};
use super::common::tls::{connect, presented, Issued, Pki};
use super::{https, leaf_of_new_handshake, tls_server, wait_until, WAIT};

/// The issue's promise: a replaced certificate is used by new handshakes within 2 s.
const ROTATION_DEADLINE: Duration = Duration::from_secs(2);

/// Keep-alive clients looping over requests on one connection each until told to stop;
/// each returns how many requests it made (a failure panics its thread).
struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<std::thread::JoinHandle<usize>>,
}

impl Load {
    fn start(addr: SocketAddr, config: Arc<rustls::ClientConfig>, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicUsize::new(0));
        let clients = (0..clients)
            .map(|_| {
                let (stop, started, config) =
                    (Arc::clone(&stop), Arc::clone(&started), Arc::clone(&config));
                std::thread::spawn(move || {
                    let mut client = connect(addr, "localhost", config).expect("handshake");
                    let mut requests = 0;
                    while !stop.load(Ordering::SeqCst) {
                        client.send(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n");
                        let response = client.read_response();
                        assert_eq!(response.status, 200);
                        assert_eq!(response.body, b"hello, world\n");
                        requests += 1;
                        if requests == 1 {
                            started.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    requests
                })
            })
            .collect::<Vec<_>>();
        let count = clients.len();
        wait_until(Instant::now() + WAIT, "the load to start", || {
            started.load(Ordering::SeqCst) == count
        });
        Load { stop, clients }
    }

    /// Stop, and check every client got through without an error.
    fn finish(self) {
        self.stop.store(true, Ordering::SeqCst);
        for client in self.clients {
            let requests = client.join().expect("a keep-alive client failed");
            assert!(requests > 0);
        }
    }
}

/// A backend whose `/slow` answers only when the test says so: a request in flight for as
/// long as the test needs, without guessing a duration.
fn held_backend() -> (Backend, std::sync::mpsc::Sender<()>) {
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = std::sync::Mutex::new(released);
    let backend = Backend::start(move |seen| {
        if seen.target.starts_with("/slow") {
            let _ = released.lock().unwrap().recv_timeout(WAIT);
        }
        Reply::Send(ok("slow done"))
    });
    (backend, release)
}

#[test]
fn a_certificate_replaced_in_place_or_by_rename_serves_new_handshakes_under_load() {
    let pki = Pki::default();
    let first = pki.issue("site", &["localhost"]);
    let second = pki.issue("second", &["localhost"]);
    let third = pki.issue("third", &["localhost"]);
    let (backend, release) = held_backend();
    let routes = format!(
        "proxy:\n  backends:\n{}routes:\n  - path_prefix: \"/slow\"\n    upstream: \"default\"\n  \
         - path_prefix: \"/\"\n    static: true\n",
        backend.yaml_entry("b", "    ")
    );
    let server = tls_server(&[(&first, &["localhost"])], "", &routes);
    let addr = https(&server);
    assert_eq!(leaf_of_new_handshake(addr), Some(first.der.clone()));

    let load = Load::start(addr, pki.client(&[&TLS13]), 3);
    let mut in_flight = connect(addr, "localhost", pki.client(&[&TLS12])).expect("handshake");
    in_flight.send(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n");
    wait_until(
        Instant::now() + WAIT,
        "the slow request to reach the backend",
        || backend.request_count() == 1,
    );

    // In place, one file at a time, key first (the pair is mismatched in between).
    std::fs::write(&first.key, &second.key_pem).unwrap();
    std::fs::write(&first.cert, &second.cert_pem).unwrap();
    let written = Instant::now();
    wait_until(
        written + ROTATION_DEADLINE,
        "the in-place certificate",
        || leaf_of_new_handshake(addr) == Some(second.der.clone()),
    );

    // By rename, as certbot and editors replace files.
    let (cert_tmp, key_tmp) = (
        first.cert.with_extension("pem.new"),
        first.key.with_extension("key.new"),
    );
    std::fs::write(&key_tmp, &third.key_pem).unwrap();
    std::fs::write(&cert_tmp, &third.cert_pem).unwrap();
    std::fs::rename(&key_tmp, &first.key).unwrap();
    std::fs::rename(&cert_tmp, &first.cert).unwrap();
    let renamed = Instant::now();
    wait_until(
        renamed + ROTATION_DEADLINE,
        "the renamed certificate",
        || leaf_of_new_handshake(addr) == Some(third.der.clone()),
    );

    // The connections made before all this were not touched.
    release.send(()).unwrap();
    let slow = in_flight.read_response();
    assert_eq!((slow.status, slow.body_text().as_str()), (200, "slow done"));
    assert_eq!(presented(&in_flight), first.der);
    in_flight.send(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(in_flight.read_response().status, 200);
    load.finish();
}

#[cfg(unix)]
#[test]
fn a_kubernetes_style_symlink_swap_is_picked_up() {
    use std::os::unix::fs::symlink;
    let pki = Pki::default();
    let first = pki.issue("first", &["localhost"]);
    let second = pki.issue("second", &["localhost"]);
    // secret/tls.crt -> ..data/tls.crt, ..data -> ..v1: the layout of a secret volume.
    let secret = pki.dir.path().join("secret");
    for (version, issued) in [("..v1", &first), ("..v2", &second)] {
        std::fs::create_dir_all(secret.join(version)).unwrap();
        std::fs::write(secret.join(version).join("tls.crt"), &issued.cert_pem).unwrap();
        std::fs::write(secret.join(version).join("tls.key"), &issued.key_pem).unwrap();
    }
    symlink("..v1", secret.join("..data")).unwrap();
    symlink("..data/tls.crt", secret.join("tls.crt")).unwrap();
    symlink("..data/tls.key", secret.join("tls.key")).unwrap();
    let linked = Issued {
        cert: secret.join("tls.crt"),
        key: secret.join("tls.key"),
        der: first.der.clone(),
        cert_pem: String::new(),
        key_pem: String::new(),
    };
    let server = tls_server(&[(&linked, &["localhost"])], "", "");
    let addr = https(&server);
    assert_eq!(leaf_of_new_handshake(addr), Some(first.der.clone()));
    // The kubelet's swap: a new link renamed over ..data.
    symlink("..v2", secret.join("..data_tmp")).unwrap();
    std::fs::rename(secret.join("..data_tmp"), secret.join("..data")).unwrap();
    let swapped = Instant::now();
    wait_until(
        swapped + ROTATION_DEADLINE,
        "the swapped certificate",
        || leaf_of_new_handshake(addr) == Some(second.der.clone()),
    );
}
