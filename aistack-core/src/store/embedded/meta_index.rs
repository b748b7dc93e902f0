//! An inverted index over the metadata of a collection's records, in memory: for every field
//! path, the slots holding each value, so a filter becomes the exact set of matching slots
//! without reading every record's metadata. It follows [`Filter::matches`] exactly (arrays match
//! by any element, numbers compare by value, dotted paths address nested objects); the one
//! filter it cannot answer is equality with a string longer than [`MAX_INDEXED_STR`] bytes,
//! which the caller then evaluates record by record.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use roaring::RoaringBitmap;
use serde_json::{Map, Value};

use crate::store::filter::{Cmp, Scalar};
use crate::store::Filter;

/// Strings longer than this (in bytes) are not indexed by value (chunk texts, for one); fields
/// holding them stay indexed for presence.
pub(super) const MAX_INDEXED_STR: usize = 256;

/// A number as a totally ordered key (`-0.0` is `0.0`; JSON has no NaN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct NumKey(i64);

impl NumKey {
    fn of(x: f64) -> Self {
        let x = if x == 0.0 { 0.0 } else { x };
        let bits = x.to_bits() as i64;
        // Flip the magnitude bits of negatives so integer order is numeric order.
        NumKey(bits ^ (((bits >> 63) as u64) >> 1) as i64)
    }
}

/// The values one field path holds, each with the slots that hold it.
#[derive(Default)]
struct PathIndex {
    /// Slots where the path holds something other than null.
    present: RoaringBitmap,
    strs: HashMap<Box<str>, RoaringBitmap>,
    nums: BTreeMap<NumKey, RoaringBitmap>,
    bools: [RoaringBitmap; 2],
}

impl PathIndex {
    fn is_empty(&self) -> bool {
        self.present.is_empty()
    }
}

/// The metadata index of one collection.
#[derive(Default)]
pub(super) struct MetaIndex {
    live: RoaringBitmap,
    paths: HashMap<Box<str>, PathIndex>,
}

impl MetaIndex {
    /// Records `metadata` as held by `slot` (which must not hold anything now).
    pub(super) fn insert(&mut self, slot: usize, metadata: &Map<String, Value>) {
        let slot = slot as u32;
        self.live.insert(slot);
        walk(metadata, &mut String::new(), &mut |path, v| {
            let p = self.paths.entry(path.into()).or_default();
            post(p, slot, v, true);
        });
    }

    /// Forgets that `slot` held `metadata`.
    pub(super) fn remove(&mut self, slot: usize, metadata: &Map<String, Value>) {
        let slot = slot as u32;
        self.live.remove(slot);
        walk(metadata, &mut String::new(), &mut |path, v| {
            if let Some(p) = self.paths.get_mut(path) {
                post(p, slot, v, false);
                if p.is_empty() {
                    self.paths.remove(path);
                }
            }
        });
    }

    /// The exact set of slots `filter` passes, or `None` when it compares a field with a string
    /// too long to be indexed.
    pub(super) fn plan(&self, filter: &Filter) -> Option<RoaringBitmap> {
        Some(match filter {
            Filter::Eq(f, s) => self.eq(f, s)?,
            Filter::Ne(f, s) => &self.live - &self.eq(f, s)?,
            Filter::In(f, list) => self.any_of(f, list)?,
            Filter::Nin(f, list) => &self.live - &self.any_of(f, list)?,
            Filter::Cmp(f, op, x) => self.cmp(f, *op, *x),
            Filter::Exists(f, want) => {
                let present = self.paths.get(f.as_str()).map(|p| &p.present);
                match (present, want) {
                    (Some(p), true) => p.clone(),
                    (None, true) => RoaringBitmap::new(),
                    (Some(p), false) => &self.live - p,
                    (None, false) => self.live.clone(),
                }
            }
            Filter::And(fs) => {
                let mut sets = fs
                    .iter()
                    .map(|f| self.plan(f))
                    .collect::<Option<Vec<_>>>()?;
                sets.sort_by_key(|s| s.len());
                let mut it = sets.into_iter();
                match it.next() {
                    None => self.live.clone(),
                    Some(mut acc) => {
                        for s in it {
                            if acc.is_empty() {
                                break;
                            }
                            acc &= s;
                        }
                        acc
                    }
                }
            }
            Filter::Or(fs) => {
                let mut acc = RoaringBitmap::new();
                for f in fs {
                    acc |= self.plan(f)?;
                }
                acc
            }
            Filter::Not(f) => &self.live - &self.plan(f)?,
        })
    }

