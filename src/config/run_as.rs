//! `server.user`, `server.group` and `server.allow_root`: whom the process serves as. The
//! names are looked up when the config is validated, so `--check` reports an unknown user
//! and a started process never finds out after binding.

use super::Validator;

/// A resolved account to switch to after binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
}

/// Whom to serve as.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunAs {
    /// Switch to this account once the listeners are bound; `None`: stay who we are.
    pub account: Option<Account>,
    /// The user as written, for messages.
    pub user_name: Option<String>,
    /// Serve as root when started as root without `server.user`, on any address.
    pub allow_root: bool,
}

impl Validator<'_> {
    pub(super) fn run_as(
        &self,
        user: Option<&str>,
        group: Option<&str>,
        allow_root: bool,
    ) -> RunAs {
        let Some(user) = user else {
            if group.is_some() {
                self.report("server.group", "needs server.user");
            }
            return RunAs {
                allow_root,
                ..RunAs::default()
            };
        };
        let account = match lookup_user(user) {
            Ok(Some(found)) => {
                let gid = match group.map(lookup_group) {
                    None => Some(found.gid),
                    Some(Ok(Some(gid))) => Some(gid),
                    Some(Ok(None)) => {
                        self.report(
                            "server.group",
                            format!("no group {:?}", group.unwrap_or("")),
                        );
                        None
                    }
                    Some(Err(reason)) => {
                        self.report("server.group", reason);
                        None
                    }
                };
                gid.map(|gid| Account {
                    uid: found.uid,
                    gid,
                })
            }
            Ok(None) => {
                self.report("server.user", format!("no user {user:?}"));
                None
            }
            Err(reason) => {
                self.report("server.user", reason);
                None
            }
        };
        RunAs {
            account,
            user_name: Some(user.to_string()),
            allow_root,
        }
    }
}

/// A user by name, or by number (`"65534"`), as `getpwnam`/`getpwuid` find it.
#[cfg(unix)]
fn lookup_user(user: &str) -> Result<Option<Account>, String> {
    use nix::unistd::{Uid, User};
    let found = match user.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(user),
    };
    found
        .map(|user| {
            user.map(|u| Account {
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            })
        })
        .map_err(|errno| format!("cannot look up user {user:?}: {errno}"))
}

#[cfg(unix)]
fn lookup_group(group: &str) -> Result<Option<u32>, String> {
    use nix::unistd::{Gid, Group};
    let found = match group.parse::<u32>() {
        Ok(gid) => Group::from_gid(Gid::from_raw(gid)),
        Err(_) => Group::from_name(group),
    };
    found
        .map(|group| group.map(|g| g.gid.as_raw()))
        .map_err(|errno| format!("cannot look up group {group:?}: {errno}"))
}

#[cfg(not(unix))]
fn lookup_user(_user: &str) -> Result<Option<Account>, String> {
    Err("switching users is supported on Unix only".into())
}

#[cfg(not(unix))]
fn lookup_group(_group: &str) -> Result<Option<u32>, String> {
    Err("switching groups is supported on Unix only".into())
}
