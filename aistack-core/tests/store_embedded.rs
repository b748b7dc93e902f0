//! The embedded store: the conformance suite, then durability (reopen, torn tails, corruption,
//! one process per directory, and a writer killed with SIGKILL mid-stream).

mod conformance;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aistack_core::store::{
    CollectionSpec, EmbeddedStore, Metric, Record, SearchRequest, VectorStore,
};
use aistack_core::ErrorKind;
use serde_json::{json, Map};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn VectorStore> = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
    conformance::run_all(store.clone(), "emb").await;
    conformance::run_hybrid(store, "emb").await;
}

fn unit(i: usize, dims: usize) -> Vec<f32> {
    // A deterministic spread of vectors.
    (0..dims)
        .map(|d| (((i * 31 + d * 17) % 97) as f32 / 97.0) - 0.5)
        .collect()
}

#[tokio::test]
async fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open(dir.path()).await.unwrap();
        store
            .create_collection(&CollectionSpec::new("docs", 8, Metric::Cosine))
            .await
            .unwrap();
        store
            .create_collection(&CollectionSpec::new("gone", 8, Metric::Dot))
            .await
            .unwrap();
        let batch: Vec<Record> = (0..100)
            .map(|i| Record::new(format!("id{i}"), unit(i, 8), Map::new()))
            .collect();
        store.upsert("docs", batch).await.unwrap();
        store.delete("docs", &["id5".to_string()]).await.unwrap();
        assert!(store.drop_collection("gone").await.unwrap());
        // A second process (here: a second open) is refused while this one holds the directory.
        let err = EmbeddedStore::open(dir.path()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
    }
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    let names: Vec<_> = store
        .list_collections()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.spec.name, c.count))
        .collect();
    assert_eq!(names, [("docs".to_string(), 99)]);
    let hits = store
        .search("docs", &[SearchRequest::new(unit(7, 8), 1)])
        .await
        .unwrap();
    assert_eq!(hits[0][0].id, "id7");
    assert!(store.get("docs", &["id5".into()]).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_torn_tail_is_dropped_and_corruption_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open(dir.path()).await.unwrap();
        store
            .create_collection(&CollectionSpec::new("c", 4, Metric::Dot))
            .await
            .unwrap();
        for i in 0..3 {
            store
                .upsert(
                    "c",
                    vec![Record::new(format!("r{i}"), vec![1.0; 4], Map::new())],
                )
                .await
                .unwrap();
        }
    }
    let log = dir.path().join("collections/c/log");
    let good = std::fs::read(&log).unwrap();
    // The first half of a frame appended, as a crash mid-append leaves it (the three frames
    // are the same size, so the last one's first half is such a prefix).
    let frame = (good.len() - 8) / 3;
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(&good[good.len() - frame..good.len() - frame / 2])
        .unwrap();
    drop(f);
    {
        let store = EmbeddedStore::open(dir.path()).await.unwrap();
        assert_eq!(store.count("c", None).await.unwrap(), 3);
    }
    assert_eq!(std::fs::read(&log).unwrap(), good, "the tail was cut back");
    // A flipped byte in the first frame is corruption: the store refuses to open.
    let mut bad = good.clone();
    bad[30] ^= 0x01;
    std::fs::write(&log, &bad).unwrap();
    let err = EmbeddedStore::open(dir.path()).await.unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
    assert_eq!(std::fs::read(&log).unwrap(), bad, "nothing was changed");
}

/// Child side of the crash test: upserts batches forever, printing each acknowledged batch.
#[tokio::test]
async fn crash_child_writer() {
    let Ok(dir) = std::env::var("AISTACK_CRASH_CHILD_DIR") else {
        return; // Only meaningful when started by `acknowledged_writes_survive_kill_9`.
    };
    let store = EmbeddedStore::open(&dir).await.unwrap();
    store
        .ensure_collection(&CollectionSpec::new("crash", 64, Metric::Cosine))
        .await
        .unwrap();
    let mut out = std::io::stdout();
    for b in 0.. {
        let batch: Vec<Record> = (0..50)
            .map(|k| {
                let i = b * 50 + k;
                let mut m = Map::new();
                m.insert("batch".into(), json!(b));
                Record::new(format!("b{b}-{k}"), unit(i + 1, 64), m)
            })
            .collect();
        store.upsert("crash", batch).await.unwrap();
        writeln!(out, "ACK {b}").unwrap();
        out.flush().unwrap();
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("AISTACK_CRASH_CHILD_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut acked: Option<usize> = None;
        let started = Instant::now();
        let mut lines = BufReader::new(stdout).lines();
        // Kill it at a different point each round, mid-stream.
        let kill_after = 20 + round * 15;
        while let Some(Ok(line)) = lines.next() {
            if let Some(n) = line.strip_prefix("ACK ") {
                acked = Some(n.parse().unwrap());
                if acked.unwrap() >= kill_after {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "child too slow"
            );
        }
        // SIGKILL: no destructor, no flush, mid-write most likely.
        child.kill().unwrap();
        child.wait().unwrap();
        let acked = acked.expect("the child acknowledged writes");
        let store = EmbeddedStore::open(dir.path()).await.unwrap();
        let n = store.count("crash", None).await.unwrap() as usize;
        assert!(
            n >= (acked + 1) * 50,
            "round {round}: {n} records for {acked} acked batches"
        );
        assert_eq!(n % 50, 0, "batches are all-or-nothing");
        let ids: Vec<String> = (0..=acked)
            .flat_map(|b| (0..50).map(move |k| format!("b{b}-{k}")))
            .collect();
        let got = store.get("crash", &ids).await.unwrap();
        assert_eq!(got.len(), ids.len());
        for r in got {
            let b: usize = r.id[1..r.id.find('-').unwrap()].parse().unwrap();
            let k: usize = r.id[r.id.find('-').unwrap() + 1..].parse().unwrap();
            let mut want = unit(b * 50 + k + 1, 64);
            let norm = want.iter().map(|x| x * x).sum::<f32>().sqrt();
            want.iter_mut().for_each(|x| *x /= norm);
            let close = r
                .vector
                .iter()
                .zip(&want)
                .all(|(a, b)| (a - b).abs() < 1e-6);
            assert!(close, "{} intact: {:?} vs {:?}", r.id, r.vector, want);
            assert_eq!(r.metadata["batch"], json!(b));
        }
    }
}