    fn eq(&self, field: &str, s: &Scalar) -> Option<RoaringBitmap> {
        let Some(p) = self.paths.get(field) else {
            return Some(RoaringBitmap::new());
        };
        Some(match s {
            Scalar::Str(v) if v.len() > MAX_INDEXED_STR => return None,
            Scalar::Str(v) => p.strs.get(v.as_str()).cloned().unwrap_or_default(),
            Scalar::Num(x) => p.nums.get(&NumKey::of(*x)).cloned().unwrap_or_default(),
            Scalar::Bool(b) => p.bools[usize::from(*b)].clone(),
        })
    }

    fn any_of(&self, field: &str, list: &[Scalar]) -> Option<RoaringBitmap> {
        let mut acc = RoaringBitmap::new();
        for s in list {
            acc |= self.eq(field, s)?;
        }
        Some(acc)
    }

    fn cmp(&self, field: &str, op: Cmp, x: f64) -> RoaringBitmap {
        let Some(p) = self.paths.get(field) else {
            return RoaringBitmap::new();
        };
        let k = NumKey::of(x);
        let range: (Bound<NumKey>, Bound<NumKey>) = match op {
            Cmp::Gt => (Bound::Excluded(k), Bound::Unbounded),
            Cmp::Gte => (Bound::Included(k), Bound::Unbounded),
            Cmp::Lt => (Bound::Unbounded, Bound::Excluded(k)),
            Cmp::Lte => (Bound::Unbounded, Bound::Included(k)),
        };
        let mut acc = RoaringBitmap::new();
        for set in p.nums.range(range).map(|(_, s)| s) {
            acc |= set;
        }
        acc
    }
}

/// Adds (or removes) `slot` under the value `v` of one path.
fn post(p: &mut PathIndex, slot: u32, v: &Value, add: bool) {
    let set = |b: &mut RoaringBitmap| {
        if add {
            b.insert(slot);
        } else {
            b.remove(slot);
        }
    };
    if v.is_null() {
        return;
    }
    set(&mut p.present);
    let scalars: &[Value] = match v {
        Value::Array(items) => items,
        other => std::slice::from_ref(other),
    };
    for s in scalars {
        match s {
            Value::String(st) if st.len() <= MAX_INDEXED_STR => {
                if add {
                    p.strs.entry(st.as_str().into()).or_default().insert(slot);
                } else if let Some(b) = p.strs.get_mut(st.as_str()) {
                    b.remove(slot);
                    if b.is_empty() {
                        p.strs.remove(st.as_str());
                    }
                }
            }
            Value::Number(n) => {
                if let Some(x) = n.as_f64() {
                    let k = NumKey::of(x);
                    if add {
                        p.nums.entry(k).or_default().insert(slot);
                    } else if let Some(b) = p.nums.get_mut(&k) {
                        b.remove(slot);
                        if b.is_empty() {
                            p.nums.remove(&k);
                        }
                    }
                }
            }
            Value::Bool(b) => set(&mut p.bools[usize::from(*b)]),
            _ => {}
        }
    }
}

