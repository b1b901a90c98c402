//! A long-lived `nft -i` process for small transactions (element deltas).
//!
//! Why: nf_tables frees what a transaction deleted after an RCU grace
//! period, in a work queue that the release of any nfnetlink socket
//! flushes. A `nft -f` process closes its socket when it exits, so every
//! delta that deleted something (a member leaving) waited out the grace
//! period before the agent heard it was done: 11-75 ms measured. One
//! process keeps one socket open, so a delta costs its own netlink round
//! trip; the freeing happens later, off the agent's path.
//!
//! The protocol over the pipes: a transaction is one input line (nft runs
//! each line as one batch, so it stays atomic: commands joined by `;`),
//! followed by a sentinel command that always fails and names a token
//! unique to the transaction. nft writes an error and the failing input
//! line to stderr, so what it writes before the sentinel's own error is
//! the transaction's. A session that answers nothing within
//! [`ANSWER_WAIT`], or exits, is dropped; the caller loads the program
//! another way.

use crate::error::AgentError;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a transaction may take before the session is given up.
pub const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// The longest script sent through a session (longer ones, whole-table
/// loads, go through `nft -f`).
pub const MAX_SCRIPT_BYTES: usize = 1 << 20;

/// One `nft -i` process, in a network namespace or the current one.
#[derive(Debug)]
pub struct NftSession {
    child: Child,
    stdin: ChildStdin,
    /// Lines nft writes to stderr, from a reader thread (so a wait can
    /// time out).
    lines: mpsc::Receiver<String>,
    /// Numbers the sentinels.
    seq: u64,
    command: String,
}

impl NftSession {
    /// Starts `nft -i` (through `ip netns exec NAME` for a namespace).
    pub fn spawn(netns: Option<&str>) -> Result<Self, AgentError> {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "nft", "-i"]);
                c
            }
            None => {
                let mut c = Command::new("nft");
                c.arg("-i");
                c
            }
        };
        let command = match netns {
            Some(ns) => format!("ip netns exec {ns} nft -i"),
            None => "nft -i".to_string(),
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| AgentError::Spawn {
                command: command.clone(),
                source,
            })?;
        let (Some(stdin), Some(stderr)) = (child.stdin.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(AgentError::Nft {
                command,
                stderr: "no pipes to the process".into(),
            });
        };
        let (tx, lines) = mpsc::channel();
        std::thread::Builder::new()
            .name("nft-session".into())
            .spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .map_err(|source| AgentError::Spawn {
                command: command.clone(),
                source,
            })?;
        let mut session = Self {
            child,
            stdin,
            lines,
            seq: 0,
            command,
        };
        // nft sets itself up on its first command (2-3 ms here): pay it
        // now rather than in the first delta.
        session.run("")?;
        Ok(session)
    }

    /// Whether `script` can go through a session: not too long, and no
    /// character that would end a command or the line early once its
    /// lines are joined (`;` separates commands, `#` starts a comment).
    pub fn fits(script: &str) -> bool {
        script.len() <= MAX_SCRIPT_BYTES && !script.contains([';', '#', '\r'])
    }

    /// Runs `script` (nft commands, one per line) as one transaction.
    /// `Err(AgentError::Nft)` with nft's message when nft refused it
    /// (nothing changed); any other error leaves the session unusable.
    pub fn run(&mut self, script: &str) -> Result<(), AgentError> {
        self.seq += 1;
        let token = format!("palisadesentinel{}x{}", std::process::id(), self.seq);
        let line = script
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        let input = format!("{line}\nlist set inet palisade {token}\n");
        self.stdin
            .write_all(input.as_bytes())
            .and_then(|()| self.stdin.flush())
            .map_err(|source| AgentError::Spawn {
                command: self.command.clone(),
                source,
            })?;
        let mut said = Vec::new();
        loop {
            match self.lines.recv_timeout(ANSWER_WAIT) {
                Ok(l) if l.contains(&token) => break,
                Ok(l) => said.push(l),
                Err(_) => {
                    return Err(self.broken(format!("no answer within {} s", ANSWER_WAIT.as_secs())))
                }
            }
        }
        transaction_error(&said).map_or(Ok(()), |stderr| {
            Err(AgentError::Nft {
                command: format!("{}: {}", self.command, abbreviated(&line)),
                stderr,
            })
        })
    }

    fn broken(&self, what: String) -> AgentError {
        AgentError::Nft {
            command: self.command.clone(),
            stderr: what,
        }
    }
}

impl Drop for NftSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What nft said about the transaction, from the stderr lines before the
/// sentinel's echoed command: `None` when it said nothing but the
/// sentinel's own error (and the caret lines marking positions).
fn transaction_error(said: &[String]) -> Option<String> {
    let mut lines: Vec<&str> = said
        .iter()
        .map(|l| l.trim_end())
        .filter(|l| !l.chars().all(|c| matches!(c, '^' | '~' | ' ' | '\t')))
        .collect();
    // The last error is the sentinel's (its set does not exist).
    if let Some(i) = lines.iter().rposition(|l| l.starts_with("Error:")) {
        lines.remove(i);
    }
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// A long input line, shortened for an error message.
fn abbreviated(line: &str) -> String {
    const MAX: usize = 300;
    match line.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_the_sentinels_error_means_success() {
        assert_eq!(
            transaction_error(&lines(&["Error: No such file or directory"])),
            None
        );
        // Carets of the previous sentinel arrive first.
        assert_eq!(
            transaction_error(&lines(&[
                "                ^^^^^^^^^^^^^^^^^",
                "Error: No such file or directory; did you mean set 'sg_1_v4' in table inet 'palisade'?"
            ])),
            None
        );
        let failed = transaction_error(&lines(&[
            "  ^^^",
            "Error: Could not process rule: No such file or directory",
            "delete element inet palisade sg_1_v4 { 198.18.0.5 }",
            "                             ~~~~~~~ ^^^^^^^^^^",
            "Error: No such file or directory",
        ]));
        assert_eq!(
            failed.as_deref(),
            Some(
                "Error: Could not process rule: No such file or directory\ndelete element inet palisade sg_1_v4 { 198.18.0.5 }"
            )
        );
    }

    #[test]
    fn scripts_that_would_split_or_end_early_do_not_fit() {
        assert!(NftSession::fits(
            "add element inet palisade s { 198.18.0.1 }\ninsert rule inet palisade c return\n"
        ));
        assert!(!NftSession::fits(
            "add rule inet palisade c accept; flush ruleset"
        ));
        assert!(!NftSession::fits("add rule inet palisade c accept # x"));
        assert!(!NftSession::fits(&"x".repeat(MAX_SCRIPT_BYTES + 1)));
    }
}
