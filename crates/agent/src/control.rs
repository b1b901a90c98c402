//! The agent's own connections to its servers are never cut off by the
//! node's groups (docs/agent.md, "The control plane is exempt"), and
//! nothing else gains from that.
//!
//! The agent opens every socket it uses to reach a server (the HTTP(S)
//! connections, and the name lookups it makes itself) while its thread's
//! effective user id is the *control uid* ([`DEFAULT_CONTROL_UID`] unless
//! `palisade agent --control-uid` says otherwise): the kernel records that
//! uid as the socket's owner, and the egress chain accepts packets of
//! sockets owned by it (`meta skuid`, [`crate::compile`]) before any rule.
//! Replies come back as replies of a tracked connection, which the
//! baseline accepts. No port or address is opened: another process gets
//! the exemption only by running as that uid, which takes root
//! (`CAP_SETUID`), and root on the node can rewrite the table anyway.
//!
//! The switch is per thread (`setresuid` as the kernel does it, not as the
//! C library broadcasts it), only the effective uid moves (the real and
//! saved uids stay, so the thread can switch back), and [`ControlUid::run`]
//! switches back before it returns.

use std::io;

/// The default control uid: a uid no account on a usual system has (the
/// top of the positive 32-bit range, below the range systemd keeps
/// unused for signedness reasons). `palisade agent` refuses to start with
/// a control uid that names an account in `/etc/passwd`.
pub const DEFAULT_CONTROL_UID: u32 = 2_147_483_646;

/// The uid the agent's server sockets are opened as, or none (the agent
/// does not switch, and its connections get no exemption).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ControlUid(Option<u32>);

impl ControlUid {
    /// Sockets opened as `uid`.
    pub fn new(uid: u32) -> Self {
        Self(Some(uid))
    }

    /// No switch: the agent's connections get no exemption.
    pub fn none() -> Self {
        Self(None)
    }

    /// The uid, if any.
    pub fn uid(self) -> Option<u32> {
        self.0
    }

    /// Runs `f` with this thread's effective uid set to the control uid,
    /// and switches back. When the switch is not allowed (an agent without
    /// `CAP_SETUID`), `f` runs as it is and the error says why, for the
    /// caller to report once.
    pub fn run<T>(self, f: impl FnOnce() -> T) -> (T, Option<io::Error>) {
        let Some(uid) = self.0 else {
            return (f(), None);
        };
        let previous = rustix::process::geteuid();
        if previous.as_raw() == uid {
            return (f(), None);
        }
        let target = rustix::process::Uid::from_raw(uid);
        if let Err(e) = rustix::thread::set_thread_res_uid(None, target, None) {
            return (f(), Some(io::Error::from(e)));
        }
        let out = f();
        if let Err(e) = rustix::thread::set_thread_res_uid(None, previous, None) {
            // The saved uid is still the one the thread started with, so
            // switching back cannot be refused; if it ever were, this
            // thread could no longer load rules: stop rather than run on
            // half-privileged.
            eprintln!("agent: cannot switch back from the control uid {uid}: {e}");
            std::process::abort();
        }
        (out, None)
    }
}

/// Refuses a control uid that an account has: that account's processes
/// would pass the node's egress rules. Reads `/etc/passwd` (accounts from
/// other name services are not seen; the documentation says so).
pub fn check_unused(uid: u32, passwd: &str) -> Result<(), String> {
    for line in passwd.lines() {
        let mut fields = line.split(':');
        let (Some(name), _, Some(id)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if id.parse::<u32>() == Ok(uid) {
            return Err(format!(
                "--control-uid {uid} is the uid of the account {name:?}: its processes would \
                 pass the node's egress rules; choose a uid no account has"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uid_that_an_account_has_is_refused() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nsvc:x:2147483646:100::/:/bin/false\n";
        assert!(check_unused(DEFAULT_CONTROL_UID, passwd)
            .expect_err("taken")
            .contains("\"svc\""));
        assert!(check_unused(12345, passwd).is_ok());
        assert!(check_unused(0, "garbage\n::\n").is_ok());
    }

    #[test]
    fn the_switch_holds_inside_only_and_on_this_thread_only() {
        if !palisade_testkit::root("control::the_switch_holds_inside_only") {
            return;
        }
        let before = rustix::process::geteuid().as_raw();
        // A thread that was running already (the flow recorder, say)
        // reads its uid while this one is switched.
        let (ask, asked) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            asked.recv().expect("asked");
            rustix::process::geteuid().as_raw()
        });
        let (seen, err) = ControlUid::new(DEFAULT_CONTROL_UID).run(|| {
            ask.send(()).expect("ask");
            let other = other.join().expect("thread");
            (rustix::process::geteuid().as_raw(), other)
        });
        assert!(err.is_none(), "{err:?}");
        assert_eq!(seen, (DEFAULT_CONTROL_UID, before));
        assert_eq!(rustix::process::geteuid().as_raw(), before);
    }

    #[test]
    fn no_control_uid_runs_as_is() {
        let (v, err) = ControlUid::none().run(|| 7);
        assert_eq!((v, err.is_none()), (7, true));
    }
}
