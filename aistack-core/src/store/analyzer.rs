//! The text analyzer of lexical search: one definition of how text becomes terms, used by every
//! backend (the embedded tantivy index, PostgreSQL's `tsvector` and Qdrant's sparse vectors), so
//! a lexical or hybrid search means the same thing everywhere.
//!
//! A word is a run of letters, digits and `_` (so `S_IFCHR`, `O_NONBLOCK` and `getmtime` stay
//! whole; `os.path.join` is three words). Words are lowercased, and words longer than
//! [`MAX_TERM_CHARS`] characters are dropped. `english` (the default) also drops English stop
//! words and stems plain words with the Snowball English stemmer, leaving identifiers (words
//! with a digit or `_`) as they are; `simple` does neither, for code and identifiers.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Words longer than this many characters are not terms (base64, hashes, minified code).
pub const MAX_TERM_CHARS: usize = 64;

/// Most terms taken from one query; the rest are ignored.
pub const MAX_QUERY_TERMS: usize = 64;

/// Lucene's English stop words, the usual list of search engines.
const ENGLISH_STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
];

/// How a collection's text is turned into terms; chosen when the collection is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Analyzer {
    /// Lowercased words without English stop words, stemmed (`errors` → `error`).
    #[default]
    English,
    /// Lowercased words, nothing dropped or stemmed: for code and identifiers.
    Simple,
}

impl Analyzer {
    /// The analyzer's name as used in APIs and files.
    pub fn as_str(self) -> &'static str {
        match self {
            Analyzer::English => "english",
            Analyzer::Simple => "simple",
        }
    }

    /// Parses `english` or `simple`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "english" => Ok(Analyzer::English),
            "simple" => Ok(Analyzer::Simple),
            other => Err(Error::invalid(format!(
                "unknown analyzer {:?} (english or simple)",
                crate::error::clip(other)
            ))),
        }
    }

    /// The terms of `text`, in order, repeats kept (a term's count is its frequency).
    pub fn terms(self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut word = String::new();
        let mut chars = 0usize;
        let flush = |word: &mut String, chars: &mut usize, out: &mut Vec<String>| {
            if !word.is_empty() && *chars <= MAX_TERM_CHARS {
                if let Some(t) = self.finish(word) {
                    out.push(t);
                }
            }
            word.clear();
            *chars = 0;
        };
        for c in text.chars() {
            if c.is_alphanumeric() || c == '_' {
                chars += 1;
                if chars <= MAX_TERM_CHARS {
                    word.extend(c.to_lowercase());
                }
            } else {
                flush(&mut word, &mut chars, &mut out);
            }
        }
        flush(&mut word, &mut chars, &mut out);
        out
    }

    /// The distinct terms of a query, in first-seen order, at most [`MAX_QUERY_TERMS`].
    pub fn query_terms(self, text: &str) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        self.terms(text)
            .into_iter()
            .filter(|t| seen.insert(t.clone()))
            .take(MAX_QUERY_TERMS)
            .collect()
    }

    /// A lowercased word as a term, or `None` for a stop word.
    fn finish(self, word: &str) -> Option<String> {
        match self {
            Analyzer::Simple => Some(word.to_string()),
            Analyzer::English => {
                if ENGLISH_STOP_WORDS.binary_search(&word).is_ok() {
                    return None;
                }
                let identifier = word.chars().any(|c| c == '_' || c.is_numeric());
                if identifier {
                    Some(word.to_string())
                } else {
                    Some(stemmer().stem(word).into_owned())
                }
            }
        }
    }
}

/// The Snowball English stemmer (stateless; built once).
fn stemmer() -> &'static frostem::Stemmer {
    static STEMMER: OnceLock<frostem::Stemmer> = OnceLock::new();
    STEMMER.get_or_init(|| frostem::Stemmer::new(frostem::Algorithm::English))
}

/// A 32-bit id for a term (FNV-1a), for backends that key terms by number (Qdrant's sparse
/// vectors). Stable across versions and machines.
pub fn term_id(term: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in term.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_words_are_sorted_for_binary_search() {
        let mut sorted = ENGLISH_STOP_WORDS.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, ENGLISH_STOP_WORDS);
    }

    #[test]
    fn english_lowercases_stems_and_drops_stop_words() {
        assert_eq!(
            Analyzer::English.terms("The Errors of running Processes"),
            ["error", "run", "process"]
        );
    }

    #[test]
    fn identifiers_stay_whole_and_unstemmed() {
        assert_eq!(
            Analyzer::English.terms("stat.S_IFCHR, os.O_NONBLOCK and utf8s"),
            ["stat", "s_ifchr", "os", "o_nonblock", "utf8s"]
        );
    }

    #[test]
    fn simple_keeps_every_word() {
        assert_eq!(
            Analyzer::Simple.terms("The Errors of os.path.join"),
            ["the", "errors", "of", "os", "path", "join"]
        );
    }

    #[test]
    fn long_words_and_punctuation_are_not_terms() {
        let long = "x".repeat(MAX_TERM_CHARS + 1);
        let exact = "y".repeat(MAX_TERM_CHARS);
        let text = format!("{long} -- {exact} ... !!");
        assert_eq!(Analyzer::Simple.terms(&text), [exact]);
        assert!(Analyzer::English.terms("  ,.;  ").is_empty());
        assert!(Analyzer::English.terms("").is_empty());
    }

    #[test]
    fn unicode_words_are_lowercased() {
        assert_eq!(Analyzer::Simple.terms("Größe ÉTÉ"), ["größe", "été"]);
    }

    #[test]
    fn query_terms_are_distinct_and_capped() {
        assert_eq!(
            Analyzer::English.query_terms("error errors ERROR code"),
            ["error", "code"]
        );
        let many: String = (0..200).map(|i| format!("w{i} ")).collect();
        assert_eq!(Analyzer::Simple.query_terms(&many).len(), MAX_QUERY_TERMS);
    }

    #[test]
    fn names_round_trip() {
        for a in [Analyzer::English, Analyzer::Simple] {
            assert_eq!(Analyzer::parse(a.as_str()).unwrap(), a);
        }
        assert!(Analyzer::parse("klingon").is_err());
    }

    #[test]
    fn term_ids_are_fnv1a() {
        assert_eq!(term_id(""), 0x811c_9dc5);
        assert_eq!(term_id("a"), 0xe40c_292c);
    }
}
