//! Maps paths inside a YAML (or JSON) document, such as
//! `security_groups[0].policies.Ingress[2].Port`, to the line they start on,
//! so that validation problems and SARIF results point into the file. The
//! index comes from the same event stream as the value (`crate::yaml`).

use std::collections::HashMap;

/// Path-to-line index of one document.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

impl LineIndex {
    /// Indexes `text`; a document that does not parse gives an empty index.
    pub fn new(text: &str) -> Self {
        // A syntax error is reported by `yaml::parse`; lines found so far stay.
        LineIndex::from_lines(crate::yaml::index(text))
    }

    pub(crate) fn from_lines(lines: HashMap<String, usize>) -> Self {
        LineIndex { lines }
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
