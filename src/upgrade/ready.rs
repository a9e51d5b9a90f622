//! How a new process tells the one that started it that it serves: one datagram,
//! `READY=1` plus the token it was given, to the socket named in its environment (an
//! abstract Unix socket the old process listens on). The token keeps another local
//! process from faking readiness: abstract socket names are visible to every user, the
//! environment of a process only to its own.

use std::io;

use crate::systemd::notify::NotifySocket;

/// Where the new process reports (`@name`, as `NOTIFY_SOCKET` writes an abstract socket).
pub const SOCKET_VAR: &str = "SENTINEL_UPGRADE_SOCKET";
/// The token the report must carry.
pub const TOKEN_VAR: &str = "SENTINEL_UPGRADE_TOKEN";

/// PURE: the report a new process sends once every listener is serving.
pub fn message(token: &str) -> String {
    format!("READY=1\nTOKEN={token}")
}

/// PURE: whether `datagram` is the ready report carrying `token`.
pub fn is_ready(datagram: &[u8], token: &str) -> bool {
    let Ok(text) = std::str::from_utf8(datagram) else {
        return false;
    };
    let mut ready = false;
    let mut token_matches = false;
    for line in text.lines() {
        match line.split_once('=') {
            Some(("READY", "1")) => ready = true,
            Some(("TOKEN", given)) => token_matches = !token.is_empty() && given == token,
            _ => {}
        }
    }
    ready && token_matches
}

/// The process that started this one for an upgrade, when it did.
#[derive(Debug)]
pub struct Parent {
    socket: NotifySocket,
    token: String,
}

impl Parent {
    /// Read (and remove, so nothing started later inherits them) the variables; call at the
    /// start of `main`, while the process has one thread.
    pub fn from_env() -> Option<Parent> {
        let socket = std::env::var(SOCKET_VAR).ok();
        let token = std::env::var(TOKEN_VAR).ok();
        std::env::remove_var(SOCKET_VAR);
        std::env::remove_var(TOKEN_VAR);
        Some(Parent {
            socket: NotifySocket::parse(&socket?)?,
            token: token?,
        })
    }

    /// Every listener is serving: the old process may stop accepting.
    pub fn announce(&self) -> io::Result<()> {
        self.socket.send(&message(&self.token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_ready_report_with_the_token_counts() {
        let token = "3f2a";
        assert!(is_ready(message(token).as_bytes(), token));
        assert!(is_ready(b"TOKEN=3f2a\nREADY=1\n", token));
        assert!(!is_ready(b"READY=1", token));
        assert!(!is_ready(b"READY=1\nTOKEN=3f2b", token));
        assert!(!is_ready(b"READY=0\nTOKEN=3f2a", token));
        assert!(!is_ready(b"STOPPING=1\nTOKEN=3f2a", token));
        assert!(!is_ready(b"READY=1\nTOKEN=", ""));
        assert!(!is_ready(&[0xff, 0xfe], token));
    }
}
