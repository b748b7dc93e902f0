//! Splitting a text into chunks measured in the embedding model's tokens, with overlap, breaking
//! at a paragraph end, else a sentence end, else a word boundary, where one is near the limit.

use std::ops::Range;

use crate::error::{Error, Result};

/// Chunk size and overlap, in tokens of the embedding model's tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkConfig {
    /// Most tokens in one chunk (special tokens not counted).
    pub max_tokens: usize,
    /// Tokens a chunk repeats from the end of the one before it.
    pub overlap_tokens: usize,
}

impl ChunkConfig {
    /// Checks that chunks can make progress.
    pub fn validate(&self) -> Result<()> {
        if self.max_tokens < 8 {
            return Err(Error::invalid(format!(
                "chunk size must be at least 8 tokens, got {}",
                self.max_tokens
            )));
        }
        if self.overlap_tokens * 2 > self.max_tokens {
            return Err(Error::invalid(format!(
                "chunk overlap ({}) must be at most half the chunk size ({})",
                self.overlap_tokens, self.max_tokens
            )));
        }
        Ok(())
    }
}

/// One chunk of a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Position in the document, from 0.
    pub index: usize,
    /// The chunk's text (a slice of the document).
    pub text: String,
    /// Byte range in the document.
    pub range: Range<usize>,
}

/// How good a break before token `b` is: 3 paragraph, 2 sentence, 1 word, 0 none.
fn break_quality(text: &str, spans: &[Range<usize>], b: usize) -> u8 {
    let gap = &text[spans[b - 1].end..spans[b].start];
    if gap.contains("\n\n") || gap.contains("\r\n\r\n") {
        return 3;
    }
    let prev = &text[spans[b - 1].clone()];
    if !gap.is_empty() && gap.chars().all(char::is_whitespace) {
        if prev.ends_with(['.', '!', '?', ':', ';']) || gap.contains('\n') {
            return 2;
        }
        return 1;
    }
    0
}

/// Splits `text`, whose tokens are at `spans` (byte ranges, as the tokenizer reports them).
pub fn chunk_text(text: &str, spans: &[Range<usize>], cfg: &ChunkConfig) -> Vec<Chunk> {
    let n = spans.len();
    if n == 0 {
        return Vec::new();
    }
    let mut chunks = Vec::new();
    let mut start = 0;
    loop {
        let hard_end = (start + cfg.max_tokens).min(n);
        let end = if hard_end == n {
            n
        } else {
            // The best break in the second half of the window, latest first within a quality.
            let lo = start + cfg.max_tokens / 2;
            let mut best = (0u8, hard_end);
            for b in (lo.max(start + 1)..=hard_end).rev() {
                let q = break_quality(text, spans, b);
                if q > best.0 {
                    best = (q, b);
                    if q == 3 {
                        break;
                    }
                }
            }
            best.1
        };
        let range = spans[start].start..spans[end - 1].end;
        chunks.push(Chunk {
            index: chunks.len(),
            text: text[range.clone()].to_string(),
            range,
        });
        if end == n {
            break;
        }
        // Overlap, starting at a word boundary so no chunk begins mid-word.
        let mut next = end.saturating_sub(cfg.overlap_tokens).max(start + 1);
        while next < end && break_quality(text, spans, next) == 0 {
            next += 1;
        }
        start = next;
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whitespace "tokens" for the tests: each word, and each punctuation mark on its own.
    fn spans(text: &str) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        let mut start = None;
        for (i, c) in text.char_indices() {
            if c.is_whitespace() {
                if let Some(s) = start.take() {
                    out.push(s..i);
                }
            } else if c.is_ascii_punctuation() {
                if let Some(s) = start.take() {
                    out.push(s..i);
                }
                out.push(i..i + 1);
            } else if start.is_none() {
                start = Some(i);
            }
        }
        if let Some(s) = start {
            out.push(s..text.len());
        }
        out
    }

    const CFG: ChunkConfig = ChunkConfig {
        max_tokens: 10,
        overlap_tokens: 2,
    };

    #[test]
    fn short_texts_are_one_chunk() {
        let t = "a short text.";
        let c = chunk_text(t, &spans(t), &CFG);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].text, t);
        assert!(chunk_text("", &[], &CFG).is_empty());
    }

    #[test]
    fn chunks_respect_the_size_cover_the_text_and_overlap() {
        let t = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty";
        let sp = spans(t);
        let c = chunk_text(t, &sp, &CFG);
        assert!(c.len() >= 3);
        for ch in &c {
            assert!(spans(&ch.text).len() <= 10, "{ch:?}");
        }
        assert!(c[0].text.starts_with("one"));
        assert!(c.last().unwrap().text.ends_with("twenty"));
        // Consecutive chunks overlap.
        for w in c.windows(2) {
            assert!(w[1].range.start < w[0].range.end, "{w:?}");
        }
    }

    #[test]
    fn prefers_paragraph_then_sentence_breaks() {
        let t = "Alpha beta gamma. Delta epsilon\n\nzeta eta theta iota kappa lambda mu.";
        let c = chunk_text(
            t,
            &spans(t),
            &ChunkConfig {
                max_tokens: 10,
                overlap_tokens: 0,
            },
        );
        assert_eq!(c[0].text, "Alpha beta gamma. Delta epsilon");
        let t = "Alpha beta gamma delta. Epsilon zeta eta theta iota kappa lambda.";
        let c = chunk_text(
            t,
            &spans(t),
            &ChunkConfig {
                max_tokens: 10,
                overlap_tokens: 0,
            },
        );
        assert_eq!(c[0].text, "Alpha beta gamma delta.");
    }

    #[test]
    fn config_is_checked() {
        assert!(ChunkConfig {
            max_tokens: 4,
            overlap_tokens: 0
        }
        .validate()
        .is_err());
        assert!(ChunkConfig {
            max_tokens: 100,
            overlap_tokens: 60
        }
        .validate()
        .is_err());
        assert!(ChunkConfig {
            max_tokens: 254,
            overlap_tokens: 32
        }
        .validate()
        .is_ok());
    }
}
