//! The model's batch-efficiency curve: time per request and per sentence for requests of 1 to
//! 32 sentences, sent one at a time in-process (embedding cache off), 4 s per size, each size
//! twice. One request is one forward pass, so this is what a pass of N sentences costs; the
//! admission bench's goodput at a given queue depth follows from it.
//!
//! Usage: `batch-curve [SIZE ...]` (default 1 2 4 8 16 32); one compute thread per core.

use std::time::{Duration, Instant};

use aistack_benches::{model_dir, sentences, uncached_embedder};
use aistack_core::embed::{Embedder, InputKind};

#[tokio::main]
async fn main() {
    let mut sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("sizes are numbers"))
        .collect();
    if sizes.is_empty() {
        sizes = vec![1, 2, 4, 8, 16, 32];
    }
    let embedder = uncached_embedder(model_dir()).await;
    let corpus = sentences();
    for round in 0..2 {
        for &size in &sizes {
            let started = Instant::now();
            let (mut requests, mut i) = (0usize, 0usize);
            while started.elapsed() < Duration::from_secs(4) {
                let batch: Vec<String> = (0..size)
                    .map(|k| corpus[(i + k * 211) % corpus.len()].clone())
                    .collect();
                i += size;
                embedder.embed(&batch, InputKind::Plain).await.unwrap();
                requests += 1;
            }
            let ms = started.elapsed().as_secs_f64() * 1e3;
            println!(
                "{}",
                serde_json::json!({
                    "round": round,
                    "sentences_per_request": size,
                    "ms_per_request": (ms / requests as f64 * 100.0).round() / 100.0,
                    "ms_per_sentence": (ms / (requests * size) as f64 * 1000.0).round() / 1000.0,
                    "sentences_per_s": ((requests * size) as f64 / ms * 1e4).round() / 10.0,
                })
            );
        }
    }
}
