//! `palisade bench console`: the server time of the web console's two
//! heaviest pages (issue 21): the security-groups list of an account with
//! `--groups` groups (first page and a middle page, 50 rows each, with rule
//! counts, bound instances and referrers) and a group page with `--rules`
//! ingress rules (each with its hits and last use, from a report of an
//! instance bound to it). The pages are rendered in-process by
//! [`palisade_server::console::render_for_bench`], exactly as a GET
//! handler renders them (every read through the API's actions), over a
//! SQLite store in a temporary directory; HTTP and the session lookup (a
//! hash-map read) are not counted. The baselines are the one API call at
//! the heart of each page, made in-process the same way.

use anyhow::Context;
use palisade_model::limits::Limits;
use palisade_server::console::{call_as, render_for_bench};
use palisade_server::http::AppState;
use palisade_store::Location;
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

/// What to measure.
#[derive(Debug, Clone)]
pub struct ConsoleOptions {
    /// Groups in the account.
    pub groups: usize,
    /// Ingress rules of the measured group (at most the default limit, 100).
    pub rules: usize,
    /// Renders of each page.
    pub runs: usize,
}

/// One page's render times.
#[derive(Debug, Clone, Serialize)]
pub struct PageTimes {
    /// The page, as its path and query.
    pub page: String,
    /// Bytes of HTML.
    pub bytes: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct ConsoleReport {
    /// Groups in the account.
    pub groups: usize,
    /// Ingress rules of the measured group.
    pub rules: usize,
    /// Renders of each page.
    pub runs: usize,
    /// Each page's times.
    pub pages: Vec<PageTimes>,
}

/// Builds the account and times the pages.
pub fn run(opts: &ConsoleOptions, log: &mut dyn FnMut(&str)) -> anyhow::Result<ConsoleReport> {
    let dir = tempfile::tempdir().context("making a temporary directory")?;
    let store = palisade_store::open(&Location::Sqlite(dir.path().join("palisade.db")))
        .context("opening the store")?;
    let account = store
        .create_account("bench")
        .context("creating the account")?;
    let mut limits = Limits::default();
    limits.groups_per_project = limits.groups_per_project.max(opts.groups + 1);
    let app = Arc::new(AppState::new(store, limits));
    let call = |action: &str, params: serde_json::Value| {
        call_as(&app, &account.id, action, params)
            .map_err(|e| anyhow::anyhow!("{action}: {}: {}", e.code, e.message))
    };
    log(&format!("creating {} groups", opts.groups));
    let mut first = String::new();
    for n in 0..opts.groups.max(1) {
        let answer = call(
            "CreateSecurityGroupWithPolicies",
            json!({
                "GroupName": format!("group-{n:05}"),
                "GroupDescription": "bench",
                "SecurityGroupPolicySet": {
                    "Ingress": [
                        { "Protocol": "TCP", "Port": "22", "CidrBlock": "10.0.0.0/8", "Action": "ACCEPT" },
                        { "Protocol": "TCP", "Port": "443", "CidrBlock": "0.0.0.0/0", "Action": "ACCEPT" },
                    ],
                    "Egress": [ { "Protocol": "ALL", "CidrBlock": "0.0.0.0/0", "Action": "ACCEPT" } ],
                },
            }),
        )?;
        if n == 0 {
            first = answer["SecurityGroup"]["SecurityGroupId"]
                .as_str()
                .unwrap_or_default()
                .to_string();
        }
    }
    log(&format!("adding {} ingress rules to {first}", opts.rules));
    let rules: Vec<_> = (0..opts.rules.saturating_sub(2))
        .map(|i| {
            json!({ "Protocol": "TCP", "Port": (1000 + i).to_string(),
                    "CidrBlock": format!("198.18.{}.0/24", i % 256), "Action": "ACCEPT",
                    "PolicyDescription": format!("rule {i}") })
        })
        .collect();
    if !rules.is_empty() {
        call(
            "CreateSecurityGroupPolicies",
            json!({ "SecurityGroupId": first, "SecurityGroupPolicySet": { "Ingress": rules } }),
        )?;
    }
    // Every rule of the group has hits: an instance applying it reports
    // a counter for each, as its agent would.
    let registered = call(
        "RegisterInstances",
        json!({ "Instances": [{ "PrivateIpAddresses": ["10.0.0.1"] }] }),
    )?;
    let instance = registered["InstanceIdSet"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    call(
        "AssociateSecurityGroups",
        json!({ "SecurityGroupIds": [first], "InstanceIds": [instance] }),
    )?;
    let counters: Vec<_> = (0..opts.rules.max(2))
        .map(|i| {
            json!({ "SecurityGroupId": first, "Direction": "ingress", "PolicyIndex": i,
                    "Packets": 10 + i, "Bytes": 1000 + i })
        })
        .collect();
    call(
        "ReportInstanceStatus",
        json!({ "InstanceId": instance, "AppliedRevision": 1, "Counters": counters }),
    )?;
    // Page numbers in the console's URLs count from 1.
    let middle = (opts.groups / 50 / 2 + 1).to_string();
    let pages = [
        ("groups".to_string(), String::new()),
        ("groups".to_string(), format!("page={middle}")),
        (format!("groups/{first}"), String::new()),
    ];
    let mut out = Vec::new();
    let mut time = |page: String, f: &mut dyn FnMut() -> anyhow::Result<usize>| {
        let mut times = Vec::with_capacity(opts.runs);
        let mut bytes = 0;
        for _ in 0..opts.runs.max(1) {
            let t = Instant::now();
            bytes = f()?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        log(&format!("{page}: p50 {:.2} ms", at(0.5)));
        out.push(PageTimes {
            page,
            bytes,
            p50_ms: at(0.5),
            p90_ms: at(0.9),
            max_ms: at(1.0),
        });
        anyhow::Ok(())
    };
    for (path, query) in pages {
        let page = if query.is_empty() {
            format!("/console/{path}")
        } else {
            format!("/console/{path}?{query}")
        };
        time(page, &mut || {
            render_for_bench(app.clone(), &account.id, &path, &query)
                .map_err(|e| anyhow::anyhow!(e))
        })?;
    }
    // Baselines: the one API call at the heart of each page, as a client
    // would make it (in-process, without HTTP), its JSON answer's size.
    for (label, action, params) in [
        (
            "baseline: DescribeSecurityGroups, Limit 50",
            "DescribeSecurityGroups",
            json!({ "Limit": "50" }),
        ),
        (
            "baseline: DescribeSecurityGroupPolicies of that group",
            "DescribeSecurityGroupPolicies",
            json!({ "SecurityGroupId": first }),
        ),
    ] {
        time(label.to_string(), &mut || {
            let answer = call(action, params.clone())?;
            Ok(serde_json::to_vec(&answer)?.len())
        })?;
    }
    Ok(ConsoleReport {
        groups: opts.groups,
        rules: opts.rules,
        runs: opts.runs,
        pages: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_run_renders_every_page() {
        let r = run(
            &ConsoleOptions {
                groups: 3,
                rules: 5,
                runs: 2,
            },
            &mut |_| {},
        )
        .expect("the benchmark runs");
        assert_eq!(r.pages.len(), 5, "three pages and two baselines");
        assert!(r.pages[..3]
            .iter()
            .all(|p| p.bytes > 1000 && p.max_ms >= p.p50_ms));
    }
}
