//! Embedding throughput on the 2,000-sentence corpus, in-process through the public API, printed
//! as one JSON object. `benches/compare_st.py` runs it beside sentence-transformers.
//!
//! Usage: `embed-rate [--batch-one N]` (N sentences for the batch-1 rate, default 300); threads
//! from `AISTACK__EMBED__THREADS`.

use std::time::{Duration, Instant};

use aistack_benches::{model_dir, sentences, status_mib};
use aistack_core::config::{CacheSettings, EmbedSettings, Settings};
use aistack_core::embed::{Embedder, EmbeddingEngine, InputKind};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let batch_one = args
        .iter()
        .position(|a| a == "--batch-one")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse::<usize>().expect("--batch-one takes a number"))
        .unwrap_or(300);
    let started = Instant::now();
    // Embedding settings as the library reads them (`AISTACK__EMBED__*`), on the bench model.
    let settings = EmbedSettings {
        model: model_dir(),
        ..Settings::load(None)
            .expect("valid AISTACK__* settings")
            .embed
    };
    let threads = settings.threads;
    let cache = CacheSettings {
        embeddings_max_bytes: 0,
        ..CacheSettings::default()
    };
    let embedder = EmbeddingEngine::start(settings, cache)
        .wait_ready(Some(Duration::from_secs(300)))
        .await
        .expect("model ready");
    let first = embedder
        .embed(&["warm up".to_string()], InputKind::Plain)
        .await
        .unwrap();
    let cold_start_ms = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(first[0].len(), embedder.dims());
    let corpus = sentences();

    // Batch 32, one request after another, in corpus order.
    let t = Instant::now();
    for chunk in corpus.chunks(32) {
        embedder.embed(chunk, InputKind::Plain).await.unwrap();
    }
    let batch32 = corpus.len() as f64 / t.elapsed().as_secs_f64();

    // Batch 1, one request after another.
    let n = batch_one.min(corpus.len());
    let t = Instant::now();
    for s in &corpus[..n] {
        embedder
            .embed(std::slice::from_ref(s), InputKind::Plain)
            .await
            .unwrap();
    }
    let batch1 = n as f64 / t.elapsed().as_secs_f64();

    let threads = match threads {
        0 => "all cores".to_string(),
        n => n.to_string(),
    };
    println!(
        "{}",
        serde_json::json!({
            "engine": "aistack",
            "threads": threads,
            "sentences": corpus.len(),
            "batch32_per_s": batch32,
            "batch1_per_s": batch1,
            "batch1_sentences": n,
            "cold_start_ms": cold_start_ms,
            "rss_mib": status_mib("VmRSS:"),
            "peak_rss_mib": status_mib("VmHWM:"),
        })
    );
}
