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
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    roles: [Vec<TcpListener>; 3],
    /// Counts changes, so an upgrade can tell that a reload moved a listener while the new
    /// process was starting with the sockets copied before.
    generation: u64,
    /// Shutdown has started: nothing is handed over or kept from now on.
    closed: bool,
}

/// Copies of every socket, and the generation they were taken at.
pub struct Handover {
    pub sockets: Vec<(Role, OwnedFd)>,
    pub generation: u64,
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
        let mut state = self.lock();
        if state.closed {
            return;
        }
        state.roles[role.index()] = copies;
        state.generation += 1;
    }

    /// Shutdown started: let every socket close with the last loop that uses it, and keep
    /// nothing a late reload would register.
    pub fn clear(&self) {
        let mut state = self.lock();
        state.closed = true;
        for listeners in state.roles.iter_mut() {
            listeners.clear();
        }
        state.generation += 1;
    }

    /// Fresh duplicates of every socket, in role order (`http`s, then `https`, then `admin`),
    /// for a new process to inherit. Refused once shutdown has started.
    pub fn duplicates(&self) -> io::Result<Handover> {
        let state = self.lock();
        if state.closed {
            return Err(io::Error::other("the server is shutting down"));
        }
        let mut sockets = Vec::new();
        for role in Role::ALL {
            for listener in &state.roles[role.index()] {
                sockets.push((role, OwnedFd::from(listener.try_clone()?)));
            }
        }
        Ok(Handover {
            sockets,
            generation: state.generation,
        })
    }

    /// The current generation (see [`Handover::generation`]).
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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
        let first = sockets.duplicates().expect("duplicates");
        let roles: Vec<Role> = first.sockets.iter().map(|(role, _)| *role).collect();
        assert_eq!(roles, [Role::Http, Role::Http, Role::Admin]);
        sockets.set(Role::Http, &[listener()]);
        let second = sockets.duplicates().expect("duplicates");
        assert_eq!(second.sockets.len(), 2);
        assert!(
            second.generation > first.generation,
            "a move is a new generation"
        );
        sockets.clear();
        assert!(
            sockets.duplicates().is_err(),
            "nothing is handed over while stopping"
        );
        // A reload late in the drain keeps nothing listening.
        sockets.set(Role::Http, &[listener()]);
        assert!(sockets.duplicates().is_err());
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
