//! The embedded store's HNSW index through the public API: recall against brute force, the
//! planner's exact scan for selective filters, writes after the index is ready, checkpoints
//! across reopen and crash (a copied directory), and compaction renumbering the index.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use aistack_core::store::{
    AnnConfig, CollectionSpec, EmbeddedStore, Filter, IndexStatus, Metric, Record, SearchRequest,
    VectorStore,
};
use serde_json::{json, Map};

const DIMS: usize = 48;

/// Deterministic clustered unit vectors with a low intrinsic dimension, as text embeddings
/// have: 40 centres plus an 8-dimensional spread, plus a little noise.
struct Data {
    vectors: Vec<Vec<f32>>,
}

fn xorshift(state: &mut u64) -> f32 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state % 20_000) as f32 / 10_000.0 - 1.0
}

fn normalize(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

impl Data {
    fn new(n: usize, seed: u64) -> Self {
        let mut s = seed | 1;
        let mut basis = 5u64;
        let centres: Vec<Vec<f32>> = (0..40)
            .map(|_| (0..DIMS).map(|_| xorshift(&mut basis)).collect())
            .collect();
        let axes: Vec<Vec<f32>> = (0..8)
            .map(|_| (0..DIMS).map(|_| xorshift(&mut basis)).collect())
            .collect();
        let vectors = (0..n)
            .map(|i| {
                let mut v = centres[i % centres.len()].clone();
                for a in &axes {
                    let z = 0.5 * xorshift(&mut s);
                    v.iter_mut().zip(a).for_each(|(x, y)| *x += z * y);
                }
                v.iter_mut().for_each(|x| *x += 0.05 * xorshift(&mut s));
                normalize(v)
            })
            .collect();
        Self { vectors }
    }
}

fn id(i: usize) -> String {
    format!("r{i:06}")
}

fn records(data: &Data, range: std::ops::Range<usize>) -> Vec<Record> {
    range
        .map(|i| {
            let mut m = Map::new();
            m.insert("n".into(), json!(i));
            m.insert("tenth".into(), json!(i % 10 == 0));
            m.insert("half".into(), json!(i % 2 == 0));
            Record::new(id(i), data.vectors[i].clone(), m)
        })
        .collect()
}

/// The exact top `k` ids among `live` records passing `keep`.
fn brute(
    data: &Data,
    live: &HashSet<usize>,
    q: &[f32],
    k: usize,
    keep: impl Fn(usize) -> bool,
) -> Vec<String> {
    let mut scored: Vec<(f32, usize)> = live
        .iter()
        .copied()
        .filter(|&i| keep(i))
        .map(|i| (data.vectors[i].iter().zip(q).map(|(a, b)| a * b).sum(), i))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(id(a.1).cmp(&id(b.1))));
    scored.into_iter().take(k).map(|(_, i)| id(i)).collect()
}

fn cfg() -> AnnConfig {
    AnnConfig {
        exact_below: 1_000,
        ..AnnConfig::default()
    }
}

