//! The write-ahead log of one collection: checksummed frames, appended and fsynced before a
//! write is acknowledged, replayed on open.
//!
//! File: the magic `AISTKLG1`, then frames `[len u32][crc32(payload) u32][crc32(len‖crc) u32]
//! [payload]`, little-endian. Payload: op `1` upsert (`count`, then per record `id`, metadata
//! JSON, `dims` f32s), op `2` delete (`count`, then ids) or op `3` batch (a delete's body, then
//! an upsert's: one all-or-nothing write of both); strings are `u32 len + bytes`.
//!
//! On replay a torn tail (an incomplete last frame, or a bad last frame followed only by zeros,
//! as a crash during an append leaves) is cut off and logged; a bad frame with valid data after
//! it is corruption, and the collection refuses to open.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::store::Record;

const MAGIC: &[u8; 8] = b"AISTKLG1";
const HEADER: usize = 12;
const OP_UPSERT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_BATCH: u8 = 3;
/// Frames larger than this are refused when written and treated as corrupt when read.
const MAX_FRAME: usize = 1 << 30;

/// One logged operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Insert or replace these records.
    Upsert(Vec<Record>),
    /// Delete these ids.
    Delete(Vec<String>),
    /// Delete these ids, then upsert these records, as one write (replayed whole or not at all).
    Batch {
        /// Ids deleted first.
        delete: Vec<String>,
        /// Records upserted after.
        upsert: Vec<Record>,
    },
}

fn put_records(out: &mut Vec<u8>, records: &[Record], dims: usize) -> Result<()> {
    put_u32(out, records.len());
    for r in records {
        put_bytes(out, r.id.as_bytes());
        let meta =
            serde_json::to_vec(&r.metadata).map_err(|e| Error::internal("encoding metadata", e))?;
        put_bytes(out, &meta);
        debug_assert_eq!(r.vector.len(), dims);
        for x in &r.vector {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    Ok(())
}

fn put_ids(out: &mut Vec<u8>, ids: &[String]) {
    put_u32(out, ids.len());
    for id in ids {
        put_bytes(out, id.as_bytes());
    }
}

/// Encodes an operation's payload.
pub fn encode(op: &Op, dims: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    match op {
        Op::Upsert(records) => {
            out.reserve(5 + records.len() * (dims * 4 + 64));
            out.push(OP_UPSERT);
            put_records(&mut out, records, dims)?;
        }
        Op::Delete(ids) => {
            out.push(OP_DELETE);
            put_ids(&mut out, ids);
        }
        Op::Batch { delete, upsert } => {
            out.reserve(9 + upsert.len() * (dims * 4 + 64) + delete.len() * 32);
            out.push(OP_BATCH);
            put_ids(&mut out, delete);
            put_records(&mut out, upsert, dims)?;
        }
    }
    if out.len() > MAX_FRAME {
        return Err(Error::invalid(format!(
            "one write of {} bytes is larger than the {} byte limit; split the batch",
            out.len(),
            MAX_FRAME
        )));
    }
    Ok(out)
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len());
    out.extend_from_slice(b);
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn u32(&mut self) -> Option<usize> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
    }

    fn string(&mut self) -> Option<String> {
        let n = self.u32()?;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }

    fn records(&mut self, dims: usize) -> Option<Vec<Record>> {
        let n = self.u32()?;
        let left = self.buf.len() - self.pos;
        let mut records = Vec::with_capacity(n.min(left / (dims * 4 + 8)));
        for _ in 0..n {
            let id = self.string()?;
            let meta_len = self.u32()?;
            let metadata: Map<String, Value> = serde_json::from_slice(self.take(meta_len)?).ok()?;
            let raw = self.take(dims * 4)?;
            let vector = raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect();
            records.push(Record {
                id,
                vector,
                metadata,
            });
        }
        Some(records)
    }

    fn ids(&mut self) -> Option<Vec<String>> {
        let n = self.u32()?;
        let mut ids = Vec::with_capacity(n.min((self.buf.len() - self.pos) / 4));
        for _ in 0..n {
            ids.push(self.string()?);
        }
        Some(ids)
    }
}

/// Decodes a payload; `None` if it is malformed.
pub fn decode(payload: &[u8], dims: usize) -> Option<Op> {
    let mut c = Cursor {
        buf: payload,
        pos: 1,
    };
    let op = match *payload.first()? {
        OP_UPSERT => Op::Upsert(c.records(dims)?),
        OP_DELETE => Op::Delete(c.ids()?),
        OP_BATCH => {
            let delete = c.ids()?;
            Op::Batch {
                delete,
                upsert: c.records(dims)?,
            }
        }
        _ => return None,
    };
    (c.pos == payload.len()).then_some(op)
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32fast::hash(payload).to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(&crc);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Where a frame ends in the log and its payload checksum: identifies a point in the log's
/// history (an index checkpoint names the frame it reflects).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct FramePos {
    /// Byte offset just past the frame.
    pub end: u64,
    /// CRC-32 of the frame's payload.
    pub crc: u32,
}

