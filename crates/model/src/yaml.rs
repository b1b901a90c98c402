//! Reads YAML (and JSON, being YAML) with one parser, `yaml-rust2`'s event
//! parser, into a `serde_json::Value` and the [`LineIndex`] of the same
//! events, so that what a document means and where its parts sit cannot
//! disagree (docs/semantics.md, "The fleet file").
//!
//! Scalars are resolved by the YAML 1.2 core schema: `true`/`false` (any
//! case spelling the spec lists) are booleans, `yes`/`no`/`on`/`off` are
//! strings, `0o17` is octal and `017` the string "017", `~`/`null`/empty is
//! null. A quoted scalar or one tagged `!!str` is always a string. Keys are
//! scalars and a key given twice in one mapping is an error naming its line.
//! Aliases repeat their anchor's value; `<<` is an ordinary key (YAML 1.2
//! has no merge keys), which the typed files then refuse as unknown.

use crate::locate::LineIndex;
use serde::de::DeserializeOwned;
use serde_json::{Map, Number, Value};
use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A document that could not be read: bad syntax, a duplicate key, or a
/// value of the wrong shape for the type asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    /// The 1-based line the problem is on, when known.
    pub line: Option<usize>,
    /// What is wrong, with the line when known.
    pub message: String,
}

/// One read document: its value and where each of its paths starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The value; an empty document is `null`.
    pub value: Value,
    /// Path-to-line index from the same events as `value`.
    pub lines: LineIndex,
}

/// Reads `text`, which must hold at most one document.
pub fn parse(text: &str) -> Result<Document, YamlError> {
    let mut rx = Builder::default();
    let mut parser = Parser::new_from_str(text);
    let loaded = parser.load(&mut rx, true);
    if let Some(e) = rx.error {
        return Err(e);
    }
    if let Err(e) = loaded {
        return Err(YamlError {
            line: Some(e.marker().line()),
            message: format!(
                "{} at line {} column {}",
                e.info(),
                e.marker().line(),
                e.marker().col() + 1
            ),
        });
    }
    Ok(Document {
        value: rx.root.unwrap_or(Value::Null),
        lines: LineIndex::from_lines(rx.lines),
    })
}

/// The line index of `text`; what precedes a syntax error stays indexed.
pub(crate) fn index(text: &str) -> HashMap<String, usize> {
    let mut rx = Builder::default();
    let _ = Parser::new_from_str(text).load(&mut rx, true);
    rx.lines
}

/// Reads `text` as a `T`; a shape error names the path and its line.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    let doc = parse(text)?;
    from_document(&doc)
}

/// Deserializes an already-read document as a `T`.
pub fn from_document<T: DeserializeOwned>(doc: &Document) -> Result<T, YamlError> {
    from_value(doc.value.clone(), &doc.lines, "")
}

/// Deserializes `value`, found at `prefix` of a document indexed by `lines`.
pub fn from_value<T: DeserializeOwned>(
    value: Value,
    lines: &LineIndex,
    prefix: &str,
) -> Result<T, YamlError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let sub = e.path().to_string();
        let path = match (prefix, sub.as_str()) {
            (p, ".") => p.to_string(),
            ("", s) => s.to_string(),
            (p, s) if s.starts_with('[') => format!("{p}{s}"),
            (p, s) => format!("{p}.{s}"),
        };
        let line = lines.line(&path);
        let place = if path.is_empty() {
            String::new()
        } else {
            format!("{path}: ")
        };
        let at = line.map(|l| format!(" at line {l}")).unwrap_or_default();
        YamlError {
            line,
            message: format!("{place}{}{at}", e.into_inner()),
        }
    })
}

