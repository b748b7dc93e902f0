//! The slot table of one collection: its records in memory (ids, contiguous vectors, metadata),
//! the logged operations applied to it, and filters and searches (exact, or through the index)
//! over it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Map, Value};

use roaring::RoaringBitmap;

use super::ann::Ann;
use super::lexical::LexView;
use super::log::Op;
use super::meta_index::MetaIndex;
use crate::error::{Error, Result};
use crate::store::{sort_hits, CollectionSpec, Filter, Hit, Record, SearchRequest, TEXT_KEY};

/// Records sampled to estimate the share a filter passes.
const FILTER_SAMPLE: usize = 512;

/// The records of one collection, in memory.
pub(super) struct State {
    spec: CollectionSpec,
    slots: HashMap<String, usize>,
    ids: Vec<Option<String>>,
    vectors: Vec<f32>,
    metadata: Vec<Map<String, Value>>,
    free: Vec<usize>,
    /// Slots by metadata value, so filters become slot sets.
    meta_index: MetaIndex,
    /// The lexical index as of the records held here.
    lexical: Lexical,
}

/// Where a collection's lexical index is, as searches see it.
pub(super) enum Lexical {
    /// No record has had text yet: lexical search finds nothing.
    Empty,
    /// In use.
    Ready(LexView),
    /// A write to it failed; lexical searches fail until the store reopens (and rebuilds it).
    Failed,
}

impl State {
    /// An empty collection.
    pub(super) fn new(spec: CollectionSpec) -> Self {
        Self {
            spec,
            slots: HashMap::new(),
            ids: Vec::new(),
            vectors: Vec::new(),
            metadata: Vec::new(),
            free: Vec::new(),
            meta_index: MetaIndex::default(),
            lexical: Lexical::Empty,
        }
    }

    /// The number of live records.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The vector in `slot`.
    pub(super) fn vector(&self, slot: usize) -> &[f32] {
        let d = self.spec.dims;
        &self.vectors[slot * d..(slot + 1) * d]
    }

    /// Puts a new state of the lexical index in use (with the write it reflects).
    pub(super) fn set_lexical(&mut self, lexical: Lexical) {
        self.lexical = lexical;
    }

    /// Whether the lexical index failed (and is out of service until reopen).
    pub(super) fn lexical_failed(&self) -> bool {
        matches!(self.lexical, Lexical::Failed)
    }

    /// Whether any live record has text (so a lexical index is worth having).
    pub(super) fn has_text(&self) -> bool {
        self.live().any(|s| self.text(s).is_some())
    }