/// Calls `f(path, value)` for every field path a filter can address: object keys joined by
/// `.`, through nested objects (keys that hold a `.` cannot be addressed and are skipped).
fn walk(m: &Map<String, Value>, prefix: &mut String, f: &mut impl FnMut(&str, &Value)) {
    for (k, v) in m {
        if k.is_empty() || k.contains('.') {
            continue;
        }
        let len = prefix.len();
        if len > 0 {
            prefix.push('.');
        }
        prefix.push_str(k);
        f(prefix, v);
        if let Value::Object(inner) = v {
            walk(inner, prefix, f);
        }
        prefix.truncate(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn corpus() -> Vec<Map<String, Value>> {
        let long = "x".repeat(MAX_INDEXED_STR + 1);
        [
            json!({"lang": "en", "year": 2024, "tags": ["rust", "db"], "a": {"b": 1}, "ok": true}),
            json!({"lang": "de", "year": 2021.5, "tags": [], "a": {"b": 2}, "ok": false}),
            json!({"lang": "en", "year": -0.0, "tags": ["db", 3, {"x": 1}], "n": null}),
            json!({"lang": long, "year": "2024", "a.b": 1, "a": 7}),
            json!({"tags": "rust", "a": {"b": [1, 2]}, "ok": [true, false]}),
            json!({}),
        ]
        .into_iter()
        .map(meta)
        .collect()
    }

    fn filters() -> Vec<Value> {
        let long = "x".repeat(MAX_INDEXED_STR + 1);
        vec![
            json!({"lang": "en"}),
            json!({"lang": {"$ne": "en"}}),
            json!({"lang": {"$in": ["de", "fr"]}}),
            json!({"lang": {"$nin": ["de", "en"]}}),
            json!({"year": 2024}),
            json!({"year": 0}),
            json!({"year": {"$gt": 2021.5}}),
            json!({"year": {"$gte": 2021.5}}),
            json!({"year": {"$lt": 2024}}),
            json!({"year": {"$lte": -1}}),
            json!({"tags": "db"}),
            json!({"tags": 3}),
            json!({"tags": {"$exists": true}}),
            json!({"n": {"$exists": true}}),
            json!({"n": {"$exists": false}}),
            json!({"a.b": 1}),
            json!({"a.b": {"$gte": 2}}),
            json!({"a": 7}),
            json!({"ok": true}),
            json!({"ok": {"$ne": false}}),
            json!({"missing": {"$ne": 1}}),
            json!({"$or": [{"lang": "de"}, {"tags": "rust"}]}),
            json!({"$and": [{"lang": "en"}, {"$not": {"tags": "rust"}}]}),
            json!({"$and": []}),
            json!({"$or": []}),
            json!({"lang": "en", "year": {"$gte": 2000}}),
        ]
        .into_iter()
        .chain([json!({"lang": long})])
        .collect()
    }

    fn check(idx: &MetaIndex, records: &[Option<Map<String, Value>>]) {
        for fj in filters() {
            let f = Filter::from_json(&fj).unwrap();
            let want: RoaringBitmap = records
                .iter()
                .enumerate()
                .filter(|(_, m)| m.as_ref().is_some_and(|m| f.matches(m)))
                .map(|(i, _)| i as u32)
                .collect();
            match idx.plan(&f) {
                Some(got) => assert_eq!(got, want, "filter {fj}"),
                None => assert!(fj.to_string().len() > MAX_INDEXED_STR, "filter {fj}"),
            }
        }
    }

    #[test]
    fn plans_agree_with_matches() {
        let mut idx = MetaIndex::default();
        let mut records: Vec<Option<Map<String, Value>>> = Vec::new();
        for (i, m) in corpus().into_iter().enumerate() {
            idx.insert(i, &m);
            records.push(Some(m));
        }
        check(&idx, &records);
        // Removing and replacing records leaves no stale postings.
        for slot in [0usize, 3, 4] {
            let old = records[slot].take().unwrap();
            idx.remove(slot, &old);
        }
        check(&idx, &records);
        let replacement = meta(json!({"lang": "en", "tags": ["rust"], "year": 1999}));
        idx.insert(3, &replacement);
        records[3] = Some(replacement);
        check(&idx, &records);
    }

    #[test]
    fn removing_everything_leaves_nothing() {
        let mut idx = MetaIndex::default();
        let records = corpus();
        for (i, m) in records.iter().enumerate() {
            idx.insert(i, m);
        }
        for (i, m) in records.iter().enumerate() {
            idx.remove(i, m);
        }
        assert!(idx.live.is_empty());
        assert!(idx.paths.is_empty());
    }

    #[test]
    fn number_keys_order_numerically() {
        let xs = [-1e300, -2.5, -1.0, 0.0, 1e-300, 1.0, 2024.0, 1e300];
        for w in xs.windows(2) {
            assert!(NumKey::of(w[0]) < NumKey::of(w[1]), "{} < {}", w[0], w[1]);
        }
        assert_eq!(NumKey::of(-0.0), NumKey::of(0.0));
    }
}