enum Frame {
    Map {
        map: Map<String, Value>,
        path: String,
        key: Option<String>,
        anchor: usize,
    },
    Seq {
        seq: Vec<Value>,
        path: String,
        anchor: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Value>,
    anchors: HashMap<usize, Value>,
    lines: HashMap<String, usize>,
    error: Option<YamlError>,
    /// Set once the first document's root is complete; a second is an error.
    done: bool,
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

impl Builder {
    fn fail(&mut self, line: usize, message: String) {
        if self.error.is_none() {
            self.error = Some(YamlError {
                line: Some(line),
                message: format!("{message} at line {line}"),
            });
        }
    }

    /// The path of the node about to start (the parent's pending key or next index).
    fn next_path(&self) -> String {
        match self.stack.last() {
            None => String::new(),
            Some(Frame::Seq { seq, path, .. }) => format!("{path}[{}]", seq.len()),
            Some(Frame::Map { path, key, .. }) => join(path, key.as_deref().unwrap_or("")),
        }
    }

    fn in_key_position(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }

    /// Puts a finished node into its parent (or makes it the document).
    fn place(&mut self, value: Value, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, value.clone());
        }
        match self.stack.last_mut() {
            None => {
                self.root = Some(value);
                self.done = true;
            }
            Some(Frame::Seq { seq, .. }) => seq.push(value),
            Some(Frame::Map { map, key, .. }) => {
                if let Some(k) = key.take() {
                    map.insert(k, value);
                }
            }
        }
    }

    /// A scalar in key position: refuses a duplicate, else records it.
    fn key(&mut self, name: String, line: usize) {
        let Some(Frame::Map { map, path, key, .. }) = self.stack.last_mut() else {
            return;
        };
        let full = join(path, &name);
        if map.contains_key(&name) {
            let first = self.lines.get(&full).copied();
            let was = first
                .map(|l| format!(" (first at line {l})"))
                .unwrap_or_default();
            let shown = if full.is_empty() { name } else { full };
            self.fail(line, format!("duplicate key `{shown}`{was}"));
            return;
        }
        *key = Some(name);
        self.lines.entry(full).or_insert(line);
    }

    fn event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                if self.in_key_position() {
                    if anchor > 0 {
                        self.anchors.insert(anchor, Value::String(text.clone()));
                    }
                    self.key(text, line);
                    return;
                }
                let path = self.next_path();
                self.lines.entry(path).or_insert(line);
                self.place(resolve(&text, style, tag.as_ref()), anchor);
            }
            Event::Alias(id) => {
                let Some(value) = self.anchors.get(&id).cloned() else {
                    return self.fail(line, "alias to an unknown anchor".to_string());
                };
                if self.in_key_position() {
                    match value {
                        Value::String(s) => self.key(s, line),
                        _ => self.fail(line, "a mapping key must be a scalar".to_string()),
                    }
                    return;
                }
                let path = self.next_path();
                self.lines.entry(path).or_insert(line);
                self.place(value, 0);
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if self.in_key_position() {
                    return self.fail(line, "a mapping key must be a scalar".to_string());
                }
                let path = self.next_path();
                self.lines.entry(path.clone()).or_insert(line);
                self.stack.push(if matches!(ev, Event::SequenceStart(..)) {
                    Frame::Seq {
                        seq: Vec::new(),
                        path,
                        anchor,
                    }
                } else {
                    Frame::Map {
                        map: Map::new(),
                        path,
                        key: None,
                        anchor,
                    }
                });
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq { seq, anchor, .. }) => self.place(Value::Array(seq), anchor),
                Some(Frame::Map { map, anchor, .. }) => self.place(Value::Object(map), anchor),
                None => {}
            },
            _ => {}
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        if !self.done {
            self.event(ev, mark);
        } else if matches!(ev, Event::DocumentStart) {
            // libyaml refused a stream, yaml-rust2 indexed it all; silently
            // reading only the first would drop the rest of the rules.
            self.fail(mark.line(), "a second document; give one".to_string());
        }
    }
}