async fn wait_ready(store: &EmbeddedStore, name: &str) -> usize {
    let started = Instant::now();
    loop {
        match store.index_status(name).unwrap() {
            IndexStatus::Ready { indexed, .. } => return indexed,
            status => {
                assert!(
                    started.elapsed() < Duration::from_secs(300),
                    "index not ready: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn search_ids(
    store: &EmbeddedStore,
    q: &[f32],
    k: usize,
    filter: Option<Filter>,
) -> Vec<String> {
    let mut req = SearchRequest::new(q.to_vec(), k);
    req.filter = filter;
    let hits = store.search("c", &[req]).await.unwrap();
    hits[0].iter().map(|h| h.id.clone()).collect()
}

fn recall(got: &[String], want: &[String]) -> f64 {
    let want: HashSet<&String> = want.iter().collect();
    got.iter().filter(|g| want.contains(g)).count() as f64 / want.len().max(1) as f64
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_answers_like_brute_force_and_follows_writes() {
    let dir = tempfile::tempdir().unwrap();
    let data = Data::new(12_000, 7);
    let queries = Data::new(100, 99);
    let store = EmbeddedStore::open_with(dir.path(), cfg()).await.unwrap();
    store
        .create_collection(&CollectionSpec::new("c", DIMS, Metric::Cosine))
        .await
        .unwrap();
    // Below the threshold there is no index.
    store.upsert("c", records(&data, 0..500)).await.unwrap();
    assert_eq!(store.index_status("c").unwrap(), IndexStatus::None);
    for start in (500..10_000).step_by(1_900) {
        store
            .upsert("c", records(&data, start..(start + 1_900).min(10_000)))
            .await
            .unwrap();
    }
    assert_eq!(wait_ready(&store, "c").await, 10_000);
    let mut live: HashSet<usize> = (0..10_000).collect();

    // Unfiltered: the index path, measured against brute force.
    let mut total = 0.0;
    for q in &queries.vectors {
        let got = search_ids(&store, q, 10, None).await;
        assert_eq!(got.len(), 10);
        total += recall(&got, &brute(&data, &live, q, 10, |_| true));
    }
    let mean = total / queries.vectors.len() as f64;
    assert!(mean >= 0.97, "recall@10 {mean}");

    // A 10% filter is scanned exactly: identical to brute force. A 50% filter uses the index:
    // every hit passes, and recall stays high.
    let tenth = Filter::from_json(&json!({"tenth": true})).unwrap();
    let half = Filter::from_json(&json!({"half": {"$eq": true}})).unwrap();
    let mut total = 0.0;
    for q in &queries.vectors {
        let got = search_ids(&store, q, 10, Some(tenth.clone())).await;
        assert_eq!(got, brute(&data, &live, q, 10, |i| i % 10 == 0));
        let got = search_ids(&store, q, 10, Some(half.clone())).await;
        assert_eq!(got.len(), 10);
        total += recall(&got, &brute(&data, &live, q, 10, |i| i % 2 == 0));
    }
    let mean = total / queries.vectors.len() as f64;
    assert!(mean >= 0.97, "filtered recall@10 {mean}");

    // Writes after the index is ready are searchable at once: new records, replaced vectors
    // and deletions.
    store
        .upsert("c", records(&data, 10_000..12_000))
        .await
        .unwrap();
    live.extend(10_000..12_000);
    let q = &data.vectors[11_111];
    assert_eq!(search_ids(&store, q, 1, None).await, vec![id(11_111)]);
    store.delete("c", &[id(11_111)]).await.unwrap();
    live.remove(&11_111);
    assert!(!search_ids(&store, q, 10, None).await.contains(&id(11_111)));
    let mut moved = records(&data, 3..4);
    moved[0].vector = data.vectors[11_111].clone();
    store.upsert("c", moved).await.unwrap();
    assert_eq!(search_ids(&store, q, 1, None).await, vec![id(3)]);
    match store.index_status("c").unwrap() {
        IndexStatus::Ready { indexed, .. } => assert_eq!(indexed, live.len()),
        other => panic!("{other:?}"),
    }
    // min_score and k larger than the collection's matches behave as in an exact scan.
    let mut req = SearchRequest::new(q.clone(), 50);
    req.min_score = Some(0.999);
    let hits = store.search("c", &[req]).await.unwrap();
    assert!(hits[0].iter().all(|h| h.score >= 0.999));
    assert_eq!(hits[0][0].id, id(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_makes_reopen_ready_and_a_crash_tail_is_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let data = Data::new(9_000, 3);
    let store = EmbeddedStore::open_with(dir.path(), cfg()).await.unwrap();
    store
        .create_collection(&CollectionSpec::new("c", DIMS, Metric::Cosine))
        .await
        .unwrap();
    store.upsert("c", records(&data, 0..5_000)).await.unwrap();
    wait_ready(&store, "c").await;
    // The build saved a checkpoint; these writes are only in the log.
    store
        .upsert("c", records(&data, 5_000..5_300))
        .await
        .unwrap();
    let gone: Vec<String> = (0..50).map(id).collect();
    store.delete("c", &gone).await.unwrap();
    // A crash now: the directory as it is, without the close-time checkpoint.
    let crashed = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), crashed.path());
    std::fs::remove_file(crashed.path().join("LOCK")).unwrap();
    // A long tail, written after the copy: closed in the background on the next open.
    store
        .upsert("c", records(&data, 5_300..9_000))
        .await
        .unwrap();
    drop(store);

    // The short tail is replayed before open returns: the index is in use at once.
    let reopened = EmbeddedStore::open_with(crashed.path(), cfg())
        .await
        .unwrap();
    match reopened.index_status("c").unwrap() {
        IndexStatus::Ready { indexed, .. } => assert_eq!(indexed, 5_250),
        other => panic!("expected a ready index, got {other:?}"),
    }
    let q = &data.vectors[5_123];
    assert_eq!(search_ids(&reopened, q, 1, None).await, vec![id(5_123)]);
    assert!(!search_ids(&reopened, &data.vectors[7], 10, None)
        .await
        .contains(&id(7)));
    drop(reopened);

    // The clean close checkpointed everything: ready at once with all records.
    let reopened = EmbeddedStore::open_with(dir.path(), cfg()).await.unwrap();
    match reopened.index_status("c").unwrap() {
        IndexStatus::Ready { indexed, .. } => assert_eq!(indexed, 8_950),
        other => panic!("expected a ready index, got {other:?}"),
    }
    assert_eq!(
        search_ids(&reopened, &data.vectors[8_888], 1, None).await,
        vec![id(8_888)]
    );
    drop(reopened);

    // A damaged checkpoint is never used: open works, searches are right, the index is rebuilt.
    let cdir = dir.path().join("collections").join("c");
    for e in std::fs::read_dir(&cdir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "usearch") {
            std::fs::write(&p, b"not an index").unwrap();
        }
    }
    let reopened = EmbeddedStore::open_with(dir.path(), cfg()).await.unwrap();
    assert_eq!(
        search_ids(&reopened, &data.vectors[8_888], 1, None).await,
        vec![id(8_888)]
    );
    assert_eq!(wait_ready(&reopened, "c").await, 8_950);
    drop(reopened);

    // With the index switched off, the same data is searched exactly.
    let off = AnnConfig {
        enabled: false,
        ..cfg()
    };
    let reopened = EmbeddedStore::open_with(dir.path(), off).await.unwrap();
    assert_eq!(reopened.index_status("c").unwrap(), IndexStatus::None);
    assert_eq!(
        search_ids(&reopened, &data.vectors[8_888], 1, None).await,
        vec![id(8_888)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_renumbers_the_index_consistently() {
    let dir = tempfile::tempdir().unwrap();
    // Wide records so the log passes the 64 MiB compaction floor after a few rewrites.
    const WIDE: usize = 512;
    let n = 4_000;
    let mut s = 11u64;
    let mut vectors: Vec<Vec<f32>> = (0..n)
        .map(|_| normalize((0..WIDE).map(|_| xorshift(&mut s)).collect()))
        .collect();
    let store = EmbeddedStore::open_with(dir.path(), cfg()).await.unwrap();
    store
        .create_collection(&CollectionSpec::new("c", WIDE, Metric::Cosine))
        .await
        .unwrap();
    let batch = |vectors: &Vec<Vec<f32>>, range: std::ops::Range<usize>| -> Vec<Record> {
        range
            .map(|i| Record::new(id(i), vectors[i].clone(), Map::new()))
            .collect()
    };
    store.upsert("c", batch(&vectors, 0..n)).await.unwrap();
    wait_ready(&store, "c").await;
    // Delete every third record so the slots have holes, then rewrite the rest until the log
    // is compacted (its size drops).
    let gone: Vec<String> = (0..n).filter(|i| i % 3 == 0).map(id).collect();
    store.delete("c", &gone).await.unwrap();
    let live: Vec<usize> = (0..n).filter(|i| i % 3 != 0).collect();
    let log = dir.path().join("collections/c/log");
    let mut compacted = false;
    for round in 0..40 {
        for &i in &live {
            vectors[i] = normalize(
                vectors[i]
                    .iter()
                    .map(|x| x + 0.1 * xorshift(&mut s))
                    .collect(),
            );
        }
        let before = std::fs::metadata(&log).unwrap().len();
        let recs: Vec<Record> = live
            .iter()
            .map(|&i| Record::new(id(i), vectors[i].clone(), Map::new()))
            .collect();
        store.upsert("c", recs).await.unwrap();
        if std::fs::metadata(&log).unwrap().len() < before {
            compacted = true;
            assert!(round > 3);
            break;
        }
    }
    assert!(compacted, "the log was never compacted");
    let check = |store: EmbeddedStore, vectors: Vec<Vec<f32>>, live: Vec<usize>| async move {
        match store.index_status("c").unwrap() {
            IndexStatus::Ready { indexed, .. } => assert_eq!(indexed, live.len()),
            other => panic!("expected a ready index, got {other:?}"),
        }
        for &i in live.iter().step_by(97) {
            assert_eq!(search_ids(&store, &vectors[i], 1, None).await, vec![id(i)]);
        }
        assert_eq!(store.count("c", None).await.unwrap(), live.len() as u64);
    };
    check(store.clone(), vectors.clone(), live.clone()).await;
    drop(store);
    let store = EmbeddedStore::open_with(dir.path(), cfg()).await.unwrap();
    check(store, vectors, live).await;
}
