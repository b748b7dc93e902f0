//! Vector search at scale: the embedded store (HNSW through the planner, and the exact scan) and
//! pgvector in one run, on the same synthetic clustered unit vectors. Recall@k is measured
//! against the exact scan. Prints one JSON object per measurement.
//!
//! Usage: `vector-bench [--n 100000] [--dims 384] [--queries 1000] [--k 10] [--pg-dsn DSN]`
//! (`--pg-dsn` defaults to `$AISTACK_TEST_PG_DSN`; without either, pgvector is skipped.)

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use aistack_benches::{status_mib, vectors};
use aistack_core::store::{
    AnnConfig, CollectionSpec, EmbeddedStore, Filter, IndexStatus, Metric, PgConfig, PgVectorStore,
    Record, SearchRequest, VectorStore,
};
use serde_json::{json, Map, Value};

struct Args {
    n: usize,
    dims: usize,
    queries: usize,
    k: usize,
    pg_dsn: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        n: 100_000,
        dims: 384,
        queries: 1_000,
        k: 10,
        pg_dsn: std::env::var("AISTACK_TEST_PG_DSN").ok(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--n" => a.n = value.parse().unwrap(),
            "--dims" => a.dims = value.parse().unwrap(),
            "--queries" => a.queries = value.parse().unwrap(),
            "--k" => a.k = value.parse().unwrap(),
            "--pg-dsn" => a.pg_dsn = Some(value),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn records(data: &[Vec<f32>]) -> Vec<Record> {
    data.iter()
        .enumerate()
        .map(|(i, v)| {
            let mut m = Map::new();
            m.insert("bucket".into(), json!(i % 100));
            Record::new(format!("r{i}"), v.clone(), m)
        })
        .collect()
}

fn emit(v: Value) {
    println!("{v}");
}

/// Passes over the query set per index measurement (a pass takes a fraction of a second there);
/// the median pass's rate is reported, so one disturbed pass does not decide it. Exact scans
/// take tens of seconds a pass and run once.
const PASSES: usize = 3;

/// The median of the per-pass rates.
fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// Runs the queries one at a time (one thread issuing them), `passes` times; returns the ids of
/// the last pass per query and the median QPS.
async fn run(
    store: &dyn VectorStore,
    name: &str,
    queries: &[Vec<f32>],
    k: usize,
    filter: Option<&Filter>,
    passes: usize,
) -> (Vec<Vec<String>>, f64) {
    let mut rates = Vec::new();
    let mut out = Vec::new();
    for _ in 0..passes {
        out = Vec::with_capacity(queries.len());
        let started = Instant::now();
        for q in queries {
            let mut req = SearchRequest::new(q.clone(), k);
            req.filter = filter.cloned();
            let hits = store.search(name, &[req]).await.unwrap();
            out.push(hits[0].iter().map(|h| h.id.clone()).collect());
        }
        rates.push(queries.len() as f64 / started.elapsed().as_secs_f64());
    }
    (out, median(rates))
}

/// The same queries in batch calls of 100: the store answers them on one thread, so this is the
/// per-thread rate without the per-call hop to the blocking pool. Median of `passes`.
async fn run_batch(
    store: &dyn VectorStore,
    name: &str,
    queries: &[Vec<f32>],
    k: usize,
    passes: usize,
) -> (Vec<Vec<String>>, f64) {
    let reqs: Vec<SearchRequest> = queries
        .iter()
        .map(|q| SearchRequest::new(q.clone(), k))
        .collect();
    let mut rates = Vec::new();
    let mut out = Vec::new();
    for _ in 0..passes {
        out = Vec::with_capacity(queries.len());
        let started = Instant::now();
        // 100 requests per call is the store's limit.
        for batch in reqs.chunks(100) {
            let hits = store.search(name, batch).await.unwrap();
            out.extend(
                hits.into_iter()
                    .map(|h| h.into_iter().map(|h| h.id).collect::<Vec<_>>()),
            );
        }
        rates.push(queries.len() as f64 / started.elapsed().as_secs_f64());
    }
    (out, median(rates))
}

fn recall(got: &[Vec<String>], truth: &[Vec<String>]) -> f64 {
    let mut total = 0.0;
    for (g, t) in got.iter().zip(truth) {
        let t: HashSet<&String> = t.iter().collect();
        total += g.iter().filter(|x| t.contains(x)).count() as f64 / t.len().max(1) as f64;
    }
    total / truth.len() as f64
}

async fn wait_ready(store: &EmbeddedStore, name: &str) -> (usize, usize) {
    loop {
        if let IndexStatus::Ready {
            indexed,
            memory_bytes,
        } = store.index_status(name).unwrap()
        {
            return (indexed, memory_bytes);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn remove_checkpoints(root: &Path) {
    let dir = root.join("collections").join("bench");
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("ann") {
            std::fs::remove_file(p).unwrap();
        }
    }
}

const SHARES: [(&str, i64); 3] = [("1%", 1), ("10%", 10), ("50%", 50)];

fn share_filter(pct: i64) -> Filter {
    Filter::from_json(&json!({"bucket": {"$lt": pct}})).unwrap()
}

#[tokio::main]
async fn main() {
    let a = args();
    let data = vectors(a.n, a.dims, 1);
    let queries = vectors(a.queries, a.dims, 2);
    let spec = CollectionSpec::new("bench", a.dims, Metric::Cosine);
    let dir = tempfile::tempdir().unwrap();
    emit(
        json!({"setup": {"n": a.n, "dims": a.dims, "queries": a.queries, "k": a.k,
        "threads": std::thread::available_parallelism().map_or(1, |n| n.get())}}),
    );

    // Load with the index on: log writes first, the index builds in the background.
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    store.create_collection(&spec).await.unwrap();
    let started = Instant::now();
    for chunk in records(&data).chunks(2_000) {
        store.upsert("bench", chunk.to_vec()).await.unwrap();
    }
    let write_s = started.elapsed().as_secs_f64();
    wait_ready(&store, "bench").await;
    emit(json!({"embedded_load": {"upsert_s": write_s,
        "index_ready_after_s": started.elapsed().as_secs_f64()}}));
    drop(store);

    // Ground truth and the exact scan's rate: the same store with the index off.
    let off = AnnConfig {
        enabled: false,
        ..AnnConfig::default()
    };
    let exact = EmbeddedStore::open_with(dir.path(), off.clone())
        .await
        .unwrap();
    let (truth, exact_qps) = run(&exact, "bench", &queries, a.k, None, 1).await;
    let (_, exact_batch_qps) = run_batch(&exact, "bench", &queries, a.k, 1).await;
    emit(json!({"exact": {"recall": 1.0, "qps": exact_qps, "qps_batch": exact_batch_qps}}));
    let mut filtered_truth = Vec::new();
    for (label, pct) in SHARES {
        let f = share_filter(pct);
        let (t, qps) = run(&exact, "bench", &queries, a.k, Some(&f), 1).await;
        emit(json!({"exact_filtered": {"share": label, "qps": qps}}));
        filtered_truth.push((label, f, t, qps));
    }
    drop(exact);

    // A full index build from the log alone (no checkpoint), on every core.
    remove_checkpoints(dir.path());
    let started = Instant::now();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    let (indexed, memory) = wait_ready(&store, "bench").await;
    emit(
        json!({"embedded_build": {"build_s": started.elapsed().as_secs_f64(),
        "indexed": indexed, "index_mb": memory as f64 / 1048576.0,
        "vectors_mb": (a.n * a.dims * 4) as f64 / 1048576.0, "rss_mb": status_mib("VmRSS:")}}),
    );
    drop(store);

    // Reopen: log replay plus the checkpoint saved at close.
    for ef in [32usize, 40, 48, 64, 128] {
        let cfg = AnnConfig {
            expansion_search: ef,
            ..AnnConfig::default()
        };
        let started = Instant::now();
        let store = EmbeddedStore::open_with(dir.path(), cfg).await.unwrap();
        let open_s = started.elapsed().as_secs_f64();
        let ready = matches!(
            store.index_status("bench").unwrap(),
            IndexStatus::Ready { .. }
        );
        let (got, qps) = run(&store, "bench", &queries, a.k, None, PASSES).await;
        let (got_b, qps_b) = run_batch(&store, "bench", &queries, a.k, PASSES).await;
        emit(
            json!({"embedded_hnsw": {"ef": ef, "recall": recall(&got, &truth), "qps": qps,
            "recall_batch": recall(&got_b, &truth), "qps_batch": qps_b,
            "reopen_s": open_s, "ready_on_open": ready}}),
        );
        if ef == AnnConfig::default().expansion_search {
            for (label, f, t, exact_qps) in &filtered_truth {
                let (got, qps) = run(&store, "bench", &queries, a.k, Some(f), PASSES).await;
                emit(
                    json!({"embedded_filtered": {"share": label, "recall": recall(&got, t),
                    "qps": qps, "exact_qps": exact_qps}}),
                );
            }
        }
        drop(store);
    }

    let Some(dsn) = a.pg_dsn else {
        emit(json!({"pgvector": "skipped: no --pg-dsn and no AISTACK_TEST_PG_DSN"}));
        return;
    };
    let cfg = PgConfig::new(dsn);
    let pg = PgVectorStore::connect(cfg.clone()).await.unwrap();
    let _ = pg.drop_collection("bench").await;
    pg.create_collection(&spec).await.unwrap();
    let started = Instant::now();
    for chunk in records(&data).chunks(1_000) {
        pg.upsert("bench", chunk.to_vec()).await.unwrap();
    }
    let build_s = started.elapsed().as_secs_f64();
    let index_bytes = pg.index_bytes("bench").await.unwrap();
    emit(
        json!({"pgvector_load": {"upsert_with_hnsw_s": build_s, "m": cfg.hnsw_m,
        "ef_construction": cfg.hnsw_ef_construction,
        "index_mb": index_bytes as f64 / 1048576.0}}),
    );
    drop(pg);
    for ef in [40u32, 100, 200] {
        let pg = PgVectorStore::connect(PgConfig {
            ef_search: ef,
            ..cfg.clone()
        })
        .await
        .unwrap();
        let (got, qps) = run(&pg, "bench", &queries, a.k, None, PASSES).await;
        emit(
            json!({"pgvector_hnsw": {"ef_search": ef, "recall": recall(&got, &truth), "qps": qps}}),
        );
        if ef == 100 {
            for (label, f, t, _) in &filtered_truth {
                let (got, qps) = run(&pg, "bench", &queries, a.k, Some(f), PASSES).await;
                emit(
                    json!({"pgvector_filtered": {"share": label, "recall": recall(&got, t), "qps": qps}}),
                );
            }
        }
    }
    let pg = PgVectorStore::connect(cfg).await.unwrap();
    pg.drop_collection("bench").await.unwrap();
}
