//! Reading an action's JSON parameters with Tencent's error codes: unknown
//! top-level names give `UnknownParameter`, absent required ones
//! `MissingParameter`, wrong JSON types `InvalidParameter`. Numbers that
//! Tencent's metadata types as strings (`Offset`, `Limit`) are taken either
//! way, as the SDKs and tccli send both.

use crate::error::ApiError;
use palisade_model::wire;
use palisade_model::ErrorCode;
use palisade_store::Tag;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// One request's parameters.
#[derive(Debug)]
pub struct Params {
    map: Map<String, Value>,
}

/// A `{Name, Values}` filter.
#[derive(Debug, Clone)]
pub struct Filter {
    /// Filter name, e.g. `security-group-id`.
    pub name: String,
    /// Values; a record matches if it matches any of them.
    pub values: Vec<String>,
}

impl Params {
    /// Parses the request body: an empty body is `{}`, anything else must be
    /// a JSON object.
    pub fn from_body(body: &[u8]) -> Result<Self, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self { map: Map::new() });
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(Self { map }),
            Ok(_) => Err(ApiError::new(
                ErrorCode::InvalidParameter,
                "the request body must be a JSON object",
            )),
            Err(e) => Err(ApiError::new(
                ErrorCode::InvalidParameter,
                format!("the request body is not valid JSON: {e}"),
            )),
        }
    }

    /// The parameters as sent, for checks that precede reading them (the
    /// bounds of every list, `actions::bounds`).
    pub fn raw(&self) -> &Map<String, Value> {
        &self.map
    }

    /// Fails with `UnknownParameter` on the first name not in `known`.
    pub fn allow_only(&self, known: &[&str]) -> Result<(), ApiError> {
        for k in self.map.keys() {
            if !known.contains(&k.as_str()) {
                return Err(ApiError::new(
                    ErrorCode::UnknownParameter,
                    format!("the parameter `{k}` is not recognized by this action"),
                ));
            }
        }
        Ok(())
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    /// Whether `name` was sent (and is not null).
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// A required string.
    pub fn req_str(&self, name: &str) -> Result<String, ApiError> {
        self.opt_str(name)?.ok_or_else(|| ApiError::missing(name))
    }

    /// An optional string. A number is refused (`InvalidParameter`), as
    /// Tencent refuses `"GroupName": 123`.
    pub fn opt_str(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(type_error(name, "a string")),
        }
    }

    /// A required, non-empty list of strings.
    pub fn req_str_list(&self, name: &str) -> Result<Vec<String>, ApiError> {
        let list = self
            .opt_str_list(name)?
            .ok_or_else(|| ApiError::missing(name))?;
        if list.is_empty() {
            return Err(ApiError::new(
                ErrorCode::InvalidParameterValueEmpty,
                format!("{name} must not be empty"),
            ));
        }
        Ok(list)
    }

    /// An optional list of strings.
    pub fn opt_str_list(&self, name: &str) -> Result<Option<Vec<String>>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(type_error(name, "a list of strings")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(type_error(name, "a list of strings")),
        }
    }

    /// An optional non-negative integer, sent as a number or a decimal string.
    pub fn opt_uint(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
                ApiError::malformed(name, &n.to_string(), "expected a non-negative integer")
            }),
            Some(Value::String(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| ApiError::malformed(name, s, "expected a non-negative integer")),
            Some(_) => Err(type_error(name, "an integer")),
        }
    }

    /// An optional boolean.
    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(type_error(name, "a boolean")),
        }
    }

    /// An optional structured value (a wire type). Unknown nested fields give
    /// `UnknownParameter`, other shape errors `InvalidParameter`; both name
    /// the field by its dotted path, as Tencent does
    /// (`SecurityGroupPolicySet.Ingress.2.Port`).
    pub fn opt_typed<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, ApiError> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        serde_path_to_error::deserialize(v).map(Some).map_err(|e| {
            let mut path = name.to_string();
            for segment in e.path().iter() {
                match segment {
                    serde_path_to_error::Segment::Seq { index } => {
                        path.push_str(&format!(".{index}"))
                    }
                    serde_path_to_error::Segment::Map { key } => path.push_str(&format!(".{key}")),
                    serde_path_to_error::Segment::Enum { variant } => {
                        path.push_str(&format!(".{variant}"))
                    }
                    serde_path_to_error::Segment::Unknown => {}
                }
            }
            let msg = e.inner().to_string();
            if msg.starts_with("unknown field") {
                ApiError::new(ErrorCode::UnknownParameter, format!("{path}: {msg}"))
            } else {
                ApiError::new(ErrorCode::InvalidParameter, format!("{path}: {msg}"))
            }
        })
    }

    /// An optional `SecurityGroupPolicySet`-shaped value, with Tencent's JSON
    /// types: a number where a string is documented is `InvalidParameter`
    /// naming the field ([`wire::check_api_types`]).
    pub fn opt_policy_set(
        &self,
        name: &str,
    ) -> Result<Option<wire::SecurityGroupPolicySet>, ApiError> {
        let set = self.opt_typed(name)?;
        if let Some(v) = self.get(name) {
            wire::check_api_types(v)
                .map_err(|m| type_error(&format!("{name}.{}", m.path), m.expected))?;
        }
        Ok(set)
    }

    /// A required structured value.
    pub fn req_typed<T: DeserializeOwned>(&self, name: &str) -> Result<T, ApiError> {
        self.opt_typed(name)?.ok_or_else(|| ApiError::missing(name))
    }

    /// `Filters`: `[{Name, Values}]`; names must be in `known` (a name ending
    /// in `:` matches any suffix, for `tag:<key>`).
    pub fn filters(&self, known: &[&str]) -> Result<Vec<Filter>, ApiError> {
        let Some(v) = self.get("Filters") else {
            return Ok(Vec::new());
        };
        let items = v
            .as_array()
            .ok_or_else(|| type_error("Filters", "a list"))?;
        let mut out = Vec::new();
        for item in items {
            let obj = item
                .as_object()
                .ok_or_else(|| type_error("Filters", "a list of {Name, Values}"))?;
            for k in obj.keys() {
                if k != "Name" && k != "Values" {
                    return Err(ApiError::new(
                        ErrorCode::UnknownParameter,
                        format!("Filters: the parameter `{k}` is not recognized"),
                    ));
                }
            }
            let name = obj
                .get("Name")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::missing("Filters.Name"))?
                .to_string();
            let ok = known.iter().any(|k| match k.strip_suffix(':') {
                // `tag:` stands for `tag:<key>` with a non-empty key.
                Some(_) => name.starts_with(k) && name.len() > k.len(),
                None => *k == name,
            });
            if !ok {
                return Err(ApiError::new(
                    ErrorCode::InvalidParameterFilterInvalidKey,
                    format!(
                        "Filters.Name {name:?}: unknown filter; known: {}",
                        known.join(", ")
                    ),
                ));
            }
            let values = match obj.get("Values") {
                Some(Value::Array(vals)) => vals
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s.clone()),
                        Value::Number(n) => Ok(n.to_string()),
                        Value::Bool(b) => Ok(b.to_string()),
                        _ => Err(type_error("Filters.Values", "a list of strings")),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                None => return Err(ApiError::missing("Filters.Values")),
                Some(_) => return Err(type_error("Filters.Values", "a list of strings")),
            };
            out.push(Filter { name, values });
        }
        Ok(out)
    }

    /// `Tags`: `[{Key, Value}]`.
    pub fn tags(&self) -> Result<Vec<Tag>, ApiError> {
        let tags: Option<Vec<Tag>> = self.opt_typed("Tags")?;
        let tags = tags.unwrap_or_default();
        let keys: Vec<&str> = tags.iter().map(|t| t.key.as_str()).collect();
        bounded_list("Tags", &keys, MAX_TAGS)?;
        for t in &tags {
            if t.key.is_empty() {
                return Err(ApiError::new(
                    ErrorCode::InvalidParameterValueEmpty,
                    "Tags.Key must not be empty",
                ));
            }
            for (field, value, max) in [
                ("Tags.Key", &t.key, MAX_TAG_KEY),
                ("Tags.Value", &t.value, MAX_TAG_VALUE),
            ] {
                if value.chars().count() > max {
                    return Err(ApiError::new(
                        ErrorCode::InvalidParameterValueTooLong,
                        format!("{field}: longer than {max} characters"),
                    ));
                }
            }
        }
        Ok(tags)
    }

    /// `Offset` and `Limit` with Tencent's defaults (0 and 20) and maximum.
    pub fn page(&self, max_limit: u64) -> Result<(usize, usize), ApiError> {
        let offset = self.opt_uint("Offset")?.unwrap_or(0);
        let limit = self.opt_uint("Limit")?.unwrap_or(20);
        if limit > max_limit {
            return Err(ApiError::new(
                ErrorCode::InvalidParameterValueRange,
                format!("Limit {limit}: must be at most {max_limit}"),
            ));
        }
        let to_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Ok((to_usize(offset), to_usize(limit)))
    }
}

