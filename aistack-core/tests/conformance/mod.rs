//! The vector-store conformance suite: the same checks for every backend. Each check takes the
//! store and a collection-name prefix of its own, so checks can run in parallel on one server.
#![allow(dead_code)]

use std::sync::Arc;

use aistack_core::store::{
    Analyzer, CollectionSpec, EmbeddingOrigin, Filter, Fusion, Hit, Metric, Record, SearchMode,
    SearchRequest, VectorStore,
};
use aistack_core::ErrorKind;
use serde_json::{json, Map, Value};

fn meta(v: Value) -> Map<String, Value> {
    v.as_object().expect("object").clone()
}

fn rec(id: &str, v: [f32; 4], m: Value) -> Record {
    Record::new(id, v.to_vec(), meta(m))
}

fn ids(v: &[String]) -> Vec<String> {
    v.to_vec()
}

fn s(list: &[&str]) -> Vec<String> {
    list.iter().map(|x| x.to_string()).collect()
}

async fn fresh(store: &dyn VectorStore, name: &str, metric: Metric) -> CollectionSpec {
    let spec = CollectionSpec::new(name, 4, metric);
    let _ = store.drop_collection(name).await;
    store.create_collection(&spec).await.expect("create");
    spec
}

pub async fn collections_lifecycle(store: &dyn VectorStore, p: &str) {
    let name = format!("{p}-life");
    let spec = fresh(store, &name, Metric::Cosine).await;
    store
        .ensure_collection(&spec)
        .await
        .expect("ensure same spec is fine");
    let err = store.create_collection(&spec).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let other = CollectionSpec::new(&name, 8, Metric::Cosine);
    assert_eq!(
        store.ensure_collection(&other).await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    let other = CollectionSpec::new(&name, 4, Metric::Dot);
    assert_eq!(
        store.ensure_collection(&other).await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    let info = store.collection(&name).await.unwrap();
    assert_eq!((info.spec.clone(), info.count), (spec.clone(), 0));
    let listed = store.list_collections().await.unwrap();
    assert!(listed.iter().any(|c| c.spec == spec));
    let names: Vec<_> = listed.iter().map(|c| c.spec.name.clone()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "listed by name");
    assert!(store.drop_collection(&name).await.unwrap());
    assert!(!store.drop_collection(&name).await.unwrap());
    assert_eq!(
        store.collection(&name).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    for bad in ["", "has space", "../etc", "x".repeat(65).as_str(), "-lead"] {
        let spec = CollectionSpec::new(bad, 4, Metric::Cosine);
        assert_eq!(
            store.create_collection(&spec).await.unwrap_err().kind(),
            ErrorKind::InvalidInput,
            "name {bad:?}"
        );
    }
    let zero = CollectionSpec::new(format!("{p}-zero"), 0, Metric::Cosine);
    assert_eq!(
        store.create_collection(&zero).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

pub async fn unknown_collection_is_not_found(store: &dyn VectorStore, p: &str) {
    let name = format!("{p}-missing");
    let _ = store.drop_collection(&name).await;
    let v = vec![rec("a", [1.0, 0.0, 0.0, 0.0], json!({}))];
    assert_eq!(
        store.upsert(&name, v).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        store.get(&name, &s(&["a"])).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        store.count(&name, None).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let q = [SearchRequest::new(vec![1.0, 0.0, 0.0, 0.0], 3)];
    assert_eq!(
        store.search(&name, &q).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        store.delete(&name, &s(&["a"])).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

pub async fn upsert_is_idempotent_and_get_keeps_order(store: &dyn VectorStore, p: &str) {
    let name = format!("{p}-upsert");
    fresh(store, &name, Metric::Dot).await;
    let batch = vec![
        rec("a", [1.0, 0.0, 0.0, 0.0], json!({"v": 1})),
        rec("b", [0.0, 1.0, 0.0, 0.0], json!({"v": 1})),
        rec(
            "c",
            [0.0, 0.0, 1.0, 0.0],
            json!({"v": 1, "nested": {"x": [1, 2]}}),
        ),
    ];
    store.upsert(&name, batch.clone()).await.unwrap();
    // A retried call changes nothing.
    store.upsert(&name, batch.clone()).await.unwrap();
    assert_eq!(store.count(&name, None).await.unwrap(), 3);
    // Replacing by id.
    store
        .upsert(&name, vec![rec("b", [0.0, 2.0, 0.0, 0.0], json!({"v": 2}))])
        .await
        .unwrap();
    assert_eq!(store.count(&name, None).await.unwrap(), 3);
    let got = store
        .get(&name, &s(&["c", "nope", "b", "a"]))
        .await
        .unwrap();
    let got_ids: Vec<_> = got.iter().map(|r| r.id.clone()).collect();
    assert_eq!(got_ids, s(&["c", "b", "a"]));
    assert_eq!(got[1].vector, vec![0.0, 2.0, 0.0, 0.0]);
    assert_eq!(got[1].metadata, meta(json!({"v": 2})));
    assert_eq!(got[0].metadata, batch[2].metadata);
    // Duplicate ids in one batch: the last wins.
    store
        .upsert(
            &name,
            vec![
                rec("d", [1.0, 1.0, 0.0, 0.0], json!({"v": "first"})),
                rec("d", [1.0, 1.0, 0.0, 0.0], json!({"v": "last"})),
            ],
        )
        .await
        .unwrap();
    let d = store.get(&name, &s(&["d"])).await.unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].metadata["v"], json!("last"));
    store
        .upsert(&name, vec![])
        .await
        .expect("an empty batch is a no-op");
    assert_eq!(store.count(&name, None).await.unwrap(), 4);
}

pub async fn bad_vectors_are_refused_and_nothing_is_written(store: &dyn VectorStore, p: &str) {
    let name = format!("{p}-validate");
    fresh(store, &name, Metric::Cosine).await;
    store
        .upsert(
            &name,
            vec![rec("keep", [1.0, 0.0, 0.0, 0.0], json!({"x": 1}))],
        )
        .await
        .unwrap();
    let good = || rec("new", [0.0, 1.0, 0.0, 0.0], json!({}));
    let bad_batches: Vec<(Vec<Record>, &str)> = vec![
        (
            vec![
                good(),
                Record::new("short", vec![1.0, 2.0, 3.0], Map::new()),
            ],
            "3 dimensions",
        ),
        (
            vec![good(), rec("nan", [f32::NAN, 0.0, 0.0, 0.0], json!({}))],
            "NaN",
        ),
        (
            vec![
                good(),
                rec("inf", [f32::INFINITY, 0.0, 0.0, 0.0], json!({})),
            ],
            "inf",
        ),
        (
            vec![good(), rec("zero", [0.0; 4], json!({}))],
            "zero vector",
        ),
        (vec![good(), rec("", [1.0, 0.0, 0.0, 0.0], json!({}))], "id"),
        (
            vec![
                rec("keep", [0.0, 0.0, 0.0, 1.0], json!({})),
                Record::new("x", vec![], Map::new()),
            ],
            "dimensions",
        ),
    ];
    for (batch, want) in bad_batches {
        let err = store.upsert(&name, batch).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(
            err.to_string().contains(want),
            "{err} should mention {want}"
        );
    }
    assert_eq!(
        store.count(&name, None).await.unwrap(),
        1,
        "nothing was written"
    );
    let keep = store.get(&name, &s(&["keep"])).await.unwrap();
    assert_eq!(keep[0].vector, vec![1.0, 0.0, 0.0, 0.0]);
    assert_eq!(keep[0].metadata, meta(json!({"x": 1})));
    // Bad queries.
    let bad_queries = [
        SearchRequest::new(vec![1.0, 0.0], 3),
        SearchRequest::new(vec![f32::NAN, 0.0, 0.0, 0.0], 3),
        SearchRequest::new(vec![1.0, 0.0, 0.0, 0.0], 0),
    ];
    for q in bad_queries {
        let err = store.search(&name, &[q]).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    }
}

pub async fn cosine_vectors_are_normalized(store: &dyn VectorStore, p: &str) {
    let name = format!("{p}-norm");
    fresh(store, &name, Metric::Cosine).await;
    store
        .upsert(&name, vec![rec("a", [3.0, 4.0, 0.0, 0.0], json!({}))])
        .await
        .unwrap();
    let a = store.get(&name, &s(&["a"])).await.unwrap();
    assert!((a[0].vector[0] - 0.6).abs() < 1e-6 && (a[0].vector[1] - 0.8).abs() < 1e-6);
    let hits = store
        .search(&name, &[SearchRequest::new(vec![30.0, 40.0, 0.0, 0.0], 1)])
        .await
        .unwrap();
    assert!((hits[0][0].score - 1.0).abs() < 1e-5);
}

/// Eight records on the unit circle of the first two axes, with metadata to filter on.
async fn seeded(store: &dyn VectorStore, name: &str, metric: Metric) {
    fresh(store, name, metric).await;
    let mut batch = Vec::new();
    for i in 0..8u32 {
        let a = i as f32 * std::f32::consts::PI / 8.0;
        let m = json!({
            "i": i,
            "even": i % 2 == 0,
            "lang": if i < 4 { "en" } else { "fr" },
            "tags": if i % 3 == 0 { json!(["x", "y"]) } else { json!(["y"]) },
            "score": i as f64 / 2.0,
        });
        let mut m = meta(m);
        if i == 7 {
            m.remove("lang");
        }
        batch.push(Record::new(
            format!("r{i}"),
            vec![a.cos(), a.sin(), 0.0, 0.0],
            m,
        ));
    }
    store.upsert(name, batch).await.unwrap();
}

pub async fn filters_match_the_reference_semantics(store: &dyn VectorStore, p: &str) {
    let name = format!("{p}-filter");
    seeded(store, &name, Metric::Cosine).await;
    let cases: Vec<(Value, Vec<u32>)> = vec![
        (json!({"lang": "en"}), vec![0, 1, 2, 3]),
        (json!({"lang": {"$ne": "en"}}), vec![4, 5, 6, 7]),
        (json!({"lang": {"$in": ["fr", "de"]}}), vec![4, 5, 6]),
        (json!({"lang": {"$nin": ["fr"]}}), vec![0, 1, 2, 3, 7]),
        (json!({"i": {"$gte": 2, "$lt": 5}}), vec![2, 3, 4]),
        (json!({"i": {"$gt": 6}}), vec![7]),
        (json!({"score": {"$lte": 1.0}}), vec![0, 1, 2]),
        (json!({"i": 3.0}), vec![3]),
        (json!({"even": true}), vec![0, 2, 4, 6]),
        (json!({"tags": "x"}), vec![0, 3, 6]),
        (json!({"tags": {"$in": ["x"]}}), vec![0, 3, 6]),
        (json!({"tags": {"$nin": ["x"]}}), vec![1, 2, 4, 5, 7]),
        (json!({"lang": {"$exists": false}}), vec![7]),
        (
            json!({"lang": {"$exists": true}}),
            vec![0, 1, 2, 3, 4, 5, 6],
        ),
        (json!({"$or": [{"i": 0}, {"i": 7}]}), vec![0, 7]),
        (
            json!({"$and": [{"lang": "en"}, {"even": false}]}),
            vec![1, 3],
        ),
        (json!({"$not": {"lang": "en"}}), vec![4, 5, 6, 7]),
        (json!({"lang": "en", "i": {"$gt": 1}}), vec![2, 3]),
        (json!({"lang": 5}), vec![]),
        (json!({"i": {"$in": []}}), vec![]),
    ];
    for (q, want) in cases {
        let filter = Filter::from_json(&q).unwrap();
        let mut want_ids: Vec<String> = want.iter().map(|i| format!("r{i}")).collect();
        want_ids.sort();
        assert_eq!(
            store.count(&name, Some(&filter)).await.unwrap(),
            want.len() as u64,
            "count {q}"
        );
        let mut req = SearchRequest::new(vec![1.0, 0.0, 0.0, 0.0], 100);
        req.filter = Some(filter);
        let hits = store.search(&name, &[req]).await.unwrap().remove(0);
        let mut got: Vec<String> = hits.iter().map(|h| h.id.clone()).collect();
        got.sort();
        assert_eq!(got, want_ids, "search {q}");
    }
}

pub async fn search_orders_best_first_with_exact_scores(store: &dyn VectorStore, p: &str) {
    let name = format!("{p}-order");
    seeded(store, &name, Metric::Cosine).await;
    let hits = store
        .search(&name, &[SearchRequest::new(vec![1.0, 0.0, 0.0, 0.0], 3)])
        .await
        .unwrap()
        .remove(0);
    let got: Vec<_> = hits.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(got, ["r0", "r1", "r2"]);
    for (h, i) in hits.iter().zip(0..) {
        let want = (i as f32 * std::f32::consts::PI / 8.0).cos();
        assert!(
            (h.score - want).abs() < 1e-5,
            "{} {} vs {want}",
            h.id,
            h.score
        );
        assert_eq!(h.metadata.as_ref().unwrap()["i"], json!(i));
        assert!(h.vector.is_none());
    }
    // k larger than the collection, min_score, vectors on request, several queries at once.
    let mut all = SearchRequest::new(vec![0.0, 1.0, 0.0, 0.0], 50);
    all.with_vector = true;
    all.with_metadata = false;
    let mut strict = SearchRequest::new(vec![1.0, 0.0, 0.0, 0.0], 50);
    strict.min_score = Some(0.9);
    let res = store.search(&name, &[all, strict]).await.unwrap();
    assert_eq!(res[0].len(), 8);
    assert_eq!(res[0][0].id, "r4");
    assert!(res[0][0].metadata.is_none());
    assert_eq!(res[0][0].vector.as_ref().unwrap().len(), 4);
    assert!(res[0].windows(2).all(|w| w[0].score >= w[1].score));
    let strict_ids: Vec<_> = res[1].iter().map(|h| h.id.as_str()).collect();
    assert_eq!(strict_ids, ["r0", "r1"]);
}

pub async fn ties_are_broken_by_id(store: &dyn VectorStore, p: &str) {
    let name = format!("{p}-ties");
    fresh(store, &name, Metric::Dot).await;
    let batch = ["m", "b", "z", "a", "k"]
        .iter()
        .map(|id| rec(id, [1.0, 0.0, 0.0, 0.0], json!({})))
        .collect();
    store.upsert(&name, batch).await.unwrap();
    let hits = store
        .search(&name, &[SearchRequest::new(vec![2.0, 0.0, 0.0, 0.0], 5)])
        .await
        .unwrap()
        .remove(0);
    let got: Vec<_> = hits.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(got, ["a", "b", "k", "m", "z"]);
    assert!(hits.iter().all(|h| (h.score - 2.0).abs() < 1e-6));
    // With fewer places than ties, which tied records fill them may differ by backend (an ANN
    // index picks), but they come in id order.
    let hits = store
        .search(&name, &[SearchRequest::new(vec![2.0, 0.0, 0.0, 0.0], 3)])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(hits.len(), 3);
    assert!(hits.windows(2).all(|w| w[0].id < w[1].id));
}

pub async fn dot_and_l2_metrics(store: &dyn VectorStore, p: &str) {
    let name = format!("{p}-l2");
    fresh(store, &name, Metric::L2).await;
    store
        .upsert(
            &name,
            vec![
                rec("near", [1.0, 1.0, 0.0, 0.0], json!({})),
                rec("far", [4.0, 5.0, 0.0, 0.0], json!({})),
            ],
        )
        .await
        .unwrap();
    let hits = store
        .search(&name, &[SearchRequest::new(vec![1.0, 2.0, 0.0, 0.0], 2)])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(hits[0].id, "near");
    assert!(
        (hits[0].score + 1.0).abs() < 1e-5,
        "score is minus the distance"
    );
    assert!((hits[1].score + 4.242_640_7).abs() < 1e-4);
    let name = format!("{p}-dot");
    fresh(store, &name, Metric::Dot).await;
    store
        .upsert(
            &name,
            vec![
                rec("long", [10.0, 0.0, 0.0, 0.0], json!({})),
                rec("aligned", [0.0, 1.0, 0.0, 0.0], json!({})),
            ],
        )
        .await
        .unwrap();
    let hits = store
        .search(&name, &[SearchRequest::new(vec![0.5, 0.5, 0.0, 0.0], 2)])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(hits[0].id, "long");
    assert!((hits[0].score - 5.0).abs() < 1e-5);
}

pub async fn empty_collection_searches_return_nothing(store: &dyn VectorStore, p: &str) {
    let name = format!("{p}-empty");
    fresh(store, &name, Metric::Cosine).await;
    let hits = store
        .search(&name, &[SearchRequest::new(vec![1.0, 0.0, 0.0, 0.0], 10)])
        .await
        .unwrap();
    assert_eq!(hits, vec![vec![]]);
    assert_eq!(store.count(&name, None).await.unwrap(), 0);
}

pub async fn deletes_by_id_and_by_filter(store: &dyn VectorStore, p: &str) {
    let name = format!("{p}-delete");
    seeded(store, &name, Metric::Cosine).await;
    assert_eq!(
        store
            .delete(&name, &s(&["r0", "r1", "nope", "r0"]))
            .await
            .unwrap(),
        2
    );
    assert_eq!(store.delete(&name, &s(&["r0"])).await.unwrap(), 0);
    let f = Filter::from_json(&json!({"lang": "fr"})).unwrap();
    assert_eq!(store.delete_where(&name, &f).await.unwrap(), 3);
    assert_eq!(store.delete_where(&name, &f).await.unwrap(), 0);
    assert_eq!(store.count(&name, None).await.unwrap(), 3);
    let left: Vec<_> = store
        .get(&name, &s(&["r0", "r1", "r2", "r3", "r4", "r7"]))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, s(&["r2", "r3", "r7"]));
    let hits = store
        .search(&name, &[SearchRequest::new(vec![1.0, 0.0, 0.0, 0.0], 10)])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        ids(&hits.iter().map(|h| h.id.clone()).collect::<Vec<_>>()),
        s(&["r2", "r3", "r7"])
    );
    // Deleted ids can be written again.
    store
        .upsert(
            &name,
            vec![rec("r0", [1.0, 0.0, 0.0, 0.0], json!({"back": true}))],
        )
        .await
        .unwrap();
    assert_eq!(store.count(&name, None).await.unwrap(), 4);
}

pub async fn concurrent_writers_lose_nothing(store: Arc<dyn VectorStore>, p: &str) {
    let name = format!("{p}-concurrent");
    fresh(&*store, &name, Metric::Dot).await;
    let mut tasks = Vec::new();
    for w in 0..8u32 {
        let store = store.clone();
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..10u32 {
                // Each writer has ids of its own, and all of them fight over "shared".
                let mut batch: Vec<Record> = (0..5)
                    .map(|k| {
                        rec(
                            &format!("w{w}-{round}-{k}"),
                            [w as f32, round as f32, k as f32, 1.0],
                            json!({"w": w}),
                        )
                    })
                    .collect();
                batch.push(rec(
                    "shared",
                    [w as f32, round as f32, 0.0, 1.0],
                    json!({"w": w, "round": round}),
                ));
                store.upsert(&name, batch).await.unwrap();
            }
        }));
    }
    // Readers run while the writers write.
    let reader = {
        let store = store.clone();
        let name = name.clone();
        tokio::spawn(async move {
            for _ in 0..50 {
                let n = store.count(&name, None).await.unwrap();
                assert!(n <= 8 * 10 * 5 + 1);
                store
                    .search(&name, &[SearchRequest::new(vec![1.0, 1.0, 1.0, 1.0], 5)])
                    .await
                    .unwrap();
            }
        })
    };
    for t in tasks {
        t.await.unwrap();
    }
    reader.await.unwrap();
    assert_eq!(store.count(&name, None).await.unwrap(), 8 * 10 * 5 + 1);
    for w in 0..8u32 {
        let f = Filter::from_json(&json!({"w": w})).unwrap();
        let n = store.count(&name, Some(&f)).await.unwrap();
        assert!(n == 50 || n == 51, "writer {w}: {n}");
    }
    let shared = store.get(&name, &s(&["shared"])).await.unwrap().remove(0);
    // The shared record is exactly one writer's version, not a mix.
    let w = shared.metadata["w"].as_u64().unwrap() as f32;
    let round = shared.metadata["round"].as_u64().unwrap() as f32;
    assert_eq!(shared.vector, vec![w, round, 0.0, 1.0]);
}

/// `replace` writes its records and removes the other records its filter passes, as one write;
/// a refused batch changes nothing.
pub async fn replace_is_one_write(store: &dyn VectorStore, p: &str) {
    let name = format!("{p}-replace");
    fresh(store, &name, Metric::Cosine).await;
    let chunk = |id: &str, doc: &str, v: u32| {
        rec(id, [1.0, v as f32, 0.5, 0.0], json!({"_doc": doc, "v": v}))
    };
    let docs = |list: &[&str]| Filter::from_json(&json!({"_doc": {"$in": list}})).unwrap();
    store
        .upsert(
            &name,
            vec![
                chunk("a#0", "a", 1),
                chunk("a#1", "a", 1),
                chunk("a#2", "a", 1),
                chunk("b#0", "b", 1),
                chunk("c#0", "c", 1),
            ],
        )
        .await
        .unwrap();
    // a shrinks to two chunks, b is rewritten, d is new; c is not named and stays.
    let removed = store
        .replace(
            &name,
            vec![
                chunk("a#0", "a", 2),
                chunk("a#1", "a", 2),
                chunk("b#0", "b", 2),
                chunk("d#0", "d", 2),
            ],
            &docs(&["a", "b", "d"]),
        )
        .await
        .unwrap();
    assert_eq!(removed, 1, "a#2");
    let all = s(&["a#0", "a#1", "a#2", "b#0", "c#0", "d#0"]);
    let got: Vec<(String, u64)> = store
        .get(&name, &all)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.metadata["v"].as_u64().unwrap()))
        .collect();
    let want: Vec<(String, u64)> = [("a#0", 2), ("a#1", 2), ("b#0", 2), ("c#0", 1), ("d#0", 2)]
        .iter()
        .map(|(i, v)| (i.to_string(), *v))
        .collect();
    assert_eq!(got, want);
    // A batch with one bad record is refused whole: nothing removed, nothing written.
    let bad = vec![
        chunk("c#0", "c", 3),
        rec("c#1", [f32::NAN, 0.0, 0.0, 0.0], json!({"_doc": "c"})),
    ];
    let err = store.replace(&name, bad, &docs(&["c"])).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(store.count(&name, None).await.unwrap(), 5);
    let c = store.get(&name, &s(&["c#0"])).await.unwrap().remove(0);
    assert_eq!(c.metadata["v"], json!(1));
    // No records: the filter's records go; a filter that passes nothing changes nothing.
    assert_eq!(
        store.replace(&name, vec![], &docs(&["a"])).await.unwrap(),
        2
    );
    assert_eq!(
        store.replace(&name, vec![], &docs(&["zz"])).await.unwrap(),
        0
    );
    assert_eq!(store.count(&name, None).await.unwrap(), 3);
    // Search sees the result: a's chunks are gone from it.
    let hits = store
        .search(&name, &[SearchRequest::new(vec![1.0, 2.0, 0.5, 0.0], 10)])
        .await
        .unwrap()
        .remove(0);
    let mut found: Vec<String> = hits.into_iter().map(|h| h.id).collect();
    found.sort();
    assert_eq!(found, s(&["b#0", "c#0", "d#0"]));
}

