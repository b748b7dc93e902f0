//! An incremental reader of server-sent events, as OpenAI-compatible servers stream them: bytes
//! go in as they arrive, whole events come out. Only `data:` fields matter here; comments and
//! other fields are skipped. An event larger than the limit is an error, not unbounded memory.

use crate::error::{Error, Result};

/// Splits a byte stream into the `data` of its events.
#[derive(Debug)]
pub struct SseReader {
    buf: Vec<u8>,
    data: Option<String>,
    max_event_bytes: usize,
}

impl SseReader {
    /// A reader refusing events over `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            buf: Vec::new(),
            data: None,
            max_event_bytes,
        }
    }

    /// Takes the next bytes and returns the events they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(nl) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let mut line = &self.buf[start..start + nl];
            start += nl + 1;
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            if line.is_empty() {
                if let Some(d) = self.data.take() {
                    events.push(d);
                }
                continue;
            }
            if line.starts_with(b":") {
                continue;
            }
            let (field, value) = match line.iter().position(|&b| b == b':') {
                Some(i) => {
                    let v = &line[i + 1..];
                    (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
                }
                None => (line, &b""[..]),
            };
            if field == b"data" {
                let value = std::str::from_utf8(value)
                    .map_err(|_| Error::Upstream("a stream event is not UTF-8".into()))?;
                let d = self.data.get_or_insert_with(String::new);
                if !d.is_empty() {
                    d.push('\n');
                }
                d.push_str(value);
                if d.len() > self.max_event_bytes {
                    return Err(Error::Upstream(format!(
                        "a stream event is larger than {} bytes",
                        self.max_event_bytes
                    )));
                }
            }
        }
        self.buf.drain(..start);
        if self.buf.len() > self.max_event_bytes {
            return Err(Error::Upstream(format!(
                "a stream line is longer than {} bytes",
                self.max_event_bytes
            )));
        }
        Ok(events)
    }

    /// Whether bytes of an unfinished event are held.
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty() || self.data.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_reads_come_out_whole() {
        let mut r = SseReader::new(1 << 20);
        let stream = b"data: {\"a\":1}\n\n: keep-alive\n\ndata: {\"b\":\r\ndata: 2}\r\n\r\nevent: x\ndata: [DONE]\n\n";
        let mut out = Vec::new();
        for chunk in stream.chunks(3) {
            out.extend(r.push(chunk).unwrap());
        }
        assert_eq!(out, vec!["{\"a\":1}", "{\"b\":\n2}", "[DONE]"]);
        assert!(!r.has_partial());
        assert!(r.push(b"data: half").unwrap().is_empty());
        assert!(r.has_partial());
    }

    #[test]
    fn oversized_events_and_lines_are_errors() {
        let mut r = SseReader::new(16);
        assert!(r.push(b"data: 0123456789abcdefgh\n").is_err());
        let mut r = SseReader::new(16);
        assert!(r.push(&[b'x'; 40]).is_err());
        let mut r = SseReader::new(16);
        assert!(r.push(b"data: \xff\n").is_err());
    }
}