/// The value of a scalar by the YAML 1.2 core schema.
fn resolve(text: &str, style: TScalarStyle, tag: Option<&Tag>) -> Value {
    let as_str = Value::String(text.to_string());
    if style != TScalarStyle::Plain {
        return as_str;
    }
    if let Some(t) = tag {
        if t.suffix == "str" {
            return as_str;
        }
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Some(n) = integer(text) {
        return n;
    }
    if is_float(text) {
        if let Some(n) = text.parse::<f64>().ok().and_then(Number::from_f64) {
            return Value::Number(n);
        }
    }
    as_str
}

/// `[-+]?[0-9]+` without a leading zero, `0o[0-7]+`, `0x[0-9a-fA-F]+`,
/// when it fits in 64 bits.
fn integer(text: &str) -> Option<Value> {
    let radix = |digits: &str, r: u32| {
        if digits.is_empty() || digits.starts_with(['+', '-']) {
            return None;
        }
        u64::from_str_radix(digits, r).ok().map(Value::from)
    };
    if let Some(d) = text.strip_prefix("0o") {
        return radix(d, 8);
    }
    if let Some(d) = text.strip_prefix("0x") {
        return radix(d, 16);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    // `017` is octal to YAML 1.1 and 17 to 1.2: kept as its text, as
    // serde_yaml read it, and as export writes such a string (quoted).
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    let unsigned = text.strip_prefix('+').unwrap_or(text);
    if let Ok(i) = unsigned.parse::<i64>() {
        return Some(Value::from(i));
    }
    unsigned.parse::<u64>().ok().map(Value::from)
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`; the infinities and
/// NaN stay strings, JSON having no such numbers.
fn is_float(text: &str) -> bool {
    let s = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = digits(int)
        && frac.is_none_or(digits)
        && (!int.is_empty() || frac.is_some_and(|f| !f.is_empty()));
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    // Bare digits are integers or, with a leading zero, strings.
    let bare = frac.is_none() && exp.is_none();
    mantissa_ok && exp_ok && !bare
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resolves_scalars_by_yaml_1_2() {
        let text = "a: yes\nb: on\nc: 017\nd: 0o17\ne: ~\nf: True\ng: '1'\nh: !!str 2\ni: 1.5\nj: 0x1F\nk: -3\nl: .inf\n";
        let doc = parse(text).unwrap();
        assert_eq!(
            doc.value,
            json!({"a": "yes", "b": "on", "c": "017", "d": 15, "e": null, "f": true,
                   "g": "1", "h": "2", "i": 1.5, "j": 31, "k": -3, "l": ".inf"})
        );
    }

    #[test]
    fn values_and_lines_come_from_one_stream() {
        let text = "a:\n  b:\n    - x: 1\n      y: 2\n    - x: 3\nc: [1, 2]\n";
        let doc = parse(text).unwrap();
        assert_eq!(
            doc.value,
            json!({"a": {"b": [{"x": 1, "y": 2}, {"x": 3}]}, "c": [1, 2]})
        );
        assert_eq!(doc.lines.line("a.b[1].x"), Some(5));
        assert_eq!(doc.lines.line("c[1]"), Some(6));
    }

    #[test]
    fn duplicate_key_is_an_error_naming_its_line() {
        let e = parse("a:\n  b: 1\n  c: 2\n  b: 3\n").unwrap_err();
        assert_eq!(e.line, Some(4));
        assert!(e.message.contains("duplicate key `a.b`"), "{e}");
        assert!(e.message.contains("first at line 2"), "{e}");
    }

    #[test]
    fn second_document_is_an_error_naming_its_line() {
        let e = parse("a: 1\n---\na: 2\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
    }

    #[test]
    fn aliases_repeat_their_anchor() {
        let doc = parse("a: &x {p: 1}\nb: *x\n").unwrap();
        assert_eq!(doc.value, json!({"a": {"p": 1}, "b": {"p": 1}}));
    }

    #[test]
    fn syntax_error_names_its_line() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.line.is_some(), "{e}");
    }

    #[test]
    fn shape_error_names_path_and_line() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        struct T {
            #[allow(dead_code)]
            a: Vec<u8>,
        }
        let e = from_str::<T>("a:\n  - 1\n  - x\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.message.starts_with("a[1]: "), "{e}");
    }
}
