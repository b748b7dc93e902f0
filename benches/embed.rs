//! Criterion: embedding latency of real sentences at batch 1, 8 and 32, through the public API
//! (validation, batcher and model; the cache disabled so every call computes).

use std::time::Duration;

use aistack_benches::{model_dir, sentences};
use aistack_core::config::{CacheSettings, EmbedSettings};
use aistack_core::embed::{Embedder, EmbeddingEngine, InputKind};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let settings = EmbedSettings {
        model: model_dir(),
        ..EmbedSettings::default()
    };
    let cache = CacheSettings {
        embeddings_max_bytes: 0,
        ..CacheSettings::default()
    };
    let embedder = rt.block_on(async {
        EmbeddingEngine::start(settings, cache)
            .wait_ready(Some(Duration::from_secs(300)))
            .await
            .expect("model ready")
    });
    let corpus = sentences();
    let mut group = c.benchmark_group("embed");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(10));
    for batch in [1usize, 8, 32] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            let mut offset = 0;
            b.iter(|| {
                let texts: Vec<String> = (0..batch)
                    .map(|i| corpus[(offset + i) % corpus.len()].clone())
                    .collect();
                offset += batch;
                rt.block_on(embedder.embed(&texts, InputKind::Plain))
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