    /// The slots [`State::apply`] will change for `op`, in order, each with the text it will
    /// then hold: the lexical index is written from this before the records change.
    pub(super) fn plan_op<'a>(&self, op: &'a Op) -> Vec<(usize, Option<&'a str>)> {
        let mut out = Vec::new();
        let (delete, upsert): (&[String], &[Record]) = match op {
            Op::Upsert(records) => (&[], records),
            Op::Delete(ids) => (ids, &[]),
            Op::Batch { delete, upsert } => (delete, upsert),
        };
        // Deletes run first: their slots go on top of the free list, their ids become new.
        let mut freed: Vec<usize> = Vec::new();
        let mut gone: HashSet<&str> = HashSet::new();
        for id in delete {
            if let Some(&s) = self.slots.get(id) {
                if gone.insert(id) {
                    freed.push(s);
                    out.push((s, None));
                }
            }
        }
        let mut free_top = self.free.len();
        let mut next_new = self.ids.len();
        let mut new_ids: HashMap<&str, usize> = HashMap::new();
        for r in upsert {
            let existing = self
                .slots
                .get(&r.id)
                .copied()
                .filter(|_| !gone.contains(r.id.as_str()));
            let slot = match existing.or_else(|| new_ids.get(r.id.as_str()).copied()) {
                Some(s) => s,
                None => {
                    let s = if let Some(s) = freed.pop() {
                        s
                    } else if free_top > 0 {
                        free_top -= 1;
                        self.free[free_top]
                    } else {
                        next_new += 1;
                        next_new - 1
                    };
                    new_ids.insert(&r.id, s);
                    s
                }
            };
            let text = r.metadata.get(TEXT_KEY).and_then(Value::as_str);
            out.push((slot, text));
        }
        out
    }

    /// Applies a logged operation; returns the slots it changed.
    pub(super) fn apply(&mut self, op: Op) -> Vec<usize> {
        let mut touched = Vec::new();
        match op {
            Op::Upsert(records) => self.upsert(records, &mut touched),
            Op::Delete(ids) => self.delete(ids, &mut touched),
            Op::Batch { delete, upsert } => {
                self.delete(delete, &mut touched);
                self.upsert(upsert, &mut touched);
            }
        }
        touched
    }

    fn upsert(&mut self, records: Vec<Record>, touched: &mut Vec<usize>) {
        let d = self.spec.dims;
        for r in records {
            let slot = match self.slots.get(&r.id) {
                Some(&s) => s,
                None => {
                    let s = match self.free.pop() {
                        Some(s) => s,
                        None => {
                            self.ids.push(None);
                            self.metadata.push(Map::new());
                            self.vectors.resize(self.vectors.len() + d, 0.0);
                            self.ids.len() - 1
                        }
                    };
                    self.slots.insert(r.id.clone(), s);
                    s
                }
            };
            self.vectors[slot * d..(slot + 1) * d].copy_from_slice(&r.vector);
            if self.ids[slot].is_some() {
                self.meta_index.remove(slot, &self.metadata[slot]);
            }
            self.meta_index.insert(slot, &r.metadata);
            self.metadata[slot] = r.metadata;
            self.ids[slot] = Some(r.id);
            touched.push(slot);
        }
    }

    fn delete(&mut self, ids: Vec<String>, touched: &mut Vec<usize>) {
        for id in ids {
            if let Some(slot) = self.slots.remove(&id) {
                self.meta_index.remove(slot, &self.metadata[slot]);
                self.ids[slot] = None;
                self.metadata[slot] = Map::new();
                self.free.push(slot);
                touched.push(slot);
            }
        }
    }

    /// Whether `slot` holds a record (rather than being free or out of range).
    pub(super) fn is_live(&self, slot: usize) -> bool {
        self.ids.get(slot).is_some_and(Option::is_some)
    }

    /// Renumbers the live records densely in ascending slot order (as replaying a compacted log
    /// numbers them); returns the `(from, to)` moves, ascending.
    pub(super) fn renumber(&mut self) -> Vec<(usize, usize)> {
        let d = self.spec.dims;
        let live: Vec<usize> = self.live().collect();
        let mut moves = Vec::new();
        for (to, &from) in live.iter().enumerate() {
            if to == from {
                continue;
            }
            let id = self.ids[from].take();
            if let Some(id) = &id {
                self.slots.insert(id.clone(), to);
            }
            self.ids[to] = id;
            self.metadata[to] = std::mem::take(&mut self.metadata[from]);
            self.vectors.copy_within(from * d..(from + 1) * d, to * d);
            moves.push((from, to));
        }
        self.ids.truncate(live.len());
        self.metadata.truncate(live.len());
        self.vectors.truncate(live.len() * d);
        self.free.clear();
        if !moves.is_empty() {
            self.meta_index = MetaIndex::default();
            for (slot, m) in self.metadata.iter().enumerate() {
                self.meta_index.insert(slot, m);
            }
        }
        moves
    }

    /// The exact set of live slots `filter` passes, from the metadata index; `None` for the
    /// rare filter it cannot answer (equality with a very long string).
    pub(super) fn plan(&self, filter: &Filter) -> Option<RoaringBitmap> {
        self.meta_index.plan(filter)
    }

    /// The share of live records `filter` passes, estimated from an even sample.
    pub(super) fn filter_share(&self, filter: &Filter) -> f32 {
        let step = (self.ids.len() / FILTER_SAMPLE).max(1);
        let (mut seen, mut passed) = (0usize, 0usize);
        for slot in (0..self.ids.len()).step_by(step) {
            if self.is_live(slot) {
                seen += 1;
                passed += usize::from(filter.matches(&self.metadata[slot]));
            }
        }
        if seen == 0 {
            0.0
        } else {
            passed as f32 / seen as f32
        }
    }

    /// The record in `slot`, copied out.
    pub(super) fn record(&self, slot: usize) -> Record {
        Record {
            id: self.ids[slot].clone().unwrap_or_default(),
            vector: self.vector(slot).to_vec(),
            metadata: self.metadata[slot].clone(),
        }
    }

    /// The record stored under `id`, if any.
    pub(super) fn record_of(&self, id: &str) -> Option<Record> {
        self.slots.get(id).map(|&s| self.record(s))
    }

    /// Whether a record is stored under `id`.
    pub(super) fn contains(&self, id: &str) -> bool {
        self.slots.contains_key(id)
    }

    /// The ids of the records `filter` passes.
    pub(super) fn ids_matching(&self, filter: &Filter) -> Vec<String> {
        self.matching(Some(filter))
            .filter_map(|s| self.ids[s].clone())
            .collect()
    }

    /// The slots holding records, ascending.
    pub(super) fn live(&self) -> impl Iterator<Item = usize> + '_ {
        self.ids
            .iter()
            .enumerate()
            .filter_map(|(i, id)| id.as_ref().map(|_| i))
    }

    /// The live slots whose metadata passes `filter` (all of them without one), ascending:
    /// the metadata index's answer, or a check of every record where it has none.
    pub(super) fn matching<'a>(
        &'a self,
        filter: Option<&'a Filter>,
    ) -> Box<dyn Iterator<Item = usize> + 'a> {
        match filter {
            None => Box::new(self.live()),
            Some(f) => match self.plan(f) {
                Some(set) => Box::new(set.into_iter().map(|s| s as usize)),
                None => Box::new(self.live().filter(move |&s| f.matches(&self.metadata[s]))),
            },
        }
    }

    /// Whether the record in `slot` is live and passes `filter`.
    pub(super) fn passes(&self, slot: usize, filter: Option<&Filter>) -> bool {
        self.is_live(slot) && filter.is_none_or(|f| f.matches(&self.metadata[slot]))
    }

    /// The record's text (its [`TEXT_KEY`] string), if it has one.
    pub(super) fn text(&self, slot: usize) -> Option<&str> {
        self.metadata
            .get(slot)
            .and_then(|m| m.get(TEXT_KEY))
            .and_then(Value::as_str)
    }

    /// Exact search: scores every record that passes the filter (`allowed`, when the caller
    /// has its slots already).
    pub(super) fn search(
        &self,
        req: &SearchRequest,
        query: &[f32],
        allowed: Option<&RoaringBitmap>,
    ) -> Vec<Hit> {
        let metric = self.spec.metric;
        let keep = |score: &f32| req.min_score.is_none_or(|m| *score >= m);
        let scored: Vec<(f32, usize)> = match allowed {
            // A slot set is scattered over memory: ask for the vectors a few slots ahead, so
            // their cache misses overlap the scoring of the ones before.
            Some(set) => {
                const AHEAD: usize = 4;
                let mut ahead = set.iter();
                for s in ahead.by_ref().take(AHEAD) {
                    prefetch(self.vector(s as usize));
                }
                let mut out = Vec::with_capacity(set.len() as usize);
                for s in set.iter().map(|s| s as usize) {
                    if let Some(next) = ahead.next() {
                        prefetch(self.vector(next as usize));
                    }
                    let score = metric.score(query, self.vector(s));
                    if keep(&score) {
                        out.push((score, s));
                    }
                }
                out
            }
            None => self
                .matching(req.filter.as_ref())
                .map(|s| (metric.score(query, self.vector(s)), s))
                .filter(|(score, _)| keep(score))
                .collect(),
        };
        self.hits(req, scored)
    }

    /// Lexical search: the best `req.k` records by BM25 over their text, among `allowed` (the
    /// filter's slots) when the request has a filter.
    pub(super) fn search_lexical(
        &self,
        req: &SearchRequest,
        allowed: Option<&Arc<RoaringBitmap>>,
    ) -> Result<Vec<Hit>> {
        let view = match &self.lexical {
            Lexical::Empty => return Ok(Vec::new()),
            Lexical::Ready(v) => v,
            Lexical::Failed => {
                return Err(Error::unavailable(format!(
                "the lexical index of collection {:?} failed; it is rebuilt when the store reopens",
                self.spec.name
            )))
            }
        };
        let allowed = match (&req.filter, allowed) {
            (None, _) => None,
            (Some(_), Some(set)) => Some(set.clone()),
            (Some(f), None) => Some(Arc::new(self.matching(Some(f)).map(|s| s as u32).collect())),
        };
        let text = req.text.as_deref().unwrap_or("");
        let scored: Vec<(f32, usize)> = view
            .search(text, req.k, allowed)?
            .into_iter()
            .filter(|&(_, s)| self.is_live(s))
            .collect();
        Ok(self.hits(req, scored))
    }

    /// Copies the metadata and vectors `req` asks for into `hits` (found without them).
    pub(super) fn fill(&self, hits: &mut [Hit], req: &SearchRequest) {
        if !req.with_metadata && !req.with_vector {
            return;
        }
        for h in hits {
            let Some(&s) = self.slots.get(&h.id) else {
                continue;
            };
            h.metadata = req.with_metadata.then(|| self.metadata[s].clone());
            h.vector = req.with_vector.then(|| self.vector(s).to_vec());
        }
    }

    /// The best `k` of the scored slots as hits, best first.
    fn hits(&self, req: &SearchRequest, mut scored: Vec<(f32, usize)>) -> Vec<Hit> {
        let better = |a: &(f32, usize), b: &(f32, usize)| {
            b.0.partial_cmp(&a.0)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then_with(|| self.ids[a.1].cmp(&self.ids[b.1]))
        };
        if scored.len() > req.k {
            scored.select_nth_unstable_by(req.k - 1, better);
            scored.truncate(req.k);
        }
        let mut hits: Vec<Hit> = scored
            .into_iter()
            .map(|(score, s)| Hit {
                id: self.ids[s].clone().unwrap_or_default(),
                score,
                metadata: req.with_metadata.then(|| self.metadata[s].clone()),
                vector: req.with_vector.then(|| self.vector(s).to_vec()),
                vector_rank: None,
                lexical_rank: None,
            })
            .collect();
        sort_hits(&mut hits);
        hits
    }

    /// Search through the index: candidates from the graph, rescored exactly. `None` when the
    /// index yields fewer candidates than the answer needs (the caller then scans exactly).
    pub(super) fn search_ann(
        &self,
        ann: &Ann,
        req: &SearchRequest,
        query: &[f32],
        allowed: Option<&RoaringBitmap>,
    ) -> Option<Vec<Hit>> {
        let want = (req.k * 2).max(req.k + 16);
        let candidates = match (&req.filter, allowed) {
            (None, _) => ann.search(query, want, None),
            (Some(_), Some(set)) => {
                let keep = |s: usize| set.contains(s as u32);
                ann.search(query, want, Some(&keep))
            }
            (Some(f), None) => {
                let keep = |s: usize| self.is_live(s) && f.matches(&self.metadata[s]);
                ann.search(query, want, Some(&keep))
            }
        };
        let candidates = match candidates {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(collection = %self.spec.name, error = %e, "index search failed; scanning");
                return None;
            }
        };
        // The index may trail the records by a write in progress: skip freed slots, and check
        // the filter on the record as it is now. Keys are unique in the index (it is not a
        // multi-index), so candidates are distinct.
        let candidates: Vec<usize> = candidates
            .into_iter()
            .filter(|&s| match allowed {
                Some(set) => set.contains(s as u32),
                None => self.passes(s, req.filter.as_ref()),
            })
            .collect();
        // The candidates' f32 vectors are scattered over memory: ask for all of them before
        // scoring the first, so their cache misses overlap.
        for &s in &candidates {
            prefetch(self.vector(s));
        }
        let metric = self.spec.metric;
        let mut scored: Vec<(f32, usize)> = candidates
            .into_iter()
            .map(|s| (metric.score(query, self.vector(s)), s))
            .collect();
        if scored.len() < req.k.min(self.len()) {
            return None;
        }
        scored.retain(|(score, _)| req.min_score.is_none_or(|m| *score >= m));
        Some(self.hits(req, scored))
    }
}

/// Hints the CPU to start loading `v` into cache (a no-op off x86_64).
#[inline]
fn prefetch(v: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in v.chunks(16) {
        // SAFETY: SSE is part of the x86_64 baseline, and a prefetch never faults; the pointer
        // is into a live slice anyway.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}
