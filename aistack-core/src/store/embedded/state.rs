//! The slot table of one collection: its records in memory (ids, contiguous vectors, metadata),
//! the logged operations applied to it, and filters and searches (exact, or through the index)
//! over it.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::ann::Ann;
use super::log::Op;
use crate::store::{sort_hits, CollectionSpec, Filter, Hit, Record, SearchRequest};

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

    /// Applies a logged operation; returns the slots it changed.
    pub(super) fn apply(&mut self, op: Op) -> Vec<usize> {
        let d = self.spec.dims;
        let mut touched = Vec::new();
        match op {
            Op::Upsert(records) => {
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
                    self.metadata[slot] = r.metadata;
                    self.ids[slot] = Some(r.id);
                    touched.push(slot);
                }
            }
            Op::Delete(ids) => {
                for id in ids {
                    if let Some(slot) = self.slots.remove(&id) {
                        self.ids[slot] = None;
                        self.metadata[slot] = Map::new();
                        self.free.push(slot);
                        touched.push(slot);
                    }
                }
            }
        }
        touched
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
        moves
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

    /// The live slots whose metadata passes `filter` (all of them without one), ascending.
    pub(super) fn matching<'a>(
        &'a self,
        filter: Option<&'a Filter>,
    ) -> impl Iterator<Item = usize> + 'a {
        self.live()
            .filter(move |&s| filter.is_none_or(|f| f.matches(&self.metadata[s])))
    }

    /// Exact search: scores every record that passes the filter.
    pub(super) fn search(&self, req: &SearchRequest, query: &[f32]) -> Vec<Hit> {
        let metric = self.spec.metric;
        let scored: Vec<(f32, usize)> = self
            .matching(req.filter.as_ref())
            .map(|s| (metric.score(query, self.vector(s)), s))
            .filter(|(score, _)| req.min_score.is_none_or(|m| *score >= m))
            .collect();
        self.hits(req, scored)
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
    ) -> Option<Vec<Hit>> {
        let want = (req.k * 2).max(req.k + 16);
        let candidates = match &req.filter {
            None => ann.search(query, want, None),
            Some(f) => {
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
            .filter(|&s| {
                self.is_live(s)
                    && req
                        .filter
                        .as_ref()
                        .is_none_or(|f| f.matches(&self.metadata[s]))
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
