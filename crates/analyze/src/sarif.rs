//! Findings as SARIF 2.1.0 (the OASIS Static Analysis Results Interchange
//! Format), for code-scanning UIs: one run, the tool `palisade` with one
//! reporting rule per check id, one result per finding located at its line
//! in the fleet file.

use crate::finding::{CheckId, Finding};
use serde_json::{json, Value};

/// The `$schema` of SARIF 2.1.0.
pub const SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

/// The SARIF log for `findings` about the fleet file at `uri` (as given on
/// the command line; relative paths stay relative).
pub fn to_sarif(findings: &[Finding], uri: &str) -> Value {
    let rules: Vec<Value> = CheckId::ALL
        .iter()
        .map(|id| {
            json!({
                "id": id.as_str(),
                "name": id.name(),
                "shortDescription": {"text": id.title()},
                "fullDescription": {"text": id.title()},
                "defaultConfiguration": {"level": id.severity().sarif_level()},
            })
        })
        .collect();
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            let mut physical = json!({"artifactLocation": {"uri": uri}});
            if let Some(line) = f.location.line.filter(|l| *l >= 1) {
                physical["region"] = json!({"startLine": line});
            }
            let mut location = json!({"physicalLocation": physical});
            let logical: Vec<Value> = [
                (&f.location.cluster, "cluster"),
                (&f.location.instance, "instance"),
                (&f.location.group, "securityGroup"),
            ]
            .into_iter()
            .filter_map(|(v, kind)| v.as_ref().map(|v| json!({"name": v, "kind": kind})))
            .chain(
                f.location
                    .rule
                    .as_ref()
                    .map(|r| json!({"name": r.to_string(), "kind": "rule"})),
            )
            .collect();
            if !logical.is_empty() {
                location["logicalLocations"] = Value::Array(logical);
            }
            let index = CheckId::ALL.iter().position(|i| *i == f.id).unwrap_or(0);
            let mut result = json!({
                "ruleId": f.id.as_str(),
                "ruleIndex": index,
                "level": f.severity.sarif_level(),
                "message": {"text": f.message},
                "locations": [location],
            });
            if let Some(w) = &f.witness {
                result["properties"] = json!({"witness": w});
            }
            result
        })
        .collect();
    json!({
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "palisade",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "results": results,
        }],
    })
}
