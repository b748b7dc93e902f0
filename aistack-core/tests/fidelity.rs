//! Our embeddings match sentence-transformers' for every reference line, alone and in batches
//! mixed with long texts, on one thread and on several.

use std::sync::Arc;

use aistack_core::config::{CacheSettings, EmbedSettings};
use aistack_core::embed::{Embedder, EmbeddingEngine, InputKind, ModelFiles, SentenceModel};
use aistack_testing::{cosine, model_dir, reference};

const MIN_COSINE: f64 = 0.9999;

fn load() -> SentenceModel {
    let files = ModelFiles::from_dir(&model_dir()).expect("model files");
    SentenceModel::load("all-MiniLM-L6-v2", &files).expect("model loads")
}

#[test]
fn model_info_matches_the_sentence_transformers_config() {
    let m = load();
    let info = m.info();
    assert_eq!(info.dims, 384);
    assert_eq!(info.max_input_tokens, 256);
    assert!(info.normalize);
    assert_eq!(info.pooling, vec![aistack_core::embed::Pooling::Mean]);
    assert_eq!(info.architecture, "bert");
}

#[test]
fn every_reference_line_alone() {
    let m = load();
    let refs = reference();
    assert_eq!(refs.len(), 300);
    let mut worst = 1.0f64;
    for (i, r) in refs.iter().enumerate() {
        let ids = m.tokenize(&[r.text.as_str()]).unwrap();
        assert_eq!(ids[0].len(), r.tokens, "token count of line {i}");
        let v = m.forward(&[ids[0].as_slice()]).unwrap();
        let c = cosine(&v[0], &r.embedding);
        worst = worst.min(c);
        assert!(c >= MIN_COSINE, "line {i}: cosine {c}");
    }
    eprintln!("worst cosine alone: {worst}");
}

#[test]
fn every_reference_line_in_batches_with_long_texts() {
    let m = load();
    let refs = reference();
    let long: Vec<usize> = (0..refs.len()).filter(|&i| refs[i].tokens >= 256).collect();
    assert!(long.len() >= 10, "the reference has long texts");
    let ids = m
        .tokenize(&refs.iter().map(|r| r.text.as_str()).collect::<Vec<_>>())
        .unwrap();
    // Batches of 16 short texts, each with a 256-token text at its side: the batch is split
    // across threads by cost, so the short texts land beside and apart from the long one.
    let mut worst = 1.0f64;
    let short: Vec<usize> = (0..refs.len()).filter(|i| !long.contains(i)).collect();
    for (b, chunk) in short.chunks(16).enumerate() {
        let mut members: Vec<usize> = chunk.to_vec();
        members.insert(b % members.len().max(1), long[b % long.len()]);
        let batch: Vec<&[u32]> = members.iter().map(|&i| ids[i].as_slice()).collect();
        let out = m.forward(&batch).unwrap();
        for (&i, v) in members.iter().zip(&out) {
            let c = cosine(v, &refs[i].embedding);
            worst = worst.min(c);
            assert!(c >= MIN_COSINE, "line {i} in batch {b}: cosine {c}");
        }
    }
    eprintln!("worst cosine in batches: {worst}");
}

#[test]
fn thread_count_does_not_change_results() {
    let files = ModelFiles::from_dir(&model_dir()).expect("model files");
    let one = SentenceModel::load_with_threads("m", &files, 1).unwrap();
    let three = SentenceModel::load_with_threads("m", &files, 3).unwrap();
    assert_eq!((one.threads(), three.threads()), (1, 3));
    let refs = reference();
    let texts: Vec<&str> = refs.iter().take(40).map(|r| r.text.as_str()).collect();
    let ids = one.tokenize(&texts).unwrap();
    let batch: Vec<&[u32]> = ids.iter().map(|v| v.as_slice()).collect();
    let a = one.forward(&batch).unwrap();
    let b = three.forward(&batch).unwrap();
    // One sequence alone takes the every-core path of the matrix products.
    let alone = three.forward(&batch[..1]).unwrap();
    assert!(cosine(&alone[0], &a[0]) >= 0.999_999);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(cosine(x, y) >= 0.999_999, "sequence {i}");
        assert!(cosine(x, &refs[i].embedding) >= MIN_COSINE, "sequence {i}");
    }
}

#[test]
fn token_sequences_the_model_cannot_take_are_refused() {
    let m = load();
    let ok = m.tokenize(&["fine"]).unwrap().remove(0);
    let too_long = vec![101u32; 513];
    let out_of_vocab = [101u32, 40_000, 102];
    for bad in [&[][..], &too_long[..], &out_of_vocab[..]] {
        let err = m.forward(&[ok.as_slice(), bad]).unwrap_err();
        assert_eq!(
            err.kind(),
            aistack_core::error::ErrorKind::InvalidInput,
            "{err}"
        );
    }
    assert_eq!(m.forward(&[]).unwrap().len(), 0);
    assert_eq!(m.forward(&[ok.as_slice()]).unwrap()[0].len(), 384);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_engine_with_concurrent_callers() {
    let settings = EmbedSettings {
        model: model_dir().display().to_string(),
        // Correctness, not speed: a loaded machine must not turn this into a timeout.
        request_timeout_ms: 600_000,
        ..EmbedSettings::default()
    };
    let engine = EmbeddingEngine::start(settings, CacheSettings::default());
    let embedder = engine
        .wait_ready(Some(std::time::Duration::from_secs(120)))
        .await
        .expect("ready");
    assert_eq!(embedder.dims(), 384);
    let refs = Arc::new(reference());
    // 10 callers at once, each with 30 texts (short and long mixed), all batched together.
    let mut handles = Vec::new();
    for c in 0..10 {
        let embedder = embedder.clone();
        let refs = refs.clone();
        handles.push(tokio::spawn(async move {
            let idx: Vec<usize> = (0..30).map(|k| (c + k * 10) % refs.len()).collect();
            let texts: Vec<String> = idx.iter().map(|&i| refs[i].text.clone()).collect();
            let out = embedder.embed(&texts, InputKind::Plain).await.unwrap();
            (idx, out)
        }));
    }
    for h in handles {
        let (idx, out) = h.await.unwrap();
        assert_eq!(idx.len(), out.len());
        for (&i, v) in idx.iter().zip(&out) {
            let c = cosine(v, &refs[i].embedding);
            assert!(c >= MIN_COSINE, "line {i}: cosine {c}");
        }
    }
    let stats = embedder.stats();
    assert_eq!(stats.batcher.sequences, 300);
    assert!(
        stats.batcher.batches < 300,
        "requests were batched: {stats:?}"
    );
}
