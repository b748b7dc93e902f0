//! Input limits for embedding requests, checked before any work is queued.

use crate::config::EmbedSettings;
use crate::error::{Error, Result};

/// The limits a request must respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputLimits {
    /// Most inputs in one request.
    pub max_inputs: usize,
    /// Most characters (Unicode scalar values) in one input.
    pub max_chars: usize,
}

impl Default for InputLimits {
    fn default() -> Self {
        Self::from_settings(&EmbedSettings::default())
    }
}

impl InputLimits {
    /// The limits in the `embed` settings.
    pub fn from_settings(s: &EmbedSettings) -> Self {
        Self {
            max_inputs: s.max_inputs_per_request,
            max_chars: s.max_input_chars,
        }
    }

    /// Checks a request: at least one input, at most `max_inputs`, none empty or blank, none
    /// longer than `max_chars`. The error names the first offending input by index.
    pub fn check<S: AsRef<str>>(&self, texts: &[S]) -> Result<()> {
        if texts.is_empty() {
            return Err(Error::invalid("no inputs: give at least one text"));
        }
        if texts.len() > self.max_inputs {
            return Err(Error::invalid(format!(
                "{} inputs in one request; the limit is {}",
                texts.len(),
                self.max_inputs
            )));
        }
        for (i, t) in texts.iter().enumerate() {
            self.check_text(t.as_ref())
                .map_err(|why| Error::invalid(format!("input {i} {why}")))?;
        }
        Ok(())
    }

    /// Checks one text; the error is the reason only (`is empty…`, `has N characters…`), for the
    /// caller to prefix with where the text came from.
    pub fn check_text(&self, t: &str) -> std::result::Result<(), String> {
        if t.trim().is_empty() {
            return Err("is empty or only whitespace".into());
        }
        // Count characters only as far as needed to know the limit is passed.
        if t.len() > self.max_chars && t.chars().nth(self.max_chars).is_some() {
            return Err(format!(
                "has {} characters; the limit is {}",
                t.chars().count(),
                self.max_chars
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: InputLimits = InputLimits {
        max_inputs: 3,
        max_chars: 5,
    };

    #[test]
    fn accepts_valid_input() {
        L.check(&["hello", "héllo", "a"]).unwrap();
        // 5 characters of 2 bytes each is within a 5-character limit.
        L.check(&["ééééé"]).unwrap();
    }

    #[test]
    fn rejects_with_the_index() {
        let none: [&str; 0] = [];
        assert!(L
            .check(&none)
            .unwrap_err()
            .to_string()
            .contains("no inputs"));
        assert!(L
            .check(&["a", "b", "c", "d"])
            .unwrap_err()
            .to_string()
            .contains("4 inputs"));
        let e = L.check(&["ok", "  \n"]).unwrap_err();
        assert!(e.to_string().contains("input 1 is empty"), "{e}");
        let e = L.check(&["ok", "ok", "toolong"]).unwrap_err();
        assert!(e.to_string().contains("input 2 has 7 characters"), "{e}");
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
    }
}