/// At most this many tags on one resource (Tencent's tag limit).
pub const MAX_TAGS: usize = 50;
/// Longest tag key, in characters.
pub const MAX_TAG_KEY: usize = 127;
/// Longest tag value, in characters.
pub const MAX_TAG_VALUE: usize = 255;

/// A list parameter holds at most `max` items and names none twice:
/// `InvalidParameterValue.LimitExceeded` or `.Duplicate` otherwise. The
/// length is checked first, so a huge list costs no more than counting it.
pub fn bounded_list<T: AsRef<str>>(field: &str, items: &[T], max: usize) -> Result<(), ApiError> {
    if items.len() > max {
        return Err(ApiError::new(
            ErrorCode::InvalidParameterValueLimitExceeded,
            format!("{field}: {} items, at most {max}", items.len()),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for item in items {
        if !seen.insert(item.as_ref()) {
            return Err(ApiError::new(
                ErrorCode::InvalidParameterValueDuplicate,
                format!("{field}: {:?} is named twice", item.as_ref()),
            ));
        }
    }
    Ok(())
}

fn type_error(name: &str, expected: &str) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidParameter,
        format!("{name} must be {expected}"),
    )
}

/// The `[offset, offset+limit)` window of `items`.
pub fn paginate<T>(items: Vec<T>, offset: usize, limit: usize) -> Vec<T> {
    items.into_iter().skip(offset).take(limit).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(json: &str) -> Params {
        Params::from_body(json.as_bytes()).expect("object")
    }

    #[test]
    fn bounded_lists_refuse_too_many_and_duplicates() {
        assert!(bounded_list("Ids", &["a", "b"], 2).is_ok());
        let code = |r: Result<(), ApiError>| r.unwrap_err().code.to_string();
        assert_eq!(
            code(bounded_list("Ids", &["a", "b", "c"], 2)),
            "InvalidParameterValue.LimitExceeded"
        );
        assert_eq!(
            code(bounded_list("Ids", &["a", "b", "a"], 5)),
            "InvalidParameterValue.Duplicate"
        );
    }

    #[test]
    fn tags_are_bounded_in_count_and_length() {
        let code = |json: String| params(&json).tags().unwrap_err().code.to_string();
        let many: Vec<String> = (0..=MAX_TAGS)
            .map(|i| format!(r#"{{"Key":"k{i}","Value":"v"}}"#))
            .collect();
        assert_eq!(
            code(format!(r#"{{"Tags":[{}]}}"#, many.join(","))),
            "InvalidParameterValue.LimitExceeded"
        );
        let long = "x".repeat(MAX_TAG_KEY + 1);
        assert_eq!(
            code(format!(r#"{{"Tags":[{{"Key":"{long}","Value":"v"}}]}}"#)),
            "InvalidParameterValue.TooLong"
        );
        assert_eq!(
            code(r#"{"Tags":[{"Key":"k","Value":"v","Extra":1}]}"#.into()),
            "UnknownParameter"
        );
        let ok = params(r#"{"Tags":[{"Key":"k","Value":"v"},{"Key":"j","Value":"v"}]}"#);
        assert_eq!(ok.tags().unwrap().len(), 2);
    }

    #[test]
    fn body_must_be_an_object_or_empty() {
        assert!(Params::from_body(b"").is_ok());
        assert!(Params::from_body(b"  \n").is_ok());
        for bad in [&b"[]"[..], b"1", b"{", b"\"x\""] {
            let err = Params::from_body(bad).expect_err("error");
            assert_eq!(err.code, "InvalidParameter");
        }
    }

    #[test]
    fn unknown_missing_and_mistyped_parameters() {
        let p = params(r#"{"A": "x", "N": 5, "L": ["a"], "B": true, "Z": null}"#);
        assert_eq!(
            p.allow_only(&["A", "N", "L", "B"]).expect_err("Z").code,
            "UnknownParameter"
        );
        assert_eq!(
            p.req_str("Missing").expect_err("missing").code,
            "MissingParameter"
        );
        assert_eq!(
            p.req_str("Z").expect_err("null is absent").code,
            "MissingParameter"
        );
        assert_eq!(
            p.req_str("N").expect_err("a number is not a string").code,
            "InvalidParameter"
        );
        assert_eq!(p.opt_str("L").expect_err("list").code, "InvalidParameter");
        assert_eq!(
            p.opt_str_list("A").expect_err("string").code,
            "InvalidParameter"
        );
        assert_eq!(p.opt_bool("B").expect("bool"), Some(true));
        assert_eq!(p.opt_uint("N").expect("uint"), Some(5));
        assert_eq!(
            p.opt_uint("A").expect_err("text").code,
            "InvalidParameterValue.Malformed"
        );
        let empty = params(r#"{"L": []}"#);
        assert_eq!(
            empty.req_str_list("L").expect_err("empty").code,
            "InvalidParameterValue.Empty"
        );
    }

    #[test]
    fn filters_and_pages() {
        let p = params(
            r#"{"Filters": [{"Name": "tag:env", "Values": ["prod", 1]}], "Offset": "2", "Limit": 3}"#,
        );
        let f = p.filters(&["security-group-id", "tag:"]).expect("filters");
        assert_eq!(f[0].name, "tag:env");
        assert_eq!(f[0].values, vec!["prod", "1"]);
        assert_eq!(p.page(100).expect("page"), (2, 3));
        assert_eq!(
            p.filters(&["security-group-id"]).expect_err("unknown").code,
            "InvalidParameter.FilterInvalidKey"
        );
        let bare_tag = params(r#"{"Filters": [{"Name": "tag:", "Values": []}]}"#);
        assert!(bare_tag.filters(&["tag:"]).is_err());
        let extra = params(r#"{"Filters": [{"Name": "x", "Values": [], "Op": "eq"}]}"#);
        assert_eq!(
            extra.filters(&["x"]).expect_err("op").code,
            "UnknownParameter"
        );
        assert_eq!(
            params(r#"{"Limit": "101"}"#)
                .page(100)
                .expect_err("big")
                .code,
            "InvalidParameterValue.Range"
        );
        assert_eq!(params("{}").page(100).expect("defaults"), (0, 20));
        assert_eq!(paginate(vec![1, 2, 3, 4], 1, 2), vec![2, 3]);
        assert!(paginate(vec![1], 5, 2).is_empty());
    }
}
