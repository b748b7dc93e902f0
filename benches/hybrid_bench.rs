//! Hybrid search speed on the embedded store at scale: 100k chunks of synthetic clustered
//! vectors, each with text. Two kinds of text: `english` chunks are ~150 words made of random
//! real sentences (`benches/data/sentences.jsonl`), queried by 3 words of another such sentence;
//! `zipf` chunks are 150 pseudo-words drawn from a Zipf-distributed vocabulary of 30,000 with no
//! stop words, so queries often hold words found in most chunks (a harsh case for BM25). Loads
//! the records with and without text (the lexical index's build cost and size), then times
//! vector, lexical and hybrid searches one at a time (p50, p99, QPS), unfiltered and with a 1%
//! filter, and each arm alone at the hybrid's default depth (50). Then, with `--model DIR` (or
//! `--model auto`: `AISTACK_BENCH_MODEL`, `AISTACK_TEST_MODEL` or `scripts/ensure-model`), the
//! search a user calls: query text in, hits with their metadata out, the query embedded by the
//! real model with every cache off (`Ingestor::search_with`, what the HTTP search handler runs),
//! the three modes taking turns query by query. Prints one JSON object per measurement.
//!
//! Usage: `hybrid-bench [--n 100000] [--dims 384] [--queries 1000] [--k 10] [--words 150]
//! [--text english|zipf] [--model DIR|auto]`

use std::time::{Duration, Instant};

use std::sync::Arc;

use aistack_benches::{model_dir, sentences, status_mib, uncached_embedder, vectors, xorshift};
use aistack_core::ingest::{Ingestor, SearchOptions};
use aistack_core::store::{
    CollectionSpec, EmbeddedStore, Filter, IndexStatus, Metric, Record, SearchMode, SearchRequest,
    VectorStore,
};
use serde_json::{json, Map, Value};

/// Segments of a tantivy index folder (one `.idx` postings file each).
fn segments(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "idx"))
            .count()
    })
}

struct Args {
    n: usize,
    dims: usize,
    queries: usize,
    k: usize,
    words: usize,
    text: String,
    model: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        n: 100_000,
        dims: 384,
        queries: 1_000,
        k: 10,
        words: 150,
        text: "english".into(),
        model: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--n" => a.n = value.parse().unwrap(),
            "--dims" => a.dims = value.parse().unwrap(),
            "--queries" => a.queries = value.parse().unwrap(),
            "--k" => a.k = value.parse().unwrap(),
            "--words" => a.words = value.parse().unwrap(),
            "--text" => a.text = value,
            "--model" if value == "auto" => a.model = Some(model_dir()),
            "--model" => a.model = Some(value),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// A vocabulary of letters-only pseudo-words (so the English stemmer runs on each), with the
/// cumulative weights of a Zipf distribution (exponent 1) over it.
struct Vocabulary {
    words: Vec<String>,
    cdf: Vec<f64>,
}

impl Vocabulary {
    fn new(size: usize) -> Self {
        let mut s = 0x00c0_ffee_u64;
        let words = (0..size)
            .map(|_| {
                let len = 3 + (xorshift(&mut s).abs() * 8.0) as usize;
                (0..len)
                    .map(|_| (b'a' + (xorshift(&mut s).abs() * 25.99) as u8) as char)
                    .collect()
            })
            .collect();
        let mut total = 0.0;
        let cdf = (1..=size)
            .map(|r| {
                total += 1.0 / r as f64;
                total
            })
            .collect::<Vec<_>>();
        let cdf = cdf.iter().map(|c| c / total).collect();
        Self { words, cdf }
    }

    fn word(&self, s: &mut u64) -> &str {
        let u = (xorshift(s) as f64 + 1.0) / 2.0;
        let i = self
            .cdf
            .partition_point(|&c| c < u)
            .min(self.words.len() - 1);
        &self.words[i]
    }

