//! Maps paths inside a YAML (or JSON) document, such as
//! `security_groups[0].policies.Ingress[2].Port`, to the line they start on,
//! so that validation problems and SARIF results point into the file.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Path-to-line index of one document.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

impl LineIndex {
    /// Indexes `text`; a document that does not parse gives an empty index.
    pub fn new(text: &str) -> Self {
        let mut rx = Receiver::default();
        let mut parser = Parser::new_from_str(text);
        // A syntax error is reported by the serde parse; lines found so far stay.
        let _ = parser.load(&mut rx, false);
        LineIndex { lines: rx.lines }
    }

    /// The 1-based line where `path` starts, or of its nearest indexed
    /// ancestor (`a.b[3].c` -> `a.b[3]` -> `a.b` -> `a`).
    pub fn line(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(*l);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

enum Frame {
    Map { prefix: String, key: Option<String> },
    Seq { prefix: String, next: usize },
}

#[derive(Default)]
struct Receiver {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
}

impl Receiver {
    /// The path of the value about to start, advancing the parent frame.
    fn value_path(&mut self) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { prefix, next }) => {
                let p = format!("{prefix}[{next}]");
                *next += 1;
                Some(p)
            }
            Some(Frame::Map { prefix, key }) => key.take().map(|k| {
                if prefix.is_empty() {
                    k
                } else {
                    format!("{prefix}.{k}")
                }
            }),
        }
    }

    fn is_key_position(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }
}

impl MarkedEventReceiver for Receiver {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, ..) => {
                if self.is_key_position() {
                    if let Some(Frame::Map { prefix, key }) = self.stack.last_mut() {
                        let path = if prefix.is_empty() {
                            value.clone()
                        } else {
                            format!("{prefix}.{value}")
                        };
                        self.lines.entry(path).or_insert(mark.line());
                        *key = Some(value);
                    }
                } else if let Some(p) = self.value_path() {
                    self.lines.entry(p).or_insert(mark.line());
                }
            }
            Event::Alias(_) => {
                self.value_path();
            }
            Event::SequenceStart(..) => {
                let prefix = self.value_path().unwrap_or_default();
                self.lines.entry(prefix.clone()).or_insert(mark.line());
                self.stack.push(Frame::Seq { prefix, next: 0 });
            }
            Event::MappingStart(..) => {
                let prefix = self.value_path().unwrap_or_default();
                self.lines.entry(prefix.clone()).or_insert(mark.line());
                self.stack.push(Frame::Map { prefix, key: None });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_lines_of_nested_paths() {
        let text = "a:\n  b:\n    - x: 1\n      y: 2\n    - x: 3\nc: [1, 2]\n";
        let idx = LineIndex::new(text);
        assert_eq!(idx.line("a"), Some(1));
        assert_eq!(idx.line("a.b[0].y"), Some(4));
        assert_eq!(idx.line("a.b[1]"), Some(5));
        assert_eq!(idx.line("a.b[1].x"), Some(5));
        assert_eq!(idx.line("c[1]"), Some(6));
        assert_eq!(idx.line("a.b[1].nothing"), Some(5));
    }

    #[test]
    fn works_on_json() {
        let text = "{\n \"a\": [\n  {\"b\": 1},\n  {\"b\": 2}\n ]\n}\n";
        let idx = LineIndex::new(text);
        assert_eq!(idx.line("a[1].b"), Some(4));
    }
}
