//! Several servers for one agent (DESIGN.md section 4; issue 8): the
//! servers share one PostgreSQL database and answer alike, so when the one
//! in use cannot be reached, or answers that its database is unavailable,
//! the agent asks the next. It stays with whichever answered (no flapping
//! back), and a failure of every server is reported like a single server's:
//! the kernel keeps its rules.

use crate::client::InstanceRuleset;
use crate::client::{AgentStatus, ControlPlane};
use crate::error::AgentError;
use std::time::Duration;

/// A [`ControlPlane`] over several equivalent servers, failing over in turn.
pub struct Failover<C> {
    planes: Vec<C>,
    current: usize,
}

impl<C: ControlPlane> Failover<C> {
    /// Over `planes`, trying the first one first. `planes` must not be
    /// empty (an empty list fails every call).
    pub fn new(planes: Vec<C>) -> Self {
        Self { planes, current: 0 }
    }

    /// The index of the server in use.
    pub fn current(&self) -> usize {
        self.current
    }

    /// Runs `call` on the server in use, then on each other one in turn
    /// while the failure is the server's (unreachable or its store down).
    fn each<T>(
        &mut self,
        action: &str,
        mut call: impl FnMut(&mut C) -> Result<T, AgentError>,
    ) -> Result<T, AgentError> {
        let n = self.planes.len();
        let mut last = AgentError::Transport {
            action: action.to_string(),
            message: "no server configured".into(),
        };
        for _ in 0..n {
            let i = self.current % n;
            match call(&mut self.planes[i]) {
                Err(e) if fails_over(&e) => {
                    last = e;
                    self.current = (i + 1) % n;
                }
                other => return other,
            }
        }
        Err(last)
    }
}

/// Whether another server may do better: this one was unreachable, or its
/// database was (`InternalError`).
fn fails_over(e: &AgentError) -> bool {
    matches!(e, AgentError::Transport { .. }) || e.api_code() == Some("InternalError")
}

impl<C: ControlPlane> ControlPlane for Failover<C> {
    fn ruleset(
        &mut self,
        instance_id: &str,
        after: Option<u64>,
        wait: Duration,
    ) -> Result<InstanceRuleset, AgentError> {
        self.each("DescribeInstanceRuleset", |c| {
            c.ruleset(instance_id, after, wait)
        })
    }

    fn register(&mut self, instance_id: &str, private_ips: &[String]) -> Result<(), AgentError> {
        self.each("RegisterInstances", |c| {
            c.register(instance_id, private_ips)
        })
    }

    fn report(&mut self, status: &AgentStatus) -> Result<(), AgentError> {
        self.each("ReportInstanceStatus", |c| c.report(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that is down, or up and answering an empty ruleset.
    struct Fake {
        up: bool,
        calls: usize,
    }

    impl ControlPlane for Fake {
        fn ruleset(
            &mut self,
            instance_id: &str,
            _after: Option<u64>,
            _wait: Duration,
        ) -> Result<InstanceRuleset, AgentError> {
            self.calls += 1;
            if !self.up {
                return Err(AgentError::Transport {
                    action: "DescribeInstanceRuleset".into(),
                    message: "connection refused".into(),
                });
            }
            serde_json::from_value(serde_json::json!({
                "InstanceId": instance_id, "Revision": 1, "Changed": true,
                "Ingress": [], "Egress": []
            }))
            .map_err(|e| AgentError::BadRuleset(e.to_string()))
        }

        fn register(&mut self, _: &str, _: &[String]) -> Result<(), AgentError> {
            Err(AgentError::Api {
                action: "RegisterInstances".into(),
                code: "AuthFailure.UnauthorizedOperation".into(),
                message: "no".into(),
            })
        }

        fn report(&mut self, _: &AgentStatus) -> Result<(), AgentError> {
            Ok(())
        }
    }

    #[test]
    fn a_down_server_fails_over_and_the_answering_one_is_kept() {
        let mut f = Failover::new(vec![
            Fake {
                up: false,
                calls: 0,
            },
            Fake { up: true, calls: 0 },
        ]);
        assert!(f.ruleset("ins-1", None, Duration::ZERO).is_ok());
        assert_eq!(f.current(), 1);
        assert!(f.ruleset("ins-1", None, Duration::ZERO).is_ok());
        assert_eq!((f.planes[0].calls, f.planes[1].calls), (1, 2));
    }

    #[test]
    fn every_server_down_is_one_failure_and_request_errors_do_not_fail_over() {
        let mut f = Failover::new(vec![
            Fake {
                up: false,
                calls: 0,
            },
            Fake {
                up: false,
                calls: 0,
            },
        ]);
        assert!(matches!(
            f.ruleset("ins-1", None, Duration::ZERO),
            Err(AgentError::Transport { .. })
        ));
        assert_eq!((f.planes[0].calls, f.planes[1].calls), (1, 1));
        f.planes[0].up = true;
        // A refusal is the answer of the whole (shared) control plane.
        assert!(f.register("ins-1", &[]).is_err());
        let empty: Failover<Fake> = Failover::new(vec![]);
        let mut empty = empty;
        assert!(empty.ruleset("ins-1", None, Duration::ZERO).is_err());
    }
}
