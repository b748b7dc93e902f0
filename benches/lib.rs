//! Shared pieces of the benchmarks: the sentence corpus and the model location.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aistack_core::config::{CacheSettings, EmbedSettings};
use aistack_core::embed::{EmbeddingEngine, ModelEmbedder};

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

/// The model in `model`, loaded and ready, with the embedding cache off (a benchmark measures
/// the model, not the cache) and an hour's deadline a call (it sends more than a server would).
pub async fn uncached_embedder(model: String) -> Arc<ModelEmbedder> {
    EmbeddingEngine::start(
        EmbedSettings {
            model,
            request_timeout_ms: 3_600_000,
            ..EmbedSettings::default()
        },
        CacheSettings {
            embeddings_max_bytes: 0,
            ..CacheSettings::default()
        },
    )
    .wait_ready(Some(Duration::from_secs(300)))
    .await
    .expect("the model loads")
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

/// A xorshift step, as a number in [-1, 1).
pub fn xorshift(state: &mut u64) -> f32 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state % 20_000) as f32 / 10_000.0 - 1.0
}

/// Clustered unit vectors of low intrinsic dimension, like text embeddings: 200 centres, a
/// 16-dimensional spread around them, and a little isotropic noise. Queries come from the same
/// distribution (other seeds).
pub fn vectors(n: usize, dims: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut basis = 0x5eed_u64;
    let centres: Vec<Vec<f32>> = (0..200)
        .map(|_| (0..dims).map(|_| xorshift(&mut basis)).collect())
        .collect();
    let axes: Vec<Vec<f32>> = (0..16)
        .map(|_| (0..dims).map(|_| xorshift(&mut basis)).collect())
        .collect();
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            let c = (xorshift(&mut s).abs() * 199.0) as usize;
            let mut v = centres[c].clone();
            for a in &axes {
                let z = 0.35 * xorshift(&mut s);
                v.iter_mut().zip(a).for_each(|(x, y)| *x += z * y);
            }
            v.iter_mut().for_each(|x| *x += 0.08 * xorshift(&mut s));
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            v
        })
        .collect()
}

/// A server process started by a benchmark; killed when dropped.
pub struct ServerProcess(pub std::process::Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP port on loopback that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
