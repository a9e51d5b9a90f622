//! `sd_notify(3)` without libsystemd: one datagram of `KEY=VALUE` lines to the socket named
//! by `$NOTIFY_SOCKET` (a path, or `@name` for a Linux abstract socket). Sentinel sends
//! `READY=1` once every listener is bound, `RELOADING=1` with `MONOTONIC_USEC` then
//! `READY=1` around a reload, `STOPPING=1` when the drain starts, and `WATCHDOG=1` at half of
//! `$WATCHDOG_USEC`. A failed send is logged and otherwise ignored: the service manager's
//! bookkeeping must never stop the server.

use std::io;
use std::sync::OnceLock;
use std::time::Duration;

/// Where notifications go: `$NOTIFY_SOCKET` as parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifySocket {
    /// A filesystem path.
    Path(std::path::PathBuf),
    /// A Linux abstract socket name (written `@name`, the `@` standing for a NUL byte).
    Abstract(Vec<u8>),
}

impl NotifySocket {
    /// `$NOTIFY_SOCKET`'s value, or `None` when it names nothing usable (unset, empty, or a
    /// relative path, which systemd never sends: vsock addresses are not supported).
    pub fn parse(value: &str) -> Option<NotifySocket> {
        if let Some(name) = value.strip_prefix('@') {
            return (!name.is_empty()).then(|| NotifySocket::Abstract(name.as_bytes().to_vec()));
        }
        value
            .starts_with('/')
            .then(|| NotifySocket::Path(value.into()))
    }

    /// Send `message` as one datagram, without waiting: a receiver whose queue is full (a
    /// service manager that has stopped reading) costs a message, never a blocked thread,
    /// since the runtime's thread that sends also serves signals and reloads.
    pub fn send(&self, message: &str) -> io::Result<()> {
        let socket = std::os::unix::net::UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        match self {
            NotifySocket::Path(path) => socket.send_to(message.as_bytes(), path)?,
            NotifySocket::Abstract(name) => send_abstract(&socket, name, message)?,
        };
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn send_abstract(
    socket: &std::os::unix::net::UnixDatagram,
    name: &[u8],
    message: &str,
) -> io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    socket.send_to_addr(message.as_bytes(), &addr)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(
    _socket: &std::os::unix::net::UnixDatagram,
    _name: &[u8],
    _message: &str,
) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets are Linux only",
    ))
}

/// The socket from the environment, read once (the variable does not change under us).
fn socket() -> Option<&'static NotifySocket> {
    static SOCKET: OnceLock<Option<NotifySocket>> = OnceLock::new();
    SOCKET
        .get_or_init(|| {
            std::env::var("NOTIFY_SOCKET")
                .ok()
                .and_then(|value| NotifySocket::parse(&value))
        })
        .as_ref()
}

/// Send `message` if a service manager listens; a failure is logged at warn.
fn notify(message: &str) {
    let Some(socket) = socket() else {
        return;
    };
    if let Err(error) = socket.send(message) {
        tracing::warn!(%error, message, "cannot notify the service manager");
    }
}

/// Every listener is bound and serving.
pub fn ready() {
    notify(&format!(
        "READY=1\nMAINPID={}\nSTATUS=serving",
        std::process::id()
    ));
}

/// A reload starts; [`reloaded`] follows when it has been applied or refused.
pub fn reloading() {
    let mut message = String::from("RELOADING=1\n");
    // systemd (Type=notify-reload) matches the reload to the time it asked for it.
    if let Some(usec) = monotonic_usec() {
        message += &format!("MONOTONIC_USEC={usec}\n");
    }
    message += "STATUS=reloading";
    notify(&message);
}

/// The reload is over (applied or refused: the process serves either way).
pub fn reloaded() {
    notify("READY=1\nSTATUS=serving");
}

/// A binary upgrade's new process (`pid`) serves: the service manager follows it from now
/// on (it takes `MAINPID=` from the main process, which this one still is), and this one
/// drains quietly, so no `STOPPING=1` follows.
pub fn main_pid_moved(pid: u32) {
    notify(&format!(
        "MAINPID={pid}\nREADY=1\nSTATUS=serving (upgraded)"
    ));
}

/// The drain has started.
pub fn stopping() {
    notify("STOPPING=1\nSTATUS=draining");
}

/// `CLOCK_MONOTONIC` in microseconds, as `MONOTONIC_USEC` wants it.
#[cfg(target_os = "linux")]
fn monotonic_usec() -> Option<u64> {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let seconds = u64::try_from(now.tv_sec).ok()?;
    let micros = u64::try_from(now.tv_nsec).ok()? / 1_000;
    seconds.checked_mul(1_000_000)?.checked_add(micros)
}

#[cfg(not(target_os = "linux"))]
fn monotonic_usec() -> Option<u64> {
    None
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC` (systemd's advice), when that is
/// set for this process (`$WATCHDOG_PID` unset or ours).
pub fn watchdog_interval() -> Option<Duration> {
    socket()?;
    watchdog_interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// PURE: [`watchdog_interval`] from the variables' values.
pub fn watchdog_interval_from(
    usec: Option<&str>,
    pid: Option<&str>,
    own_pid: u32,
) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Ping the watchdog every `interval` until the task is dropped (its owner aborts it when
/// the process stops).
pub async fn watchdog(interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        notify("WATCHDOG=1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_socket_values() {
        assert_eq!(
            NotifySocket::parse("/run/systemd/notify"),
            Some(NotifySocket::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            NotifySocket::parse("@sentinel/notify"),
            Some(NotifySocket::Abstract(b"sentinel/notify".to_vec()))
        );
        assert_eq!(NotifySocket::parse(""), None);
        assert_eq!(NotifySocket::parse("@"), None);
        assert_eq!(NotifySocket::parse("relative"), None);
        assert_eq!(NotifySocket::parse("vsock:2:1234"), None);
    }

    #[test]
    fn a_datagram_reaches_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        NotifySocket::Path(path).send("READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_datagram_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("sentinel-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap();
        NotifySocket::parse(&format!("@{name}"))
            .unwrap()
            .send("WATCHDOG=1")
            .unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }

    #[test]
    fn the_watchdog_pings_at_half_its_timeout_for_this_process_only() {
        let half = Some(Duration::from_secs(5));
        assert_eq!(watchdog_interval_from(Some("10000000"), None, 7), half);
        assert_eq!(watchdog_interval_from(Some("10000000"), Some("7"), 7), half);
        assert_eq!(watchdog_interval_from(Some("10000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval_from(Some("x"), None, 7), None);
        assert_eq!(watchdog_interval_from(None, None, 7), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_monotonic_clock_is_read_in_microseconds() {
        let first = monotonic_usec().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let second = monotonic_usec().unwrap();
        assert!(second >= first + 2_000, "{first} {second}");
    }
}
