//! JSON-lines input for batch embedding: each line is a JSON string, or an object with `"text"`
//! and an optional `"id"` (string or integer). Errors name the 1-based line number.

use std::io::BufRead;

use serde_json::Value;

use aistack_core::{Error, Result};

/// One input record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The record's id: the `"id"` given, or the line number when there is none.
    pub id: Value,
    /// The text to embed.
    pub text: String,
    /// The 1-based line the record came from.
    pub line: usize,
}

/// Parses one line (without its newline). `Ok(None)` for a blank line.
pub fn parse_line(bytes: &[u8], line: usize) -> Result<Option<Record>> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Error::invalid(format!("line {line}: not valid UTF-8 ({e})")))?;
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.trim().is_empty() {
        return Ok(None);
    }
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Error::invalid(format!("line {line}: not valid JSON ({e})")))?;
    match value {
        Value::String(s) => Ok(Some(Record {
            id: Value::from(line),
            text: s,
            line,
        })),
        Value::Object(mut map) => {
            let text = match map.remove("text") {
                Some(Value::String(s)) => s,
                Some(_) => {
                    return Err(Error::invalid(format!(
                        "line {line}: \"text\" must be a string"
                    )))
                }
                None => {
                    return Err(Error::invalid(format!(
                        "line {line}: the object has no \"text\" field"
                    )))
                }
            };
            let id = match map.remove("id") {
                None | Some(Value::Null) => Value::from(line),
                Some(v @ Value::String(_)) => v,
                Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Value::Number(n),
                Some(_) => {
                    return Err(Error::invalid(format!(
                        "line {line}: \"id\" must be a string or an integer"
                    )))
                }
            };
            Ok(Some(Record { id, text, line }))
        }
        _ => Err(Error::invalid(format!(
            "line {line}: expected a JSON string or an object with \"text\""
        ))),
    }
}

/// Reads records lazily from `reader`, line by line; blank lines are skipped. Lines longer than
/// `max_line_bytes` are refused without being held in memory whole.
pub struct Reader<R> {
    inner: R,
    line: usize,
    buf: Vec<u8>,
    max_line_bytes: usize,
}

impl<R: BufRead> Reader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R, max_line_bytes: usize) -> Self {
        Self {
            inner,
            line: 0,
            buf: Vec::new(),
            max_line_bytes,
        }
    }

    /// The next record, `Ok(None)` at the end of input.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        loop {
            self.buf.clear();
            self.line += 1;
            let line = self.line;
            let mut limited = std::io::Read::take(&mut self.inner, self.max_line_bytes as u64 + 1);
            let n = limited
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| Error::io(format!("reading line {line}"), e))?;
            if n == 0 {
                return Ok(None);
            }
            if self.buf.last() == Some(&b'\n') {
                self.buf.pop();
            } else if self.buf.len() > self.max_line_bytes {
                return Err(Error::invalid(format!(
                    "line {line}: longer than {} bytes",
                    self.max_line_bytes
                )));
            }
            if let Some(r) = parse_line(&self.buf, line)? {
                return Ok(Some(r));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_objects() {
        let input =
            b"\"hello\"\n{\"id\": \"a\", \"text\": \"world\"}\n\n{\"text\": \"x\", \"id\": 7}\r\n";
        let mut r = Reader::new(&input[..], 1024);
        let a = r.next_record().unwrap().unwrap();
        assert_eq!(
            (a.id, a.text.as_str(), a.line),
            (Value::from(1), "hello", 1)
        );
        let b = r.next_record().unwrap().unwrap();
        assert_eq!((b.id, b.text.as_str()), (Value::from("a"), "world"));
        let c = r.next_record().unwrap().unwrap();
        assert_eq!((c.id, c.line), (Value::from(7), 4));
        assert!(r.next_record().unwrap().is_none());
    }

    #[test]
    fn bad_lines_are_named() {
        let cases: [(&[u8], &str); 6] = [
            (b"\"ok\"\n{not json}\n", "line 2: not valid JSON"),
            (b"\"ok\"\n\"ok\"\n42\n", "line 3: expected a JSON string"),
            (b"{\"id\": 1}\n", "line 1: the object has no \"text\""),
            (b"{\"text\": 5}\n", "line 1: \"text\" must be a string"),
            (
                b"{\"text\": \"a\", \"id\": [1]}\n",
                "line 1: \"id\" must be",
            ),
            (b"\"ok\"\n\"\xff\xfe\"\n", "line 2: not valid UTF-8"),
        ];
        for (input, want) in cases {
            let mut r = Reader::new(input, 1024);
            let err = loop {
                match r.next_record() {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("no error for {want}"),
                    Err(e) => break e,
                }
            };
            assert!(err.to_string().contains(want), "{err} / {want}");
            assert_eq!(err.kind(), aistack_core::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn overlong_lines_are_refused() {
        let mut input = b"\"".to_vec();
        input.extend(std::iter::repeat_n(b'a', 100));
        input.extend(b"\"\n");
        let mut r = Reader::new(&input[..], 50);
        let err = r.next_record().unwrap_err();
        assert!(
            err.to_string().contains("line 1: longer than 50 bytes"),
            "{err}"
        );
    }
}
