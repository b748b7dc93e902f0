//! The embedded store: the conformance suite, then durability (reopen, torn tails, corruption,
//! one process per directory, and a writer killed with SIGKILL mid-stream).

mod conformance;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aistack_core::store::{
    CollectionSpec, EmbeddedStore, EmbeddingOrigin, Metric, Record, SearchMode, SearchRequest,
    VectorStore,
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

fn origin() -> EmbeddingOrigin {
    EmbeddingOrigin {
        model: "all-MiniLM-L6-v2".into(),
        model_dims: 384,
        query_prompt: None,
        document_prompt: Some("passage: ".into()),
        probe: vec![0.5, -0.25, 0.0625],
    }
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
            .create_collection(
                &CollectionSpec::new("docs", 8, Metric::Cosine).with_embedding(Some(origin())),
            )
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
    let spec = store.collection("docs").await.unwrap().spec;
    assert_eq!(
        spec.embedding,
        Some(origin()),
        "the model is kept across a reopen"
    );
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
    let rec = |b: usize, k: usize, text: String| {
        let mut m = Map::new();
        m.insert("batch".into(), json!(b));
        m.insert("_text".into(), json!(text));
        Record::new(format!("b{b}-{k}"), unit(b * 50 + k + 1, 64), m)
    };
    for b in 0.. {
        let mut batch: Vec<Record> = (0..50)
            .map(|k| rec(b, k, format!("batch{b} record{k} tok{}", b * 50 + k)))
            .collect();
        // Each batch also rewrites the text of the previous batch's first record, so the lexical
        // index sees replacements as well as inserts.
        if b > 0 {
            let text = format!("batch{} record0 tok{} rewritten{b}", b - 1, (b - 1) * 50);
            batch.push(rec(b - 1, 0, text));
        }
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
        lexical_matches_records(&store, round, acked).await;
    }
}

/// After a crash and reopen, the lexical index agrees with the records exactly: every record's
/// own term finds it alone, and each `rewritten{b}` term finds the records whose text has it.
async fn lexical_matches_records(store: &EmbeddedStore, round: usize, acked: usize) {
    let ids: Vec<String> = (0..acked + 4)
        .flat_map(|b| (0..50).map(move |k| format!("b{b}-{k}")))
        .collect();
    let records = store.get("crash", &ids).await.unwrap();
    let lexical = |text: String| async move {
        let r = SearchRequest::new(Vec::new(), 10_000).with_text(SearchMode::Lexical, text);
        let mut hits: Vec<String> = store
            .search("crash", &[r])
            .await
            .unwrap()
            .pop()
            .unwrap()
            .into_iter()
            .map(|h| h.id)
            .collect();
        hits.sort();
        hits
    };
    for r in records.iter().step_by(7) {
        let (b, k) = r.id[1..].split_once('-').unwrap();
        let i = b.parse::<usize>().unwrap() * 50 + k.parse::<usize>().unwrap();
        assert_eq!(
            lexical(format!("tok{i}")).await,
            std::slice::from_ref(&r.id),
            "round {round}"
        );
    }
    for b in 1..acked + 4 {
        let word = format!("rewritten{b}");
        let mut want: Vec<String> = records
            .iter()
            .filter(|r| {
                r.metadata["_text"]
                    .as_str()
                    .unwrap()
                    .split(' ')
                    .any(|w| w == word)
            })
            .map(|r| r.id.clone())
            .collect();
        want.sort();
        if b <= acked {
            assert_eq!(want.len(), 1, "round {round}: acknowledged rewrite {b}");
        }
        assert_eq!(
            lexical(word).await,
            want,
            "round {round}: term rewritten{b}"
        );
    }
    let all = lexical("record3".into()).await;
    let want = records.iter().filter(|r| r.id.ends_with("-3")).count();
    assert_eq!(all.len(), want, "round {round}: one record3 per batch");
}

/// The ids the lexical search for `text` finds, in order.
async fn lexical_ids(store: &EmbeddedStore, c: &str, text: &str) -> Vec<String> {
    let r = SearchRequest::new(Vec::new(), 1_000).with_text(SearchMode::Lexical, text);
    let hits = store.search(c, &[r]).await.unwrap().pop().unwrap();
    hits.into_iter().map(|h| h.id).collect()
}

fn text_record(id: &str, i: usize, dims: usize, text: &str) -> Record {
    let mut m = Map::new();
    m.insert("_text".into(), json!(text));
    Record::new(id, unit(i + 1, dims), m)
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// The lexical index follows the log: it survives reopen, is rebuilt when missing or damaged,
/// and is brought up to date when it is behind the log (a crash after the log write).
#[tokio::test]
async fn the_lexical_index_follows_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let lex = dir.path().join("collections/docs/lexical");
    {
        let store = EmbeddedStore::open(dir.path()).await.unwrap();
        store
            .create_collection(&CollectionSpec::new("docs", 8, Metric::Cosine))
            .await
            .unwrap();
        assert_eq!(
            store.lexical_index_bytes("docs").unwrap(),
            0,
            "none before any text"
        );
        let records = (0..100)
            .map(|i| text_record(&format!("r{i}"), i, 8, &format!("doc{i} common words")))
            .collect();
        store.upsert("docs", records).await.unwrap();
        assert!(store.lexical_index_bytes("docs").unwrap() > 0);
    }
    let check = |store: EmbeddedStore, late: bool| async move {
        assert_eq!(lexical_ids(&store, "docs", "doc7").await, ["r7"]);
        assert_eq!(
            lexical_ids(&store, "docs", "common").await.len(),
            if late { 99 } else { 100 }
        );
        if late {
            assert_eq!(lexical_ids(&store, "docs", "late3").await, ["n3"]);
            assert!(lexical_ids(&store, "docs", "doc5").await.is_empty());
        }
    };
    check(EmbeddedStore::open(dir.path()).await.unwrap(), false).await;
    // Missing: rebuilt from the records.
    std::fs::remove_dir_all(&lex).unwrap();
    check(EmbeddedStore::open(dir.path()).await.unwrap(), false).await;
    assert!(lex.join("meta.json").exists());
    // Damaged: rebuilt too.
    std::fs::write(lex.join("meta.json"), b"{ not json").unwrap();
    check(EmbeddedStore::open(dir.path()).await.unwrap(), false).await;
    // Behind the log: an older copy of the index, as after a crash between the log write and
    // the index commit, is brought up to date from its commit's log position.
    let snapshot = dir.path().join("lexical-snapshot");
    copy_dir(&lex, &snapshot);
    {
        let store = EmbeddedStore::open(dir.path()).await.unwrap();
        let late = (0..10)
            .map(|i| text_record(&format!("n{i}"), 200 + i, 8, &format!("late{i}")))
            .collect();
        store.upsert("docs", late).await.unwrap();
        store.delete("docs", &["r5".to_string()]).await.unwrap();
    }
    std::fs::remove_dir_all(&lex).unwrap();
    copy_dir(&snapshot, &lex);
    check(EmbeddedStore::open(dir.path()).await.unwrap(), true).await;
    check(EmbeddedStore::open(dir.path()).await.unwrap(), true).await;
}

/// Compaction renumbers the records; the lexical index is rebuilt with it, so every hit is
/// still the right record, before and after reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lexical_index_follows_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let dims = 2048;
    let log = dir.path().join("collections/big/log");
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    store
        .create_collection(&CollectionSpec::new("big", dims, Metric::Cosine))
        .await
        .unwrap();
    // 200 records rewritten until the log passes 64 MiB, with the odd ones deleted on the
    // way, so compaction has holes to close.
    let mut round = 0;
    let mut largest = 0;
    loop {
        let records = (0..200)
            .filter(|i| round == 0 || i % 2 == 0)
            .map(|i| text_record(&format!("r{i}"), i, dims, &format!("rec{i} round{round}")))
            .collect();
        store.upsert("big", records).await.unwrap();
        if round == 0 {
            let odd: Vec<String> = (0..200)
                .filter(|i| i % 2 == 1)
                .map(|i| format!("r{i}"))
                .collect();
            store.delete("big", &odd).await.unwrap();
        }
        let len = std::fs::metadata(&log).unwrap().len();
        if len < largest {
            break; // compacted
        }
        largest = len;
        round += 1;
        assert!(round < 200, "the log was never compacted");
    }
    assert_eq!(store.count("big", None).await.unwrap(), 100);
    let check = |store: EmbeddedStore| async move {
        for i in (0..200).step_by(6) {
            let want: Vec<String> = if i % 2 == 0 {
                vec![format!("r{i}")]
            } else {
                vec![]
            };
            assert_eq!(
                lexical_ids(&store, "big", &format!("rec{i}")).await,
                want,
                "rec{i}"
            );
        }
        assert_eq!(
            lexical_ids(&store, "big", &format!("round{round}"))
                .await
                .len(),
            100
        );
        assert!(lexical_ids(&store, "big", "round0").await.is_empty());
    };
    check(store.clone()).await;
    drop(store);
    check(EmbeddedStore::open(dir.path()).await.unwrap()).await;
}

