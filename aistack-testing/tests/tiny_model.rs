//! The tiny generated model is a real model to aistack: it loads through the engine, reports its
//! shape, and embeds deterministically, with truncation, in milliseconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aistack_core::config::{CacheSettings, EmbedSettings};
use aistack_core::embed::{
    Embedder, EmbeddingEngine, InputKind, ModelEmbedder, ModelFiles, ModelState, Pooling,
    SentenceModel,
};
use aistack_testing::{
    cosine, tiny_model, TinyModel, TINY_DIMS, TINY_MAX_POSITIONS, TINY_MAX_SEQ_LENGTH,
};

const FILES: [&str; 6] = [
    "config.json",
    "tokenizer.json",
    "model.safetensors",
    "modules.json",
    "1_Pooling/config.json",
    "sentence_bert_config.json",
];

fn texts(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn settings(model: &TinyModel) -> EmbedSettings {
    EmbedSettings {
        model: model.spec(),
        ..EmbedSettings::default()
    }
}

async fn ready(model: &TinyModel, cache: CacheSettings) -> Arc<ModelEmbedder> {
    EmbeddingEngine::start(settings(model), cache)
        .wait_ready(Some(Duration::from_secs(60)))
        .await
        .expect("the tiny model loads")
}

fn no_cache() -> CacheSettings {
    CacheSettings {
        embeddings_max_bytes: 0,
        ..CacheSettings::default()
    }
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| *x as f64 * *x as f64).sum::<f64>().sqrt()
}

#[tokio::test]
async fn loads_through_the_engine_and_reports_its_shape() {
    let written = Instant::now();
    let model = TinyModel::new();
    let write_ms = written.elapsed().as_secs_f64() * 1e3;
    let started = Instant::now();
    let engine = EmbeddingEngine::start(settings(&model), CacheSettings::default());
    let embedder = engine
        .wait_ready(Some(Duration::from_secs(60)))
        .await
        .expect("the tiny model loads");
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(engine.state(), ModelState::Ready);
    let sizes: Vec<String> = FILES
        .iter()
        .map(|f| {
            let len = std::fs::metadata(model.path().join(f)).unwrap().len();
            format!("{f} {len} B")
        })
        .collect();
    eprintln!(
        "tiny model: vocab {}, written in {write_ms:.1} ms, ready in {load_ms:.1} ms; {}",
        model.vocab_size(),
        sizes.join(", ")
    );

    let info = embedder.info();
    assert_eq!(info.model_id, model.spec());
    assert_eq!(info.dims, TINY_DIMS);
    assert_eq!(embedder.dims(), TINY_DIMS);
    // From sentence_bert_config.json, not max_position_embeddings.
    assert_eq!(info.max_input_tokens, TINY_MAX_SEQ_LENGTH);
    assert_ne!(info.max_input_tokens, TINY_MAX_POSITIONS);
    assert_eq!(embedder.max_input_tokens(), TINY_MAX_SEQ_LENGTH);
    assert_eq!(info.pooling, vec![Pooling::Mean]);
    assert!(info.normalize);
    assert_eq!(info.query_prompt, None);
    assert_eq!(info.passage_prompt, None);

    let v = embedder
        .embed(&texts(&["hello world"]), InputKind::Plain)
        .await
        .unwrap();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].len(), TINY_DIMS);
}

#[tokio::test]
async fn vectors_are_unit_length_finite_and_not_constant() {
    let model = TinyModel::new();
    let embedder = ready(&model, CacheSettings::default()).await;
    let input = texts(&[
        "hello world",
        "The quick brown fox jumps over the lazy dog.",
        "a",
        "Vector search over 10,000 documents: fast & cheap!",
        "naïve café résumé",
    ]);
    let vs = embedder.embed(&input, InputKind::Plain).await.unwrap();
    assert_eq!(vs.len(), input.len());
    for (t, v) in input.iter().zip(&vs) {
        assert_eq!(v.len(), TINY_DIMS, "{t}");
        assert!(v.iter().all(|x| x.is_finite()), "{t}: {v:?}");
        assert!((norm(v) - 1.0).abs() < 1e-5, "{t}: norm {}", norm(v));
        let spread =
            v.iter().cloned().fold(f32::MIN, f32::max) - v.iter().cloned().fold(f32::MAX, f32::min);
        assert!(spread > 0.1, "{t}: components barely differ: {v:?}");
    }
}