/// A collection keeps the model and prompts it was created with: read back as written, listed
/// with it, and an `ensure` of the same shape without one (or with another) neither fails nor
/// overwrites it. A spec that would keep more dimensions than the model makes is refused.
pub async fn collections_keep_their_embedding_origin(store: &dyn VectorStore, p: &str) {
    let name = format!("{p}-origin");
    let _ = store.drop_collection(&name).await;
    let origin = EmbeddingOrigin {
        model: "e5-small".into(),
        model_dims: 8,
        query_prompt: Some("query: ".into()),
        document_prompt: Some("passage: ".into()),
        probe: vec![0.25, -0.5, 0.125, 0.75],
    };
    let spec = CollectionSpec::new(&name, 4, Metric::Cosine).with_embedding(Some(origin.clone()));
    store.create_collection(&spec).await.expect("create");
    let info = store.collection(&name).await.unwrap();
    assert_eq!(info.spec.embedding.as_ref(), Some(&origin));
    assert_eq!(info.spec, spec);
    let listed = store.list_collections().await.unwrap();
    let mine = listed.iter().find(|c| c.spec.name == name).expect("listed");
    assert_eq!(mine.spec.embedding.as_ref(), Some(&origin));
    // Same shape, no origin, or another one: accepted, and the recorded one stays.
    store
        .ensure_collection(&CollectionSpec::new(&name, 4, Metric::Cosine))
        .await
        .expect("same shape");
    let mut other = origin.clone();
    other.model = "another".into();
    store
        .ensure_collection(
            &CollectionSpec::new(&name, 4, Metric::Cosine).with_embedding(Some(other)),
        )
        .await
        .expect("same shape");
    let info = store.collection(&name).await.unwrap();
    assert_eq!(info.spec.embedding.as_ref(), Some(&origin));
    // A collection without one reads back without one.
    let plain = fresh(store, &format!("{p}-origin-none"), Metric::Cosine).await;
    assert_eq!(
        store.collection(&plain.name).await.unwrap().spec.embedding,
        None
    );
    // More dimensions than the model makes: refused before anything is made.
    let wide = format!("{p}-origin-wide");
    let _ = store.drop_collection(&wide).await;
    let too_many = CollectionSpec::new(&wide, 16, Metric::Cosine).with_embedding(Some(origin));
    assert_eq!(
        store.create_collection(&too_many).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        store.collection(&wide).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    store.drop_collection(&name).await.unwrap();
    store.drop_collection(&plain.name).await.unwrap();
}

/// Runs every check against `store` (sequentially), for a backend's single test.
pub async fn run_all(store: Arc<dyn VectorStore>, p: &str) {
    let s = &*store;
    collections_lifecycle(s, p).await;
    collections_keep_their_embedding_origin(s, p).await;
    unknown_collection_is_not_found(s, p).await;
    upsert_is_idempotent_and_get_keeps_order(s, p).await;
    bad_vectors_are_refused_and_nothing_is_written(s, p).await;
    cosine_vectors_are_normalized(s, p).await;
    filters_match_the_reference_semantics(s, p).await;
    search_orders_best_first_with_exact_scores(s, p).await;
    ties_are_broken_by_id(s, p).await;
    dot_and_l2_metrics(s, p).await;
    empty_collection_searches_return_nothing(s, p).await;
    deletes_by_id_and_by_filter(s, p).await;
    replace_is_one_write(s, p).await;
    concurrent_writers_lose_nothing(store.clone(), p).await;
}

/// A record with text (what lexical search indexes).
fn text_rec(id: &str, v: [f32; 4], text: Option<&str>, m: Value) -> Record {
    let mut meta = meta(m);
    if let Some(t) = text {
        meta.insert("_text".into(), Value::from(t));
    }
    Record::new(id, v.to_vec(), meta)
}

fn hit_ids(hits: &[Hit]) -> Vec<&str> {
    hits.iter().map(|h| h.id.as_str()).collect()
}

async fn lexical(
    store: &dyn VectorStore,
    c: &str,
    text: &str,
    k: usize,
    filter: Option<Value>,
) -> Vec<Hit> {
    let mut r = SearchRequest::new(Vec::new(), k).with_text(SearchMode::Lexical, text);
    r.filter = filter.map(|f| Filter::from_json(&f).unwrap());
    store
        .search(c, &[r])
        .await
        .expect("lexical search")
        .pop()
        .unwrap()
}

async fn hybrid(
    store: &dyn VectorStore,
    c: &str,
    v: [f32; 4],
    text: &str,
    k: usize,
    filter: Option<Value>,
) -> Vec<Hit> {
    let mut r = SearchRequest::new(v.to_vec(), k).with_text(SearchMode::Hybrid, text);
    r.filter = filter.map(|f| Filter::from_json(&f).unwrap());
    store
        .search(c, &[r])
        .await
        .expect("hybrid search")
        .pop()
        .unwrap()
}

async fn seeded_text(store: &dyn VectorStore, name: &str) {
    fresh(store, name, Metric::Cosine).await;
    let records = vec![
        text_rec(
            "a",
            [1.0, 0.0, 0.0, 0.0],
            Some("The stat module defines S_IFCHR for character devices."),
            json!({"lang": "en", "n": 1}),
        ),
        text_rec(
            "b",
            [0.0, 1.0, 0.0, 0.0],
            Some("Opening files in non-blocking mode uses O_NONBLOCK."),
            json!({"lang": "en", "n": 2}),
        ),
        text_rec(
            "c",
            [0.9, 0.1, 0.0, 0.0],
            Some("Character devices and block devices differ."),
            json!({"lang": "de", "n": 3}),
        ),
        text_rec(
            "d",
            [1.0, 0.05, 0.0, 0.0],
            None,
            json!({"lang": "en", "n": 4}),
        ),
        text_rec(
            "e",
            [0.0, 0.0, 1.0, 0.0],
            Some("Errors are raised when files are missing."),
            json!({"lang": "en", "n": 5}),
        ),
        text_rec(
            "f",
            [0.0, 0.0, 0.0, 1.0],
            Some("a zebra crossing"),
            json!({"lang": "en", "n": 6}),
        ),
        text_rec(
            "g",
            [0.0, 0.0, 0.0, 1.0],
            Some("a zebra crossing"),
            json!({"lang": "en", "n": 7}),
        ),
    ];
    store.upsert(name, records).await.expect("upsert");
}

/// Lexical search finds exact terms (identifiers whole), stems English words, leaves out stop
/// words and records without text, and orders equal scores by id.
pub async fn lexical_search_finds_exact_terms(store: &dyn VectorStore, p: &str) {
    let c = format!("{p}-lex");
    seeded_text(store, &c).await;
    let hits = lexical(store, &c, "S_IFCHR", 10, None).await;
    assert_eq!(hit_ids(&hits), ["a"]);
    assert!(hits[0].score > 0.0);
    assert_eq!((hits[0].lexical_rank, hits[0].vector_rank), (Some(1), None));
    assert!(hits[0].metadata.as_ref().unwrap()["_text"]
        .as_str()
        .unwrap()
        .contains("S_IFCHR"));
    assert_eq!(
        hit_ids(&lexical(store, &c, "o_nonblock", 10, None).await),
        ["b"]
    );
    // "character device" matches "Character devices" (stemmed) in a and c, nothing else.
    let mut got = hit_ids(&lexical(store, &c, "character device", 10, None).await)
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    got.sort();
    assert_eq!(got, ["a", "c"]);
    assert!(
        lexical(store, &c, "the of and", 10, None).await.is_empty(),
        "stop words only"
    );
    assert!(lexical(store, &c, "nowhere-to-be-found", 10, None)
        .await
        .is_empty());
    // Equal texts score equally and come back in id order; k cuts after the tie is ordered.
    assert_eq!(
        hit_ids(&lexical(store, &c, "zebra", 10, None).await),
        ["f", "g"]
    );
    assert_eq!(hit_ids(&lexical(store, &c, "zebra", 1, None).await), ["f"]);
    // The filter applies to the lexical arm.
    let de = lexical(
        store,
        &c,
        "character device",
        10,
        Some(json!({"lang": "de"})),
    )
    .await;
    assert_eq!(hit_ids(&de), ["c"]);
    let none = lexical(store, &c, "S_IFCHR", 10, Some(json!({"n": {"$gt": 1}}))).await;
    assert!(none.is_empty());
}

/// Hybrid search fuses the arms by reciprocal rank (k = 60), with the same filter on both
/// arms, ranks reported per arm, and exact fused scores.
pub async fn hybrid_search_fuses_both_arms(store: &dyn VectorStore, p: &str) {
    let c = format!("{p}-hyb");
    seeded_text(store, &c).await;
    // Vector arm: a, d, c, then b e f g at score 0 (id order). Lexical arm: b.
    let hits = hybrid(store, &c, [1.0, 0.0, 0.0, 0.0], "O_NONBLOCK", 3, None).await;
    assert_eq!(hit_ids(&hits), ["b", "a", "d"]);
    assert_eq!(
        (hits[0].vector_rank, hits[0].lexical_rank),
        (Some(4), Some(1))
    );
    assert_eq!(hits[0].score, (1.0f64 / 64.0 + 1.0 / 61.0) as f32);
    assert_eq!((hits[1].vector_rank, hits[1].lexical_rank), (Some(1), None));
    assert_eq!(hits[1].score, (1.0f64 / 61.0) as f32);
    assert_eq!(hits[2].score, (1.0f64 / 62.0) as f32);
    // Weights: with the lexical arm off, the vector order stands.
    let mut r =
        SearchRequest::new(vec![1.0, 0.0, 0.0, 0.0], 3).with_text(SearchMode::Hybrid, "O_NONBLOCK");
    r.fusion = Fusion {
        lexical_weight: 0.0,
        ..Fusion::default()
    };
    let w = store.search(&c, &[r]).await.unwrap().pop().unwrap();
    assert_eq!(hit_ids(&w), ["a", "d", "c"]);
    // A filter applies to both arms: only c has lang = de, so one hit, though k is 5.
    let de = hybrid(
        store,
        &c,
        [0.0, 1.0, 0.0, 0.0],
        "O_NONBLOCK",
        5,
        Some(json!({"lang": "de"})),
    )
    .await;
    assert_eq!(hit_ids(&de), ["c"]);
    assert_eq!((de[0].vector_rank, de[0].lexical_rank), (Some(1), None));
    // A query with no terms leaves the vector arm alone.
    let stop = hybrid(store, &c, [1.0, 0.0, 0.0, 0.0], "the of", 2, None).await;
    assert_eq!(hit_ids(&stop), ["a", "d"]);
    // Hybrid returns min(k, matches) rows.
    let all = hybrid(store, &c, [1.0, 0.0, 0.0, 0.0], "zebra", 100, None).await;
    assert_eq!(all.len(), 7);
}

/// Deletes and re-upserts reach both arms at once.
pub async fn writes_reach_both_arms(store: &dyn VectorStore, p: &str) {
    let c = format!("{p}-lexw");
    seeded_text(store, &c).await;
    store.delete(&c, &s(&["a"])).await.unwrap();
    assert!(lexical(store, &c, "S_IFCHR", 10, None).await.is_empty());
    let h = hybrid(store, &c, [1.0, 0.0, 0.0, 0.0], "S_IFCHR", 10, None).await;
    assert!(!hit_ids(&h).contains(&"a"));
    // Back with other text: found by the new term only.
    store
        .upsert(
            &c,
            vec![text_rec(
                "a",
                [1.0, 0.0, 0.0, 0.0],
                Some("now about SIGCHLD"),
                json!({"lang": "en"}),
            )],
        )
        .await
        .unwrap();
    assert!(lexical(store, &c, "S_IFCHR", 10, None).await.is_empty());
    assert_eq!(
        hit_ids(&lexical(store, &c, "sigchld", 10, None).await),
        ["a"]
    );
    // Text removed by an upsert without it: gone from the lexical arm, kept by the vector arm.
    store
        .upsert(
            &c,
            vec![text_rec(
                "b",
                [0.0, 1.0, 0.0, 0.0],
                None,
                json!({"lang": "en"}),
            )],
        )
        .await
        .unwrap();
    assert!(lexical(store, &c, "O_NONBLOCK", 10, None).await.is_empty());
    let h = hybrid(store, &c, [0.0, 1.0, 0.0, 0.0], "O_NONBLOCK", 1, None).await;
    assert_eq!(hit_ids(&h), ["b"]);
    assert_eq!(h[0].lexical_rank, None);
    // Delete by filter reaches the lexical arm too.
    store
        .delete_where(&c, &Filter::from_json(&json!({"lang": "de"})).unwrap())
        .await
        .unwrap();
    assert!(lexical(store, &c, "block devices", 10, None)
        .await
        .iter()
        .all(|h| h.id != "c"));
}

/// The `simple` analyzer keeps every word as it is; `english` stems.
pub async fn analyzers_differ_as_documented(store: &dyn VectorStore, p: &str) {
    for (analyzer, finds_stem) in [(Analyzer::English, true), (Analyzer::Simple, false)] {
        let name = format!("{p}-an-{}", analyzer.as_str());
        let _ = store.drop_collection(&name).await;
        let spec = CollectionSpec::new(&name, 4, Metric::Cosine).with_analyzer(analyzer);
        store.create_collection(&spec).await.unwrap();
        assert_eq!(
            store.collection(&name).await.unwrap().spec.analyzer,
            analyzer
        );
        store
            .upsert(
                &name,
                vec![text_rec(
                    "x",
                    [1.0, 0.0, 0.0, 0.0],
                    Some("The Errors of the day"),
                    json!({}),
                )],
            )
            .await
            .unwrap();
        assert_eq!(
            hit_ids(&lexical(store, &name, "ERRORS", 10, None).await),
            ["x"]
        );
        assert_eq!(
            !lexical(store, &name, "error", 10, None).await.is_empty(),
            finds_stem,
            "{analyzer:?}"
        );
        assert_eq!(
            !lexical(store, &name, "the", 10, None).await.is_empty(),
            !finds_stem,
            "{analyzer:?}"
        );
        let other = CollectionSpec::new(&name, 4, Metric::Cosine).with_analyzer(if finds_stem {
            Analyzer::Simple
        } else {
            Analyzer::English
        });
        assert_eq!(
            store.ensure_collection(&other).await.unwrap_err().kind(),
            ErrorKind::Conflict
        );
    }
}

/// Bad lexical and hybrid requests are refused before anything runs.
pub async fn bad_lexical_requests_are_refused(store: &dyn VectorStore, p: &str) {
    let c = format!("{p}-lexbad");
    seeded_text(store, &c).await;
    let bad = [
        SearchRequest::new(Vec::new(), 3).with_text(SearchMode::Lexical, "   "),
        SearchRequest::new(vec![1.0, 0.0, 0.0, 0.0], 3).with_text(SearchMode::Hybrid, ""),
        {
            let mut r = SearchRequest::new(Vec::new(), 3);
            r.mode = SearchMode::Lexical;
            r
        },
        {
            let mut r = SearchRequest::new(Vec::new(), 3).with_text(SearchMode::Lexical, "x");
            r.min_score = Some(0.5);
            r
        },
        SearchRequest::new(vec![1.0, 0.0], 3).with_text(SearchMode::Hybrid, "x"),
        SearchRequest::new(Vec::new(), 3).with_text(SearchMode::Lexical, "x".repeat(17_000)),
        {
            let mut r =
                SearchRequest::new(vec![1.0, 0.0, 0.0, 0.0], 3).with_text(SearchMode::Hybrid, "x");
            r.fusion.rrf_k = f64::INFINITY;
            r
        },
    ];
    for (i, r) in bad.into_iter().enumerate() {
        let err = store.search(&c, &[r]).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "case {i}: {err}");
    }
}

/// The lexical and hybrid checks, for backends that have them.
pub async fn run_hybrid(store: Arc<dyn VectorStore>, p: &str) {
    let s = &*store;
    lexical_search_finds_exact_terms(s, p).await;
    hybrid_search_fuses_both_arms(s, p).await;
    writes_reach_both_arms(s, p).await;
    analyzers_differ_as_documented(s, p).await;
    bad_lexical_requests_are_refused(s, p).await;
}