/// A filter the metadata index cannot answer (equality with a string over 256 bytes) is checked
/// record by record, in both arms, with the same results.
#[tokio::test]
async fn filters_on_long_strings_apply_to_both_arms() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    store
        .create_collection(&CollectionSpec::new("long", 8, Metric::Cosine))
        .await
        .unwrap();
    let long = "x".repeat(300);
    let records = (0..20)
        .map(|i| {
            let mut r = text_record(&format!("r{i}"), i, 8, &format!("shared word{i}"));
            let tag = if i % 5 == 0 {
                long.clone()
            } else {
                format!("short{i}")
            };
            r.metadata.insert("tag".into(), json!(tag));
            r
        })
        .collect();
    store.upsert("long", records).await.unwrap();
    let filter = aistack_core::store::Filter::from_json(&json!({"tag": long})).unwrap();
    let want = ["r0", "r10", "r15", "r5"];
    for mode in [SearchMode::Lexical, SearchMode::Hybrid] {
        let mut r = SearchRequest::new(unit(1, 8), 10).with_text(mode, "shared");
        r.filter = Some(filter.clone());
        let mut got: Vec<String> = store.search("long", &[r]).await.unwrap()[0]
            .iter()
            .map(|h| h.id.clone())
            .collect();
        got.sort();
        assert_eq!(got, want, "{mode:?}");
    }
    assert_eq!(store.count("long", Some(&filter)).await.unwrap(), 4);
}

