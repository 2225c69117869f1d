//! What `inspect` reports.

/// Something `inspect` found: a problem that loses sessions, or a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    problem: bool,
    message: String,
}

impl Finding {
    pub(crate) fn problem(message: impl Into<String>) -> Finding {
        Finding {
            problem: true,
            message: message.into(),
        }
    }

    pub(crate) fn note(message: impl Into<String>) -> Finding {
        Finding {
            problem: false,
            message: message.into(),
        }
    }

    /// Whether this loses sessions (and `check` fails for it), not only a note.
    pub fn is_problem(&self) -> bool {
        self.problem
    }

    /// What was found, and what to change.
    pub fn message(&self) -> &str {
        &self.message
    }
}