impl FramePos {
    /// The start of a log: before any frame.
    pub fn start() -> Self {
        Self {
            end: MAGIC.len() as u64,
            crc: 0,
        }
    }
}

/// The appending end of a log.
pub struct LogWriter {
    file: File,
    path: PathBuf,
    len: u64,
    last: FramePos,
    /// A failed append left bytes past `len` that could not be cut off yet.
    torn: bool,
}

/// Fsyncs a directory, so a create, rename or remove inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("fsync {}", dir.display()), e))
}

impl LogWriter {
    /// Creates an empty log (magic only, fsynced).
    pub fn create(path: &Path) -> Result<Self> {
        let mut file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path.display().to_string(), e))?;
        file.write_all(MAGIC)
            .and_then(|_| file.sync_all())
            .map_err(|e| Error::io(path.display().to_string(), e))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            len: MAGIC.len() as u64,
            last: FramePos::start(),
            torn: false,
        })
    }

    /// Opens a log, replaying every operation into `apply` with the [`FramePos`] it ended at;
    /// cuts a torn tail, refuses corruption.
    pub fn open(path: &Path, dims: usize, mut apply: impl FnMut(Op, FramePos)) -> Result<Self> {
        let shown = path.display().to_string();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(shown.clone(), e))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)
            .map_err(|e| Error::io(shown.clone(), e))?;
        if buf.len() < MAGIC.len() || &buf[..MAGIC.len()] != MAGIC {
            return Err(corrupt(&shown, 0, "not an aistack log (bad magic)"));
        }
        let mut pos = MAGIC.len();
        let mut last = FramePos::start();
        let mut torn: Option<&str> = None;
        while pos < buf.len() {
            let rest = &buf[pos..];
            let only_zeros_from = |from: usize| buf[from.min(buf.len())..].iter().all(|&b| b == 0);
            if rest.len() < HEADER {
                torn = Some("an incomplete frame header");
                break;
            }
            let len_b: [u8; 4] = rest[0..4].try_into().expect("4 bytes");
            let crc_b: [u8; 4] = rest[4..8].try_into().expect("4 bytes");
            let hcrc = u32::from_le_bytes(rest[8..12].try_into().expect("4 bytes"));
            let mut h = crc32fast::Hasher::new();
            h.update(&len_b);
            h.update(&crc_b);
            if h.finalize() != hcrc {
                if only_zeros_from(pos) {
                    torn = Some("a zero-filled frame");
                    break;
                }
                return Err(corrupt(&shown, pos, "frame header checksum mismatch"));
            }
            let len = u32::from_le_bytes(len_b) as usize;
            if len > MAX_FRAME {
                return Err(corrupt(&shown, pos, "frame length out of range"));
            }
            let end = pos + HEADER + len;
            if end > buf.len() {
                torn = Some("an incomplete frame");
                break;
            }
            let payload = &buf[pos + HEADER..end];
            if crc32fast::hash(payload) != u32::from_le_bytes(crc_b) {
                if only_zeros_from(end) {
                    torn = Some("a last frame with a bad checksum");
                    break;
                }
                return Err(corrupt(&shown, pos, "frame checksum mismatch"));
            }
            last = FramePos {
                end: end as u64,
                crc: u32::from_le_bytes(crc_b),
            };
            match decode(payload, dims) {
                Some(op) => apply(op, last),
                None => return Err(corrupt(&shown, pos, "malformed frame")),
            }
            pos = end;
        }
        if let Some(what) = torn {
            tracing::warn!(
                log = %shown,
                offset = pos,
                dropped_bytes = buf.len() - pos,
                "dropping a torn tail ({what}) left by an interrupted write; acknowledged writes are intact"
            );
            file.set_len(pos as u64)
                .and_then(|_| file.sync_all())
                .map_err(|e| Error::io(shown.clone(), e))?;
        }
        Ok(Self {
            file,
            path: path.to_path_buf(),
            len: pos as u64,
            last,
            torn: false,
        })
    }

    /// Appends one operation and fsyncs it. On failure the file is cut back to its previous
    /// length, so a failed write (a full disk, say) leaves no partial frame behind.
    pub fn append(&mut self, payload: &[u8]) -> Result<()> {
        let shown = || format!("appending to {}", self.path.display());
        if self.torn {
            // An earlier failed append could not be cut back: do it before anything follows it.
            self.file
                .set_len(self.len)
                .and_then(|_| self.file.sync_data())
                .map_err(|e| Error::io(shown(), e))?;
            self.torn = false;
        }
        let bytes = frame(payload);
        let result = self
            .file
            .write_all(&bytes)
            .and_then(|_| self.file.sync_data());
        if let Err(e) = result {
            self.torn = self
                .file
                .set_len(self.len)
                .and_then(|_| self.file.sync_data())
                .is_err();
            return Err(Error::io(shown(), e));
        }
        self.len += bytes.len() as u64;
        self.last = FramePos {
            end: self.len,
            crc: crc32fast::hash(payload),
        };
        Ok(())
    }

    /// The last frame written or replayed.
    pub fn last(&self) -> FramePos {
        self.last
    }

    /// Bytes in the log.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Replaces the log with one holding `ops` only (written to a temporary file, fsynced, then
    /// renamed over the log and the directory fsynced).
    pub fn rewrite(&mut self, ops: impl Iterator<Item = Result<Vec<u8>>>) -> Result<()> {
        let tmp = self.path.with_extension("compact");
        let _ = std::fs::remove_file(&tmp);
        let mut w = LogWriter::create(&tmp)?;
        for payload in ops {
            w.append(&payload?)?;
        }
        std::fs::rename(&tmp, &self.path)
            .map_err(|e| Error::io(format!("renaming {}", tmp.display()), e))?;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        w.path = self.path.clone();
        *self = w;
        Ok(())
    }
}

