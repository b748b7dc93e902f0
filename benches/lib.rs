//! Shared pieces of the benchmarks: the sentence corpus and the model location.

use std::path::PathBuf;

/// The 2,000 real English sentences of `benches/data/sentences.jsonl`.
pub fn sentences() -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/sentences.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run benches/make_corpus.py)", path.display()));
    text.lines()
        .map(|l| serde_json::from_str::<String>(l).expect("each line is a JSON string"))
        .collect()
}

/// The model directory: `AISTACK_BENCH_MODEL`, `AISTACK_TEST_MODEL`, or the one
/// `scripts/ensure-model` prints.
pub fn model_dir() -> String {
    for var in ["AISTACK_BENCH_MODEL", "AISTACK_TEST_MODEL"] {
        if let Ok(v) = std::env::var(var) {
            return v;
        }
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/ensure-model");
    let out = std::process::Command::new(script)
        .output()
        .expect("scripts/ensure-model runs");
    assert!(out.status.success(), "scripts/ensure-model failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A memory figure of this process from `/proc/self/status` (`VmRSS:`, `VmHWM:`), in MiB
/// (Linux; `None` elsewhere).
pub fn status_mib(key: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some((kib / 1024.0 * 10.0).round() / 10.0)
}