/// Documents of the batch-atomicity crash test: request `b` rewrites 1 to 8 of 24 documents,
/// each with 1 to 6 chunks (ids `d{doc}#{chunk}`), deterministically from `b`.
fn atomic_request(b: u64) -> Vec<(u64, u64)> {
    let mut x = b.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let docs = 1 + next() % 8;
    let mut out: Vec<(u64, u64)> = Vec::new();
    while (out.len() as u64) < docs {
        let d = next() % 24;
        if !out.iter().any(|&(o, _)| o == d) {
            out.push((d, 1 + next() % 6));
        }
    }
    out
}

/// The records request `b` writes: every chunk carries its request number and a unique term.
fn atomic_records(b: u64) -> Vec<Record> {
    atomic_request(b)
        .into_iter()
        .flat_map(|(d, n)| {
            (0..n).map(move |c| {
                let mut m = Map::new();
                m.insert("_doc".into(), json!(format!("d{d}")));
                m.insert("_chunk".into(), json!(c));
                m.insert("v".into(), json!(b));
                m.insert("_text".into(), json!(format!("doc{d} version{b} chunk{c}")));
                Record::new(
                    format!("d{d}#{c}"),
                    unit((b * 64 + d * 8 + c) as usize + 1, 32),
                    m,
                )
            })
        })
        .collect()
}

/// The stale filter of request `b`: every chunk of the documents it rewrites.
fn atomic_stale(b: u64) -> aistack_core::store::Filter {
    let docs: Vec<String> = atomic_request(b)
        .into_iter()
        .map(|(d, _)| format!("d{d}"))
        .collect();
    aistack_core::store::Filter::from_json(&json!({"_doc": {"$in": docs}})).unwrap()
}

/// Child side of the batch-atomicity crash test: replaces documents request after request from
/// `AISTACK_CRASH_FROM` on, printing each acknowledged request.
#[tokio::test]
async fn crash_child_replacer() {
    let Ok(dir) = std::env::var("AISTACK_CRASH_ATOMIC_DIR") else {
        return; // Only meaningful when started by `batches_are_all_or_nothing_under_kill_9`.
    };
    let from: u64 = std::env::var("AISTACK_CRASH_FROM")
        .unwrap()
        .parse()
        .unwrap();
    let store = EmbeddedStore::open(&dir).await.unwrap();
    store
        .ensure_collection(&CollectionSpec::new("docs", 32, Metric::Cosine))
        .await
        .unwrap();
    let mut out = std::io::stdout();
    for b in from.. {
        store
            .replace("docs", atomic_records(b), &atomic_stale(b))
            .await
            .unwrap();
        writeln!(out, "ACK {b}").unwrap();
        out.flush().unwrap();
    }
}

