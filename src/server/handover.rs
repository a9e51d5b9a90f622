//! The listening sockets in use, by role, for a binary upgrade to hand to the new process.
//!
//! Each entry is a duplicate (a descriptor of its own on the same socket), so the set can be
//! read at any moment without asking the accept loops, which own and may close theirs. A
//! reload that moves a listener replaces its role's set; shutdown empties everything: a
//! duplicate left behind would keep a socket listening that no loop accepts from, and the
//! connections queued on it would wait for nothing.

use std::io;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::sync::Mutex;

/// What a listening socket is for; its name is the one socket activation uses
/// (`LISTEN_FDNAMES`), so the new process adopts each socket in the role it had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Http,
    Https,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Http, Role::Https, Role::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Role::Http => "http",
            Role::Https => "https",
            Role::Admin => "admin",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The current listening sockets of each role (several for `http` and `https` under the
/// per-core layout: one `SO_REUSEPORT` socket per accept loop, each with its own queue, so
/// all of them must be handed over).
#[derive(Debug, Default)]
pub struct ListeningSockets {
    roles: Mutex<[Vec<TcpListener>; 3]>,
}

impl ListeningSockets {
    /// From now on `role` listens on `listeners` (none: the role stopped listening). A
    /// duplicate that cannot be made leaves the role empty, logged: an upgrade then has the
    /// new process bind for itself, which fails while this one listens, so nothing is lost
    /// but the upgrade.
    pub fn set(&self, role: Role, listeners: &[TcpListener]) {
        let copies = match listeners.iter().map(TcpListener::try_clone).collect() {
            Ok(copies) => copies,
            Err(error) => {
                tracing::warn!(
                    %error,
                    role = role.name(),
                    "cannot keep a copy of a listening socket; a binary upgrade will not get it"
                );
                Vec::new()
            }
        };
        let mut roles = self.roles.lock().unwrap_or_else(|p| p.into_inner());
        roles[role.index()] = copies;
    }

    /// Shutdown started: let every socket close with the last loop that uses it.
    pub fn clear(&self) {
        let mut roles = self.roles.lock().unwrap_or_else(|p| p.into_inner());
        for listeners in roles.iter_mut() {
            listeners.clear();
        }
    }

    /// Fresh duplicates of every socket, in role order (`http`s, then `https`, then `admin`),
    /// for a new process to inherit.
    pub fn duplicates(&self) -> io::Result<Vec<(Role, OwnedFd)>> {
        let roles = self.roles.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for role in Role::ALL {
            for listener in &roles[role.index()] {
                out.push((role, OwnedFd::from(listener.try_clone()?)));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").expect("bind on loopback")
    }

    #[test]
    fn duplicates_come_in_role_order_and_a_role_can_be_replaced() {
        let sockets = ListeningSockets::default();
        sockets.set(Role::Admin, &[listener()]);
        sockets.set(Role::Http, &[listener(), listener()]);
        let roles: Vec<Role> = sockets
            .duplicates()
            .expect("duplicates")
            .into_iter()
            .map(|(role, _)| role)
            .collect();
        assert_eq!(roles, [Role::Http, Role::Http, Role::Admin]);
        sockets.set(Role::Http, &[listener()]);
        assert_eq!(sockets.duplicates().expect("duplicates").len(), 2);
        sockets.clear();
        assert!(sockets.duplicates().expect("duplicates").is_empty());
    }

    #[test]
    fn a_cleared_copy_no_longer_keeps_the_socket_listening() {
        let sockets = ListeningSockets::default();
        let original = listener();
        let addr = original.local_addr().expect("address");
        sockets.set(Role::Http, &[original]);
        // The original is gone; the copy still accepts connections on the port.
        assert!(std::net::TcpStream::connect(addr).is_ok());
        sockets.clear();
        assert!(std::net::TcpStream::connect(addr).is_err());
    }
}