#[tokio::test]
async fn the_same_text_gives_the_same_vector() {
    let model = TinyModel::new();
    let embedder = ready(&model, no_cache()).await;
    let text = "the same sentence, embedded again";
    // Twice in one request, and again in a later request with other texts around it (the
    // cache is off, so every one is computed).
    let first = embedder
        .embed(&texts(&[text, text]), InputKind::Plain)
        .await
        .unwrap();
    assert_eq!(first[0], first[1]);
    let again = embedder
        .embed(
            &texts(&["something else entirely", text, "and a third one"]),
            InputKind::Plain,
        )
        .await
        .unwrap();
    let diff = first[0]
        .iter()
        .zip(&again[1])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-6, "max difference {diff}");

    // A second, separately written copy of the model computes exactly the same vector.
    let other = tempfile::tempdir().unwrap();
    let loaded = SentenceModel::load(
        "copy",
        &ModelFiles::from_dir(&tiny_model(other.path())).unwrap(),
    )
    .unwrap();
    let ids = loaded.tokenize(&[text]).unwrap();
    let direct = loaded.forward(&[ids[0].as_slice()]).unwrap();
    let twice = loaded.forward(&[ids[0].as_slice()]).unwrap();
    assert_eq!(direct, twice);
    let diff = first[0]
        .iter()
        .zip(&direct[0])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-6, "max difference {diff}");
}

#[tokio::test]
async fn different_texts_give_different_vectors() {
    let model = TinyModel::new();
    let embedder = ready(&model, CacheSettings::default()).await;
    let input = texts(&[
        "hello world",
        "world hello",
        "hello worlds",
        "the cat sat on the mat",
        "quantum chromodynamics",
        "1234567890",
        "!!!",
    ]);
    let vs = embedder.embed(&input, InputKind::Plain).await.unwrap();
    for i in 0..vs.len() {
        for j in i + 1..vs.len() {
            let c = cosine(&vs[i], &vs[j]);
            assert!(
                c < 0.9999,
                "{:?} and {:?} have cosine {c}",
                input[i],
                input[j]
            );
        }
    }
}

#[tokio::test]
async fn over_long_texts_are_truncated_to_max_seq_length() {
    let model = TinyModel::new();
    let embedder = ready(&model, CacheSettings::default()).await;
    let words = ["water", "river", "mountain", "search", "vector", "index"];
    let long: Vec<&str> = (0..500).map(|i| words[i % words.len()]).collect();
    let long = long.join(" ");
    // Every word is one piece: 500 tokens untruncated, special tokens excluded.
    assert_eq!(embedder.token_spans(&long).unwrap().len(), 500);
    let short = "water river";
    let counts = embedder.count_tokens(&texts(&[&long, short])).unwrap();
    assert_eq!(counts, vec![TINY_MAX_SEQ_LENGTH, 4]);

    // Whatever follows the first max_seq_length - 2 pieces is cut off, so it changes nothing.
    let tail = format!("{long} and then a completely different ending");
    let vs = embedder
        .embed(&texts(&[&long, &tail, short]), InputKind::Plain)
        .await
        .unwrap();
    assert!((norm(&vs[0]) - 1.0).abs() < 1e-5);
    let diff = vs[0]
        .iter()
        .zip(&vs[1])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-6, "max difference {diff}");
    assert!(cosine(&vs[0], &vs[2]) < 0.9999);
}

#[test]
fn any_ascii_text_tokenizes_without_unknown_tokens() {
    let model = TinyModel::new();
    let loaded = SentenceModel::load("tiny", &ModelFiles::from_dir(model.path()).unwrap()).unwrap();
    let ascii: String = (b' '..=b'~').map(char::from).collect();
    let input = [
        ascii.as_str(),
        "Zebras & xylophones: 42 quizzical jackdaws!",
        "supercalifragilisticexpialidocious",
        "CamelCaseIdentifier_with_underscores",
        "Café naïve",
    ];
    let ids = loaded.tokenize(&input).unwrap();
    for (t, ids) in input.iter().zip(&ids) {
        assert_eq!(ids.first(), Some(&2), "{t}: starts with [CLS]");
        assert_eq!(ids.last(), Some(&3), "{t}: ends with [SEP]");
        assert!(!ids.contains(&1), "{t}: has [UNK] in {ids:?}");
        assert!(ids.iter().all(|&i| (i as usize) < model.vocab_size()));
    }
    // Known words are single pieces; unknown ones fall back to letters.
    assert_eq!(loaded.tokenize(&["hello world"]).unwrap()[0].len(), 4);
    assert!(loaded.tokenize(&["zzz"]).unwrap()[0].len() == 5);
}

#[test]
fn the_files_are_byte_identical_every_time() {
    let (a, b) = (TinyModel::new(), TinyModel::new());
    for f in FILES {
        let (x, y) = (
            std::fs::read(a.path().join(f)).unwrap(),
            std::fs::read(b.path().join(f)).unwrap(),
        );
        assert!(!x.is_empty(), "{f} is empty");
        assert!(x == y, "{f} differs between two writes");
    }
    // The weights are not all alike.
    let st = std::fs::read(a.path().join("model.safetensors")).unwrap();
    let distinct: std::collections::HashSet<&[u8]> = st.chunks_exact(4).collect();
    assert!(distinct.len() > 10_000, "{} distinct words", distinct.len());
}
