//! What the fuzz targets drive in the embedded store: log replay and checkpoint loading over
//! arbitrary bytes, exactly as opening a data directory does.

use std::path::Path;

use super::ann::Ann;
use super::log::{encode, LogWriter, Op};
use super::AnnConfig;
use crate::store::Metric;

/// Dimensions of the fuzzed logs' records.
const DIMS: usize = 4;

/// Replays `bytes` (after the log's magic) as a collection log in `dir`: either it is refused
/// as corrupt, or it opens, its torn tail is cut, and every replayed operation re-encodes to
/// a frame that replays the same.
pub fn log_replay(dir: &Path, bytes: &[u8]) {
    let path = dir.join("log");
    let mut content = b"AISTKLG1".to_vec();
    content.extend_from_slice(bytes);
    std::fs::write(&path, &content).expect("the fuzz directory is writable");
    let mut ops: Vec<Op> = Vec::new();
    let opened = LogWriter::open(&path, DIMS, |op, _| ops.push(op));
    let Ok(writer) = opened else {
        // Refused: the file must be left as it was.
        assert_eq!(
            std::fs::read(&path).unwrap(),
            content,
            "a refused log was changed"
        );
        return;
    };
    let kept = writer.len() as usize;
    assert!(kept <= content.len());
    assert_eq!(
        std::fs::read(&path).unwrap(),
        content[..kept],
        "only a torn tail is cut"
    );
    drop(writer);
    // What was replayed writes back to a log that replays the same.
    let again = dir.join("log2");
    let _ = std::fs::remove_file(&again);
    let mut w = LogWriter::create(&again).unwrap();
    for op in &ops {
        w.append(&encode(op, DIMS).expect("a replayed op encodes"))
            .unwrap();
    }
    drop(w);
    let mut replayed: Vec<Op> = Vec::new();
    LogWriter::open(&again, DIMS, |op, _| replayed.push(op)).unwrap();
    assert!(
        ops.iter()
            .zip(&replayed)
            .all(|(a, b)| format!("{a:?}") == format!("{b:?}"))
            && ops.len() == replayed.len(),
        "replaying a re-encoded log gives other operations"
    );
}

/// Loads a checkpoint whose `ann.json` is the first `n` bytes of `bytes` (`n` from its first
/// two bytes) and whose index file is the rest: it loads or is refused, never crashes.
pub fn checkpoint_load(dir: &Path, bytes: &[u8]) {
    let Some((head, rest)) = bytes.split_first_chunk::<2>() else {
        return;
    };
    let n = (u16::from_le_bytes(*head) as usize).min(rest.len());
    let (json, index) = rest.split_at(n);
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let _ = std::fs::remove_file(e.path());
    }
    std::fs::write(dir.join("ann.json"), json).unwrap();
    // The file a well-formed checkpoint names, whatever it names here.
    std::fs::write(dir.join("ann-1-2.usearch"), index).unwrap();
    let cfg = AnnConfig::default();
    if let Some((ann, _pos)) = Ann::load(dir, DIMS, Metric::Cosine, &cfg) {
        // A loaded index answers a search over what it holds.
        let found = ann.search(&[1.0, 0.0, 0.0, 0.0], 4, None);
        assert!(found.map_or(true, |hits| hits.len() <= ann.len()));
    }
}
