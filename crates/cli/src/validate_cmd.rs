//! `palisade validate FILE`: checks a fleet file, or a security group's
//! rules as tccli prints them (`DescribeSecurityGroupPolicies` output, with
//! or without its `Response` envelope, or a bare `SecurityGroupPolicySet`).
//! Exit 0 when valid; 1 with one line per problem (file:line, path, Tencent
//! code, message naming the field and value); 2 when the file cannot be read.
//! A valid file may still carry warnings (a rule that can never match, such
//! as ICMP with an IPv6 peer): printed, and `warnings` in the JSON, without
//! changing the exit code.

use crate::output::{print_json, Format};
use clap::Args;
use palisade_model::locate::LineIndex;
use palisade_model::{check_policy_set, wire, ErrorCode, Fleet, Limits, ModelError, Problem};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;

/// `palisade validate`.
#[derive(Args)]
pub struct ValidateArgs {
    /// A fleet file (YAML or JSON) or a tccli-printed group policy JSON.
    file: PathBuf,
    /// table or json.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

#[derive(Serialize)]
struct Report {
    file: String,
    kind: &'static str,
    valid: bool,
    problems: Vec<ProblemJson>,
    warnings: Vec<ProblemJson>,
}

#[derive(Serialize)]
struct ProblemJson {
    line: Option<usize>,
    path: String,
    code: String,
    message: String,
}

/// The keys that make a document a fleet file.
const FLEET_KEYS: [&str; 8] = [
    "security_groups",
    "address_templates",
    "address_template_groups",
    "service_templates",
    "service_template_groups",
    "instances",
    "clusters",
    "limits",
];

/// Runs `validate`.
pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.file.display()))?;
    let (kind, result) = validate_text(&text);
    let problems = result.err().unwrap_or_default();
    let warnings = if problems.is_empty() {
        warnings_of(&text)
    } else {
        Vec::new()
    };
    let name = args.file.display().to_string();
    let json = |list: &[Problem]| -> Vec<ProblemJson> {
        list.iter()
            .map(|p| ProblemJson {
                line: p.line,
                path: p.path.clone(),
                code: p.error.code().to_string(),
                message: p.error.message().to_string(),
            })
            .collect()
    };
    match args.output {
        Format::Json => print_json(&Report {
            file: name.clone(),
            kind,
            valid: problems.is_empty(),
            problems: json(&problems),
            warnings: json(&warnings),
        })?,
        Format::Table => {
            for w in &warnings {
                let at = match w.line {
                    Some(l) => format!("{name}:{l}"),
                    None => name.clone(),
                };
                println!("{at}: {}: warning: {}", w.path, w.error.message());
            }
            for p in &problems {
                let at = match p.line {
                    Some(l) => format!("{name}:{l}"),
                    None => name.clone(),
                };
                let path = if p.path.is_empty() {
                    String::new()
                } else {
                    format!(" {}:", p.path)
                };
                println!("{at}:{path} {}", p.error);
            }
            if problems.is_empty() {
                println!("{name}: valid {kind}");
            } else {
                eprintln!("{name}: {} problem(s)", problems.len());
            }
        }
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The warnings of a valid document: rules that can never match because
/// their protocol cannot occur with their literal peer's address family
/// (`Policy::impossible_family`; `check` reports them as ANO004, references
/// included). The code of each is `InvalidParameterValue` only for shape:
/// nothing is refused.
pub fn warnings_of(text: &str) -> Vec<Problem> {
    let lines = LineIndex::new(text);
    let mut out = Vec::new();
    let mut push = |path: String, why: String| {
        out.push(Problem {
            line: lines.line(&path),
            path,
            error: ModelError::new(ErrorCode::InvalidParameterValue, why),
        });
    };
    if let Ok(fleet) = Fleet::parse(text) {
        for (i, g) in fleet.security_groups.iter().enumerate() {
            for d in palisade_model::Direction::BOTH {
                for (j, rule) in g.policies.rules(d).iter().enumerate() {
                    if let Some(why) = rule.impossible_family() {
                        push(
                            format!("security_groups[{i}].policies.{}[{j}]", d.wire_name()),
                            why,
                        );
                    }
                }
            }
        }
        return out;
    }
    let Ok(doc) = palisade_model::yaml::parse(text) else {
        return out;
    };
    let mut prefix = String::new();
    let mut inner = &doc.value;
    if let Some(r) = doc.value.get("Response") {
        prefix.push_str("Response.");
        inner = r;
    }
    if let Some(set) = inner.get("SecurityGroupPolicySet") {
        prefix.push_str("SecurityGroupPolicySet.");
        inner = set;
    }
    let Ok(set) = serde_json::from_value::<wire::SecurityGroupPolicySet>(inner.clone()) else {
        return out;
    };
    if let Ok(set) = palisade_model::PolicySet::from_wire(&set) {
        for d in palisade_model::Direction::BOTH {
            for (j, rule) in set.rules(d).iter().enumerate() {
                if let Some(why) = rule.impossible_family() {
                    push(format!("{prefix}{}[{j}]", d.wire_name()), why);
                }
            }
        }
    }
    out
}

/// Detects what `text` is and validates it: the kind and the problems.
pub fn validate_text(text: &str) -> (&'static str, Result<(), Vec<Problem>>) {
    let doc = match palisade_model::yaml::parse(text) {
        Ok(d) => d,
        Err(e) => {
            return (
                "document",
                Err(vec![Problem {
                    path: String::new(),
                    line: e.line,
                    error: ModelError::new(ErrorCode::InvalidParameter, e.message),
                }]),
            )
        }
    };
    let value = &doc.value;
    let top = value.as_object();
    let has = |k: &str| top.is_some_and(|m| m.contains_key(k));
    if value.is_null() || FLEET_KEYS.iter().any(|k| has(k)) {
        return ("fleet file", Fleet::parse(text).map(|_| ()));
    }
    // tccli prints the Response's content; SDK dumps keep the envelope.
    let (mut prefix, mut inner) = (String::new(), value);
    if let Some(r) = top.and_then(|m| m.get("Response")) {
        prefix.push_str("Response.");
        inner = r;
    }
    if let Some(s) = inner.get("SecurityGroupPolicySet") {
        prefix.push_str("SecurityGroupPolicySet");
        inner = s;
    } else if prefix.ends_with('.') {
        prefix.pop();
    }
    let lines = &doc.lines;
    let set: wire::SecurityGroupPolicySet =
        match palisade_model::yaml::from_value(inner.clone(), lines, &prefix) {
            Ok(s) => s,
            Err(e) => {
                return (
                    "security group policy set",
                    Err(vec![Problem {
                        path: prefix.clone(),
                        line: lines.line(&prefix),
                        error: ModelError::new(
                            ErrorCode::InvalidParameter,
                            format!(
                                "not a fleet file (no {}) nor a SecurityGroupPolicySet: {e}",
                                FLEET_KEYS[0]
                            ),
                        ),
                    }]),
                )
            }
        };
    let result = check_policy_set(&set, &Limits::default())
        .map(|_| ())
        .map_err(|errs| {
            errs.into_iter()
                .map(|(sub, error)| {
                    let path = format!("{prefix}{sub}").trim_start_matches('.').to_string();
                    Problem {
                        line: lines.line(&path),
                        path,
                        error,
                    }
                })
                .collect()
        });
    ("security group policy set", result)
}
