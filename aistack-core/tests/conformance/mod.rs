//! The vector-store conformance suite: the same checks for every backend. Each check takes the
//! store and a collection-name prefix of its own, so checks can run in parallel on one server.
#![allow(dead_code)]

use std::sync::Arc;

use aistack_core::store::{CollectionSpec, Filter, Metric, Record, SearchRequest, VectorStore};
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

/// Runs every check against `store` (sequentially), for a backend's single test.
pub async fn run_all(store: Arc<dyn VectorStore>, p: &str) {
    let s = &*store;
    collections_lifecycle(s, p).await;
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
    concurrent_writers_lose_nothing(store.clone(), p).await;
}
