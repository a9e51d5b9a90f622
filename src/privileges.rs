//! Whom the process serves as. Started as root, Sentinel binds its listeners (ports below
//! 1024 included) and reads its files, then switches to `server.user` before the first
//! connection. Serving as root is refused, unless the config says `server.allow_root: true`
//! or every listener is on loopback (a developer's machine, where nobody else can reach it);
//! see ADR 0012.

use std::net::SocketAddr;

use crate::config::{Account, Config};

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "refusing to serve as root on {0}: set server.user (and server.group) to switch to an \
         unprivileged account after binding, or server.allow_root: true to serve as root anyway"
    )]
    RootRefused(String),
    #[error(
        "server.user {0:?} needs the process to start as root (it runs as uid {1}); to serve \
         as the current user, leave server.user unset"
    )]
    NotRoot(String, u32),
    #[error("cannot switch to uid {uid}, gid {gid}: {step} failed: {reason}")]
    Switch {
        uid: u32,
        gid: u32,
        step: &'static str,
        reason: String,
    },
    #[error("switched to uid {0}, but root could be regained")]
    Regainable(u32),
}

/// What the check before binding found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Not root: serve as we are.
    Stay,
    /// Root with `server.user`: switch after binding.
    Switch(Account),
    /// Root allowed to stay root (the reason is logged at warn).
    StayRoot(&'static str),
}

/// Before binding: decide, from who we are and what the config says, whom we serve as.
pub fn plan(config: &Config) -> Result<Plan, PrivilegeError> {
    plan_for(effective_uid(), config)
}

fn plan_for(euid: u32, config: &Config) -> Result<Plan, PrivilegeError> {
    let run_as = &config.server.run_as;
    match (euid, run_as.account) {
        (0, Some(account)) => Ok(Plan::Switch(account)),
        (_, Some(account)) if account.uid == euid => Ok(Plan::Stay),
        (_, Some(_)) => Err(PrivilegeError::NotRoot(
            run_as.user_name.clone().unwrap_or_default(),
            euid,
        )),
        (0, None) if run_as.allow_root => Ok(Plan::StayRoot("server.allow_root is true")),
        (0, None) => {
            let exposed: Vec<String> = listeners(config)
                .filter(|addr| !addr.ip().is_loopback())
                .map(|addr| addr.to_string())
                .collect();
            if exposed.is_empty() {
                Ok(Plan::StayRoot(
                    "every listener is on loopback; set server.user before listening beyond it",
                ))
            } else {
                Err(PrivilegeError::RootRefused(exposed.join(", ")))
            }
        }
        (_, None) => Ok(Plan::Stay),
    }
}

/// Every address the process listens on.
fn listeners(config: &Config) -> impl Iterator<Item = SocketAddr> + '_ {
    std::iter::once(config.server.listen_addr)
        .chain(config.tls.as_ref().map(|tls| tls.listen_addr))
        .chain(config.admin.as_ref().map(|admin| admin.listen_addr))
}

/// After binding: switch to `account` (supplementary groups, group, then user, in that
/// order, since each later step takes away the right to do the earlier ones), and prove root
/// cannot be regained.
#[cfg(unix)]
pub fn switch_to(account: Account) -> Result<(), PrivilegeError> {
    use nix::unistd::{getegid, geteuid, getgid, getuid, setgid, setgroups, setuid, Gid, Uid};
    let Account { uid, gid } = account;
    let failed = |step: &'static str| {
        move |errno: nix::errno::Errno| PrivilegeError::Switch {
            uid,
            gid,
            step,
            reason: errno.to_string(),
        }
    };
    setgroups(&[Gid::from_raw(gid)]).map_err(failed("setgroups"))?;
    setgid(Gid::from_raw(gid)).map_err(failed("setgid"))?;
    setuid(Uid::from_raw(uid)).map_err(failed("setuid"))?;
    let switched = getuid().as_raw() == uid
        && geteuid().as_raw() == uid
        && getgid().as_raw() == gid
        && getegid().as_raw() == gid;
    if !switched {
        return Err(PrivilegeError::Switch {
            uid,
            gid,
            step: "checking the new ids",
            reason: "the process still has other ids".into(),
        });
    }
    if uid != 0 && setuid(Uid::from_raw(0)).is_ok() {
        return Err(PrivilegeError::Regainable(uid));
    }
    Ok(())
}

#[cfg(not(unix))]
pub fn switch_to(account: Account) -> Result<(), PrivilegeError> {
    Err(PrivilegeError::Switch {
        uid: account.uid,
        gid: account.gid,
        step: "setuid",
        reason: "not supported on this platform".into(),
    })
}

#[cfg(unix)]
fn effective_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

#[cfg(not(unix))]
fn effective_uid() -> u32 {
    u32::MAX
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunAs;

    fn config(listen: &str, admin: Option<&str>, run_as: RunAs) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let admin = admin.map_or(String::new(), |a| {
            format!("admin:\n  listen_addr: \"{a}\"\n  token: \"a-long-enough-token\"\n")
        });
        let yaml =
            format!("server:\n  listen_addr: \"{listen}\"\nstatic_files:\n  root: \".\"\n{admin}");
        std::fs::write(dir.path().join("c.yaml"), yaml).unwrap();
        let mut config = Config::load(&dir.path().join("c.yaml"), None).unwrap();
        config.server.run_as = run_as;
        config
    }

    fn user(uid: u32) -> RunAs {
        RunAs {
            account: Some(Account { uid, gid: uid }),
            user_name: Some(format!("u{uid}")),
            allow_root: false,
        }
    }

    #[test]
    fn root_is_refused_beyond_loopback_unless_allowed_or_switching() {
        let exposed = config("0.0.0.0:80", None, RunAs::default());
        let refused = plan_for(0, &exposed).unwrap_err();
        assert!(matches!(&refused, PrivilegeError::RootRefused(a) if a == "0.0.0.0:80"));
        assert!(refused.to_string().contains("set server.user"));
        let admin_out = config("127.0.0.1:80", Some("10.0.0.1:9901"), RunAs::default());
        assert!(matches!(
            plan_for(0, &admin_out),
            Err(PrivilegeError::RootRefused(a)) if a == "10.0.0.1:9901"
        ));
        let loopback = config("127.0.0.1:8080", Some("[::1]:9901"), RunAs::default());
        assert!(matches!(plan_for(0, &loopback), Ok(Plan::StayRoot(_))));
        let allowed = RunAs {
            allow_root: true,
            ..RunAs::default()
        };
        assert!(matches!(
            plan_for(0, &config("0.0.0.0:80", None, allowed)),
            Ok(Plan::StayRoot(_))
        ));
        assert_eq!(
            plan_for(0, &config("0.0.0.0:80", None, user(65534))).unwrap(),
            Plan::Switch(Account {
                uid: 65534,
                gid: 65534
            })
        );
    }

    #[test]
    fn a_user_who_is_not_root_cannot_switch_but_may_name_itself() {
        let named = config("0.0.0.0:8080", None, user(1000));
        assert_eq!(plan_for(1000, &named).unwrap(), Plan::Stay);
        assert!(matches!(
            plan_for(1001, &named),
            Err(PrivilegeError::NotRoot(name, 1001)) if name == "u1000"
        ));
        assert_eq!(
            plan_for(1000, &config("0.0.0.0:8080", None, RunAs::default())).unwrap(),
            Plan::Stay
        );
    }
}
