//! The crate's errors: input that cannot be analysed at all (exit 2 in the
//! CLI), as opposed to findings, which are answers.

use palisade_model::Problem;

/// A fleet file that cannot be analysed: it does not parse, or it has
/// problems other than missing references and exceeded limits (which
/// [`crate::load`] turns into findings).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The text is not a fleet file (YAML or JSON syntax, unknown field, wrong shape).
    #[error("{}not a fleet file: {message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
    Syntax {
        /// 1-based line of the error, when known.
        line: Option<usize>,
        /// What the parser said.
        message: String,
    },
    /// The file has problems that leave nothing sound to analyse (a
    /// malformed rule, a duplicate id, ...); each names its place.
    #[error("{} problem(s) make the file unusable (run `palisade validate`):\n{}", problems.len(), problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// Every problem, with path and line.
        problems: Vec<Problem>,
    },
}

/// Everything analysis of a loaded fleet can fail with.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalyzeError {
    /// The fleet file cannot be analysed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Resolving a group or instance failed (a reference the fleet lacks).
    #[error(transparent)]
    Resolve(#[from] palisade_policy::PolicyError),
    /// An instance named on the command line is not in the fleet.
    #[error("ResourceNotFound: {what} {id:?}: no such instance in the fleet")]
    UnknownInstance {
        /// Which option named it (`--instance`, `--from`, `--to`).
        what: String,
        /// The id as given.
        id: String,
    },
    /// A value given on the command line does not parse.
    #[error("InvalidParameterValue.Malformed: {field} {value:?}: {why}")]
    Malformed {
        /// The option, e.g. `--from`.
        field: String,
        /// The value as given.
        value: String,
        /// What was expected.
        why: String,
    },
    /// A flow records file that cannot be read (issue 20): the line of
    /// the bad record, when known, and what is wrong with it.
    #[error("flow records: {}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
    Records {
        /// 1-based line of the bad record.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
}
