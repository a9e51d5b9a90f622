//! Socket activation (`sd_listen_fds(3)`): listening sockets that the service manager (or a
//! previous Sentinel, for a binary upgrade) bound and passed as descriptors 3, 4, ...,
//! described by `LISTEN_FDS`, `LISTEN_PID` and `LISTEN_FDNAMES`. Each listener of the
//! server (`http`, `https`, `admin`) takes the descriptors named after it (a binary upgrade
//! names one per accept loop), or else the first unnamed one left in order; a listener with
//! none binds its configured address as usual.
//!
//! The environment is read once, at the very start of `main` while the process has one
//! thread (the variables are removed so that nothing started later inherits them).

use std::io;
use std::net::TcpListener;

/// The listener roles a passed socket can be named for (`FileDescriptorName=` in the
/// `.socket` unit), in the order unnamed sockets are handed out.
pub const ROLES: [&str; 3] = ["http", "https", "admin"];

/// The sockets passed in, each with its name (`None`: unnamed, or a name that is not a role,
/// such as the unit name systemd uses when `FileDescriptorName=` is not set).
#[derive(Debug, Default)]
pub struct InheritedListeners {
    sockets: Vec<(Option<String>, Option<TcpListener>)>,
}

impl InheritedListeners {
    /// Adopt what the environment passes; none when `LISTEN_FDS` is unset or `LISTEN_PID`
    /// names another process. A passed descriptor that is not a TCP listening socket is an
    /// error: the unit file is wrong, and serving without that listener would hide it.
    pub fn from_env() -> io::Result<InheritedListeners> {
        let names = std::env::var("LISTEN_FDNAMES").ok();
        let mut fds = listenfd::ListenFd::from_env();
        let names = role_names(fds.len(), names.as_deref());
        let sockets = names
            .into_iter()
            .enumerate()
            .map(|(index, name)| {
                let listener = fds.take_tcp_listener(index)?.ok_or_else(|| {
                    io::Error::other(format!("passed descriptor {} is missing", index + 3))
                })?;
                Ok((name, Some(listener)))
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(InheritedListeners { sockets })
    }

    /// Whether no sockets were passed.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// The socket for `role`: the one named so, or the first unnamed one left.
    pub fn take(&mut self, role: &str) -> Option<TcpListener> {
        let index = pick(
            self.sockets
                .iter()
                .map(|(name, listener)| (name.as_deref(), listener.is_some())),
            role,
        )?;
        self.sockets.get_mut(index)?.1.take()
    }

    /// Every socket named `role` (a binary upgrade passes one per accept loop of the old
    /// process), or else the first unnamed one left, as [`take`](Self::take).
    pub fn take_all(&mut self, role: &str) -> Vec<TcpListener> {
        let named: Vec<TcpListener> = self
            .sockets
            .iter_mut()
            .filter(|(name, _)| name.as_deref() == Some(role))
            .filter_map(|(_, listener)| listener.take())
            .collect();
        if named.is_empty() {
            self.take(role).into_iter().collect()
        } else {
            named
        }
    }

    /// How many passed sockets no listener took.
    pub fn left_over(&self) -> usize {
        self.sockets.iter().filter(|(_, l)| l.is_some()).count()
    }
}

/// PURE: each of `count` descriptors' role name from `LISTEN_FDNAMES` (colon-separated, one
/// per descriptor; a list of the wrong length is ignored, as `sd_listen_fds_with_names`
/// does). Names that are not roles count as unnamed.
pub fn role_names(count: usize, names: Option<&str>) -> Vec<Option<String>> {
    let listed: Vec<&str> = names.map_or_else(Vec::new, |n| n.split(':').collect());
    (0..count)
        .map(|i| {
            let name = if listed.len() == count {
                listed.get(i)
            } else {
                None
            };
            name.filter(|name| ROLES.contains(name))
                .map(|name| (*name).to_owned())
        })
        .collect()
}

/// PURE: which socket `role` takes: its own name first, else the first unnamed one still
/// free. Items are (name, still free).
pub fn pick<'a>(
    sockets: impl Iterator<Item = (Option<&'a str>, bool)> + Clone,
    role: &str,
) -> Option<usize> {
    let named = sockets
        .clone()
        .position(|(name, free)| free && name == Some(role));
    named.or_else(|| {
        sockets
            .clone()
            .position(|(name, free)| free && name.is_none())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_roles_or_nothing() {
        assert_eq!(
            role_names(3, Some("https:http:metrics")),
            vec![Some("https".into()), Some("http".into()), None]
        );
        // systemd's default name is the unit's; a list of the wrong length is ignored.
        assert_eq!(role_names(1, Some("sentinel.socket")), vec![None]);
        assert_eq!(role_names(2, Some("http")), vec![None, None]);
        assert_eq!(role_names(2, None), vec![None, None]);
    }

    #[test]
    fn a_role_takes_every_socket_named_for_it_else_one_unnamed() {
        let listener = || TcpListener::bind("127.0.0.1:0").ok();
        let mut inherited = InheritedListeners {
            sockets: vec![
                (Some("http".into()), listener()),
                (None, listener()),
                (Some("http".into()), listener()),
                (None, listener()),
            ],
        };
        assert_eq!(inherited.take_all("http").len(), 2);
        assert_eq!(inherited.take_all("admin").len(), 1);
        assert_eq!(inherited.take_all("https").len(), 1);
        assert!(inherited.take_all("admin").is_empty());
        assert_eq!(inherited.left_over(), 0);
    }

    #[test]
    fn a_role_takes_its_name_first_then_the_first_unnamed_socket() {
        let sockets = [(None, true), (Some("admin"), true), (None, true)];
        assert_eq!(pick(sockets.iter().copied(), "admin"), Some(1));
        assert_eq!(pick(sockets.iter().copied(), "http"), Some(0));
        let taken = [(None, false), (Some("admin"), true), (None, true)];
        assert_eq!(pick(taken.iter().copied(), "https"), Some(2));
        let none_left = [(None, false), (Some("admin"), true)];
        assert_eq!(pick(none_left.iter().copied(), "http"), None);
    }
}