    fn text(&self, s: &mut u64, n: usize) -> String {
        let mut t = String::with_capacity(n * 8);
        for i in 0..n {
            if i > 0 {
                t.push(' ');
            }
            t.push_str(self.word(s));
        }
        t
    }
}

/// Chunk and query text of real English: random sentences, and 3 words of one.
struct English {
    sentences: Vec<String>,
}

impl English {
    fn pick<'a>(&'a self, s: &mut u64) -> &'a str {
        let i = ((xorshift(s) + 1.0) / 2.0 * (self.sentences.len() as f32 - 1.0)) as usize;
        &self.sentences[i]
    }

    fn text(&self, s: &mut u64, words: usize) -> String {
        let mut t = String::new();
        while t.split(' ').count() < words {
            if !t.is_empty() {
                t.push(' ');
            }
            t.push_str(self.pick(s));
        }
        t
    }

    fn query(&self, s: &mut u64) -> String {
        let words: Vec<&str> = self.pick(s).split_whitespace().collect();
        (0..3)
            .map(|_| words[((xorshift(s) + 1.0) / 2.0 * (words.len() as f32 - 1.0)) as usize])
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn emit(v: Value) {
    println!("{v}");
}

async fn wait_ready(store: &EmbeddedStore, name: &str) {
    while !matches!(store.index_status(name).unwrap(), IndexStatus::Ready { .. }) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Times `requests` one at a time; returns p50 and p99 in ms and the QPS.
async fn time(store: &EmbeddedStore, name: &str, requests: &[SearchRequest]) -> Value {
    let mut ms = Vec::with_capacity(requests.len());
    let started = Instant::now();
    let mut hits = 0usize;
    for r in requests {
        let t = Instant::now();
        hits += store.search(name, std::slice::from_ref(r)).await.unwrap()[0].len();
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let qps = requests.len() as f64 / started.elapsed().as_secs_f64();
    ms.sort_by(f64::total_cmp);
    json!({"p50_ms": percentile(&ms, 0.5), "p99_ms": percentile(&ms, 0.99), "qps": qps,
           "mean_hits": hits as f64 / requests.len() as f64})
}

#[tokio::main]
async fn main() {
    let a = args();
    let vocab = Vocabulary::new(30_000);
    let english = English {
        sentences: sentences(),
    };
    let zipf = match a.text.as_str() {
        "zipf" => true,
        "english" => false,
        other => panic!("--text is english or zipf, not {other}"),
    };
    let chunk_text = |s: &mut u64| {
        if zipf {
            vocab.text(s, a.words)
        } else {
            english.text(s, a.words)
        }
    };
    let data = vectors(a.n, a.dims, 1);
    let queries = vectors(a.queries, a.dims, 2);
    emit(
        json!({"setup": {"n": a.n, "dims": a.dims, "queries": a.queries, "k": a.k,
        "words_per_chunk": a.words, "text": a.text,
        "threads": std::thread::available_parallelism().map_or(1, |n| n.get())}}),
    );
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    let mut s = 7u64;
    let mut records: Vec<Record> = data
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let mut m = Map::new();
            m.insert("bucket".into(), json!(i % 100));
            m.insert("_text".into(), json!(chunk_text(&mut s)));
            Record::new(format!("r{i}"), v.clone(), m)
        })
        .collect();

    // The same records with text (lexical index built in the write path) and without.
    for (name, with_text) in [("text", true), ("plain", false)] {
        store
            .create_collection(&CollectionSpec::new(name, a.dims, Metric::Cosine))
            .await
            .unwrap();
        let started = Instant::now();
        for chunk in records.chunks(2_000) {
            let mut chunk = chunk.to_vec();
            if !with_text {
                chunk.iter_mut().for_each(|r| {
                    r.metadata.remove("_text");
                });
            }
            store.upsert(name, chunk).await.unwrap();
        }
        let upsert_s = started.elapsed().as_secs_f64();
        wait_ready(&store, name).await;
        emit(json!({"load": {"collection": name, "upsert_s": upsert_s,
            "records_per_s": a.n as f64 / upsert_s,
            "ready_after_s": started.elapsed().as_secs_f64(),
            "lexical_index_mb": store.lexical_index_bytes(name).unwrap() as f64 / 1048576.0,
            "lexical_segments": segments(&dir.path().join("collections").join(name).join("lexical")),
            "rss_mb": status_mib("VmRSS:")}}));
    }
    records.clear();

    // Reopen: the lexical index is opened at its commit, not rebuilt.
    drop(store);
    let started = Instant::now();
    let store = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
    emit(json!({"reopen_s": started.elapsed().as_secs_f64(),
        "lexical_segments": segments(&dir.path().join("collections").join("text").join("lexical"))}));
    wait_ready(&store, "text").await;

    let mut s = 11u64;
    let texts: Vec<String> = (0..a.queries)
        .map(|_| {
            if zipf {
                vocab.text(&mut s, 3)
            } else {
                english.query(&mut s)
            }
        })
        .collect();
    let one_pct = Filter::from_json(&json!({"bucket": 7})).unwrap();
    for filter in [None, Some(one_pct)] {
        let label = if filter.is_some() { "1%" } else { "none" };
        for mode in [SearchMode::Vector, SearchMode::Lexical, SearchMode::Hybrid] {
            let requests: Vec<SearchRequest> = queries
                .iter()
                .zip(&texts)
                .map(|(q, t)| {
                    let mut r = SearchRequest::new(q.clone(), a.k);
                    if mode != SearchMode::Vector {
                        r = r.with_text(mode, t.clone());
                    }
                    r.filter = filter.clone();
                    r.with_metadata = false;
                    r
                })
                .collect();
            // One warm-up pass, then the measured one.
            time(&store, "text", &requests[..requests.len().min(100)]).await;
            let v = time(&store, "text", &requests).await;
            emit(
                json!({"search": {"mode": mode.as_str(), "filter": label, "k": a.k, "latency": v}}),
            );
        }
        // Each arm alone at the hybrid's default depth.
        for mode in [SearchMode::Vector, SearchMode::Lexical] {
            let depth = a.k.max(50);
            let requests: Vec<SearchRequest> = queries
                .iter()
                .zip(&texts)
                .map(|(q, t)| {
                    let mut r = SearchRequest::new(q.clone(), depth);
                    if mode == SearchMode::Lexical {
                        r = r.with_text(mode, t.clone());
                    }
                    r.filter = filter.clone();
                    r.with_metadata = false;
                    r
                })
                .collect();
            let v = time(&store, "text", &requests).await;
            emit(
                json!({"arm": {"mode": mode.as_str(), "filter": label, "depth": depth, "latency": v}}),
            );
        }
    }
    if let Some(model) = &a.model {
        end_to_end(store, model, &texts, a.k).await;
    }
}

/// Times the search a user calls, per mode: `Ingestor::search_with` with the query's text, the
/// query embedded by the real model (embedding and search caches off), hits with metadata. The
/// modes take turns query by query, so a drift of the machine's speed touches all three alike.
/// The stored vectors are the synthetic ones: the vector arm's cost does not depend on them.
async fn end_to_end(store: Arc<EmbeddedStore>, model: &str, texts: &[String], k: usize) {
    let embedder = uncached_embedder(model.to_string()).await;
    let ing = Ingestor::new(embedder, store, None, 0).unwrap();
    let modes = [SearchMode::Vector, SearchMode::Lexical, SearchMode::Hybrid];
    let opts = |mode| SearchOptions {
        mode,
        ..SearchOptions::default()
    };
    for t in texts.iter().take(100) {
        for mode in modes {
            ing.search_with("text", t, k, &opts(mode)).await.unwrap();
        }
    }
    let mut ms: [Vec<f64>; 3] = Default::default();
    let mut hits = [0usize; 3];
    for (i, t) in texts.iter().enumerate() {
        for j in 0..3 {
            let m = (i + j) % 3;
            let started = Instant::now();
            hits[m] += ing
                .search_with("text", t, k, &opts(modes[m]))
                .await
                .unwrap()
                .len();
            ms[m].push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    for v in &mut ms {
        v.sort_by(f64::total_cmp);
    }
    let vector_p50 = percentile(&ms[0], 0.5);
    for (m, v) in ms.iter().enumerate() {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        emit(json!({"end_to_end": {"mode": modes[m].as_str(), "k": k,
            "p50_ms": percentile(v, 0.5), "p99_ms": percentile(v, 0.99), "mean_ms": mean,
            "p50_over_vector": percentile(v, 0.5) / vector_p50,
            "mean_hits": hits[m] as f64 / texts.len() as f64}}));
    }
}