/// A documents request (its chunks and the removal of the documents' old chunks, one
/// `replace`) is all-or-nothing: a writer is killed with SIGKILL at many random points, and
/// after each reopen the store holds exactly requests `0..=last`, where `last` is the last
/// acknowledged request or the one in flight, never part of one. Vector and lexical search agree.
#[tokio::test]
async fn batches_are_all_or_nothing_under_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill points seeded with {seed}");
    let mut rng = seed | 1;
    let mut random = move |below: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % below
    };
    // What replaying requests 0..=last leaves: per document, its chunk count and version.
    let expected = |last: u64| {
        let mut docs = std::collections::BTreeMap::new();
        for b in 0..=last {
            for (d, n) in atomic_request(b) {
                docs.insert(d, (n, b));
            }
        }
        docs
    };
    let mut next = 0u64;
    let mut in_flight_seen = 0;
    let mut reopen = (Duration::MAX, Duration::ZERO);
    for round in 0..12 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child_replacer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("AISTACK_CRASH_ATOMIC_DIR", dir.path())
            .env("AISTACK_CRASH_FROM", next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        // Kill after a random number of acknowledged requests, a random time into the next.
        let acks_wanted = 1 + random(30);
        let mut acked: Option<u64> = None;
        let started = Instant::now();
        while let Some(Ok(line)) = lines.next() {
            if let Some(n) = line.strip_prefix("ACK ") {
                acked = Some(n.parse().unwrap());
                if acked.unwrap() + 1 - next >= acks_wanted {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "child too slow"
            );
        }
        std::thread::sleep(Duration::from_micros(random(3_000)));
        child.kill().unwrap();
        child.wait().unwrap();
        let acked = acked.expect("the child acknowledged requests");

        let opening = Instant::now();
        let store = EmbeddedStore::open(dir.path()).await.unwrap();
        let took = opening.elapsed();
        reopen = (reopen.0.min(took), reopen.1.max(took));
        // The newest request visible: the last acknowledged one, or the one in flight.
        let all_ids: Vec<String> = (0..24)
            .flat_map(|d| (0..6).map(move |c| format!("d{d}#{c}")))
            .collect();
        let records = store.get("docs", &all_ids).await.unwrap();
        let newest = records
            .iter()
            .map(|r| r.metadata["v"].as_u64().unwrap())
            .max()
            .unwrap();
        assert!(
            newest == acked || newest == acked + 1,
            "round {round}: newest visible request {newest}, last acknowledged {acked}"
        );
        let last = newest.max(acked);
        if last > acked {
            in_flight_seen += 1;
        }
        let want = expected(last);
        let mut got: std::collections::BTreeMap<u64, (u64, u64)> = Default::default();
        for r in &records {
            let d: u64 = r.id[1..r.id.find('#').unwrap()].parse().unwrap();
            let v = r.metadata["v"].as_u64().unwrap();
            let e = got.entry(d).or_insert((0, v));
            assert_eq!(e.1, v, "round {round}: document d{d} mixes versions");
            e.0 += 1;
        }
        assert_eq!(
            got, want,
            "round {round}: the store is not requests 0..={last} exactly (seed {seed})"
        );
        assert_eq!(
            store.count("docs", None).await.unwrap() as usize,
            records.len()
        );
        // The lexical index holds the same: a document's term finds its chunks, and a
        // version's term the chunks written by that request that are still there.
        for (d, (n, v)) in &want {
            let mut hits = lexical_ids(&store, "docs", &format!("doc{d}")).await;
            hits.sort();
            let mut ids: Vec<String> = (0..*n).map(|c| format!("d{d}#{c}")).collect();
            ids.sort();
            assert_eq!(hits, ids, "round {round}: lexical chunks of d{d}");
            let mut hits = lexical_ids(&store, "docs", &format!("version{v}")).await;
            hits.sort();
            let mut ids: Vec<String> = want
                .iter()
                .filter(|(_, (_, w))| w == v)
                .flat_map(|(e, (m, _))| (0..*m).map(move |c| format!("d{e}#{c}")))
                .collect();
            ids.sort();
            assert_eq!(hits, ids, "round {round}: lexical chunks of request {v}");
        }
        drop(store);
        next = last + 1;
    }
    eprintln!(
        "12 kill points, {in_flight_seen} of them after an unacknowledged request was applied; \
         reopen took {:?} to {:?}",
        reopen.0, reopen.1
    );
}