fn corrupt(path: &str, offset: usize, what: &str) -> Error {
    Error::Internal {
        context: format!(
            "{path} is corrupt at byte {offset}: {what}; refusing to open it (restore it from a backup, or move it away to start the collection empty)"
        ),
        source: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, x: f32) -> Record {
        let mut m = Map::new();
        m.insert("k".into(), Value::from(id));
        Record::new(id, vec![x, -x, 0.5], m)
    }

    fn replay(path: &Path) -> Result<Vec<Op>> {
        let mut ops = Vec::new();
        LogWriter::open(path, 3, |op, _| ops.push(op))?;
        Ok(ops)
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let mut w = LogWriter::create(&p).unwrap();
        let a = Op::Upsert(vec![rec("a", 1.0), rec("b", 2.0)]);
        let d = Op::Delete(vec!["a".into()]);
        let b = Op::Batch {
            delete: vec!["b".into(), "z".into()],
            upsert: vec![rec("c", 3.0), rec("a", 4.0)],
        };
        for op in [&a, &d, &b] {
            w.append(&encode(op, 3).unwrap()).unwrap();
        }
        assert_eq!(replay(&p).unwrap(), vec![a, d, b]);
        // Every cut of a payload is refused, never half decoded.
        let payload = encode(
            &Op::Batch {
                delete: vec!["b".into()],
                upsert: vec![rec("c", 3.0)],
            },
            3,
        )
        .unwrap();
        for cut in 0..payload.len() {
            assert_eq!(decode(&payload[..cut], 3), None, "cut at {cut}");
        }
    }

    #[test]
    fn torn_tails_are_cut_and_earlier_writes_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let mut w = LogWriter::create(&p).unwrap();
        let a = Op::Upsert(vec![rec("a", 1.0)]);
        w.append(&encode(&a, 3).unwrap()).unwrap();
        let good_len = std::fs::metadata(&p).unwrap().len();
        let frame_b = frame(&encode(&Op::Upsert(vec![rec("b", 2.0)]), 3).unwrap());
        // Every way a crash can leave the last append.
        let tails: Vec<Vec<u8>> = vec![
            frame_b[..5].to_vec(),
            frame_b[..frame_b.len() - 3].to_vec(),
            vec![0u8; frame_b.len()],
            {
                let mut t = frame_b.clone();
                let n = t.len();
                t[n - 1] ^= 0xff;
                t
            },
        ];
        for tail in tails {
            let f = OpenOptions::new().write(true).open(&p).unwrap();
            f.set_len(good_len).unwrap();
            drop(f);
            let mut f = OpenOptions::new().append(true).open(&p).unwrap();
            f.write_all(&tail).unwrap();
            drop(f);
            assert_eq!(replay(&p).unwrap(), vec![a.clone()]);
            assert_eq!(std::fs::metadata(&p).unwrap().len(), good_len);
        }
    }

    #[test]
    fn corruption_in_the_middle_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let mut w = LogWriter::create(&p).unwrap();
        for i in 0..3 {
            w.append(&encode(&Op::Upsert(vec![rec("a", i as f32)]), 3).unwrap())
                .unwrap();
        }
        let mut bytes = std::fs::read(&p).unwrap();
        // Flip a byte inside the first frame's payload, then inside its length.
        for at in [MAGIC.len() + HEADER + 6, MAGIC.len() + 1] {
            let mut b = bytes.clone();
            b[at] ^= 0x40;
            std::fs::write(&p, &b).unwrap();
            let err = replay(&p).unwrap_err();
            assert!(err.to_string().contains("corrupt"), "{err}");
            // Nothing was cut off.
            assert_eq!(std::fs::read(&p).unwrap(), b);
        }
        bytes[0] = b'X';
        std::fs::write(&p, &bytes).unwrap();
        assert!(replay(&p).unwrap_err().to_string().contains("bad magic"));
    }
}
