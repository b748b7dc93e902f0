//! The embedded store: durable in a data directory, no server. Each collection is a folder with
//! `meta.json` and a write-ahead log; its records live in memory for search. A write returns Ok
//! only after its log frame is fsynced; opening replays the logs.
//!
//! Readers (get, count, search) run concurrently with each other and with a writer's disk I/O;
//! they wait only while a write is applied in memory. Writes to one collection are serialized.
//!
//! Collections of at least [`AnnConfig::exact_below`] records also keep an HNSW index ([`ann`]),
//! built in the background and checkpointed beside the log; until it is ready, and whenever an
//! exact scan is cheaper (small collections, selective filters), searches scan exactly. Index
//! candidates are always rescored with the exact f32 vectors.

mod ann;
mod log;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use self::ann::{discard_checkpoint, Ann};
pub use self::ann::{AnnConfig, IndexPrecision};

use async_trait::async_trait;
use serde_json::{Map, Value};

use self::log::{encode, sync_dir, FramePos, LogWriter, Op};
use super::{
    prepare_records, prepare_requests, sort_hits, validate_collection_name, CollectionInfo,
    CollectionSpec, Filter, Hit, Record, SearchRequest, VectorStore,
};
use crate::error::{Error, Result};

/// Records per frame when a log is compacted.
const COMPACT_CHUNK: usize = 1024;
/// On open, a checkpoint at most this many changed records behind the log is brought up to date
/// before open returns; a larger gap is closed in the background.
const SYNC_TAIL: usize = 2_000;
/// Records the background index build copies out of the collection at a time.
const BUILD_CHUNK: usize = 4_096;
/// A checkpoint is written during writes once this many records changed since the last one
/// (and at least a quarter of the collection), at most once per [`CHECKPOINT_EVERY`].
const CHECKPOINT_CHANGES: usize = 20_000;
const CHECKPOINT_EVERY: Duration = Duration::from_secs(30);
/// Records sampled to estimate the share a filter passes.
const FILTER_SAMPLE: usize = 512;

/// The records of one collection, in memory.
struct State {
    spec: CollectionSpec,
    slots: HashMap<String, usize>,
    ids: Vec<Option<String>>,
    vectors: Vec<f32>,
    metadata: Vec<Map<String, Value>>,
    free: Vec<usize>,
}

impl State {
    fn new(spec: CollectionSpec) -> Self {
        Self {
            spec,
            slots: HashMap::new(),
            ids: Vec::new(),
            vectors: Vec::new(),
            metadata: Vec::new(),
            free: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.slots.len()
    }

    fn vector(&self, slot: usize) -> &[f32] {
        let d = self.spec.dims;
        &self.vectors[slot * d..(slot + 1) * d]
    }

    /// Applies a logged operation; returns the slots it changed.
    fn apply(&mut self, op: Op) -> Vec<usize> {
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

    fn is_live(&self, slot: usize) -> bool {
        self.ids.get(slot).is_some_and(Option::is_some)
    }

    /// Renumbers the live records densely in ascending slot order (as replaying a compacted log
    /// numbers them); returns the `(from, to)` moves, ascending.
    fn renumber(&mut self) -> Vec<(usize, usize)> {
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
    fn filter_share(&self, filter: &Filter) -> f32 {
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

    fn record(&self, slot: usize) -> Record {
        Record {
            id: self.ids[slot].clone().unwrap_or_default(),
            vector: self.vector(slot).to_vec(),
            metadata: self.metadata[slot].clone(),
        }
    }

    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        self.ids
            .iter()
            .enumerate()
            .filter_map(|(i, id)| id.as_ref().map(|_| i))
    }

    fn matching<'a>(&'a self, filter: Option<&'a Filter>) -> impl Iterator<Item = usize> + 'a {
        self.live()
            .filter(move |&s| filter.is_none_or(|f| f.matches(&self.metadata[s])))
    }

    /// Exact search: scores every record that passes the filter.
    fn search(&self, req: &SearchRequest, query: &[f32]) -> Vec<Hit> {
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
    fn search_ann(&self, ann: &Ann, req: &SearchRequest, query: &[f32]) -> Option<Vec<Hit>> {
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

/// Whether a collection has an HNSW index, and how far along it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexStatus {
    /// No index: the collection is smaller than [`AnnConfig::exact_below`], or indexing is off.
    None,
    /// Being built or brought up to date in the background; searches scan exactly meanwhile.
    Building,
    /// In use, holding `indexed` vectors in `memory_bytes`.
    Ready {
        /// Vectors in the index.
        indexed: usize,
        /// Bytes the index holds in memory.
        memory_bytes: usize,
    },
}

enum AnnState {
    Off,
    /// A build is running; writes meanwhile record the slots they changed.
    Building {
        pending: Vec<usize>,
    },
    Ready(Arc<Ann>),
}

struct Writer {
    log: LogWriter,
    dropped: bool,
    /// Records changed since the index checkpoint.
    dirty: usize,
    saved_at: Instant,
    /// A build failed; no new one starts until the store is reopened.
    build_failed: bool,
}

struct Collection {
    spec: CollectionSpec,
    dir: PathBuf,
    cfg: AnnConfig,
    writer: Mutex<Writer>,
    state: RwLock<State>,
    /// Status transitions happen under the writer lock.
    ann: Mutex<AnnState>,
    closing: AtomicBool,
}

/// Brings the index up to date for `slots`: live ones (re)indexed, freed ones removed.
fn sync_slots(ann: &Ann, state: &State, slots: &mut Vec<usize>) -> Result<()> {
    slots.sort_unstable();
    slots.dedup();
    let (live, gone): (Vec<usize>, Vec<usize>) = slots.iter().partition(|&&s| state.is_live(s));
    ann.remove(gone)?;
    let items: Vec<(usize, &[f32])> = live.iter().map(|&s| (s, state.vector(s))).collect();
    ann.upsert(&items)
}

impl Collection {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn ann_state(&self) -> std::sync::MutexGuard<'_, AnnState> {
        self.ann.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The index, when it is ready.
    fn ready_ann(&self) -> Option<Arc<Ann>> {
        match &*self.ann_state() {
            AnnState::Ready(a) => Some(a.clone()),
            _ => None,
        }
    }

    fn status(&self) -> IndexStatus {
        match &*self.ann_state() {
            AnnState::Off => IndexStatus::None,
            AnnState::Building { .. } => IndexStatus::Building,
            AnnState::Ready(a) => IndexStatus::Ready {
                indexed: a.len(),
                memory_bytes: a.memory(),
            },
        }
    }

    /// Answers one search, choosing between the index and an exact scan.
    fn search(&self, state: &State, ann: Option<&Ann>, req: &SearchRequest, q: &[f32]) -> Vec<Hit> {
        let use_ann = ann.filter(|_| {
            state.len() >= self.cfg.exact_below
                && req
                    .filter
                    .as_ref()
                    .is_none_or(|f| state.filter_share(f) >= self.cfg.min_filter_share)
        });
        use_ann
            .and_then(|a| state.search_ann(a, req, q))
            .unwrap_or_else(|| state.search(req, q))
    }

    /// Logs `op` (fsynced), then applies it in memory and to the index. Serialized per
    /// collection.
    fn write(self: &Arc<Self>, op: Op) -> Result<()> {
        let payload = encode(&op, self.spec.dims)?;
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if w.dropped {
            return Err(Error::NotFound {
                what: format!("collection {:?}", self.spec.name),
            });
        }
        w.log.append(&payload)?;
        let (touched, live) = {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            let touched = state.apply(op);
            (touched, state.len())
        };
        self.index_write(&mut w, touched, live);
        self.maybe_compact(&mut w, live)
    }

    /// Carries a logged write over to the index. The write is durable already, so an index
    /// failure only drops the index (searches scan exactly) and is logged.
    fn index_write(self: &Arc<Self>, w: &mut Writer, mut touched: Vec<usize>, live: usize) {
        let mut st = self.ann_state();
        match &mut *st {
            AnnState::Building { pending } => pending.append(&mut touched),
            AnnState::Off => {
                if self.cfg.enabled && !w.build_failed && live >= self.cfg.exact_below {
                    let todo: Vec<usize> = self.read().live().collect();
                    match Ann::new(self.spec.dims, self.spec.metric, &self.cfg, live) {
                        Ok(ann) => {
                            *st = AnnState::Building {
                                pending: Vec::new(),
                            };
                            drop(st);
                            self.spawn_build(ann, todo);
                        }
                        Err(e) => {
                            w.build_failed = true;
                            tracing::error!(collection = %self.spec.name, error = %e, "cannot create the index");
                        }
                    }
                }
            }
            AnnState::Ready(ann) => {
                let ann = ann.clone();
                drop(st);
                w.dirty += touched.len();
                let synced = sync_slots(&ann, &self.read(), &mut touched);
                if let Err(e) = synced {
                    tracing::error!(collection = %self.spec.name, error = %e, "index update failed; searches scan exactly until reopen");
                    w.build_failed = true;
                    *self.ann_state() = AnnState::Off;
                    discard_checkpoint(&self.dir);
                    return;
                }
                if w.dirty >= CHECKPOINT_CHANGES.max(live / 4)
                    && w.saved_at.elapsed() >= CHECKPOINT_EVERY
                {
                    self.checkpoint(w, &ann);
                }
            }
        }
    }

    /// Saves the index with the log position it reflects (under the writer lock).
    fn checkpoint(&self, w: &mut Writer, ann: &Ann) {
        let started = Instant::now();
        match ann.save(&self.dir, w.log.last(), &self.cfg) {
            Ok(()) => {
                w.dirty = 0;
                w.saved_at = Instant::now();
                tracing::debug!(collection = %self.spec.name, ms = started.elapsed().as_millis() as u64, "saved the index checkpoint");
            }
            Err(e) => {
                tracing::warn!(collection = %self.spec.name, error = %e, "cannot save the index checkpoint");
            }
        }
    }

    /// Saves the index checkpoint if records changed since the last one.
    fn flush(&self) {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if w.dropped || w.dirty == 0 {
            return;
        }
        if let Some(ann) = self.ready_ann() {
            self.checkpoint(&mut w, &ann);
        }
    }

    /// Builds (or brings up to date) `ann` on a background thread by indexing `todo`, then
    /// applies the writes made meanwhile and puts it in use.
    fn spawn_build(self: &Arc<Self>, ann: Ann, todo: Vec<usize>) {
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("aistack-index-{}", self.spec.name))
            .spawn(move || {
                let started = Instant::now();
                let total = todo.len();
                match me.build(ann, todo) {
                    Ok(true) => {
                        tracing::info!(collection = %me.spec.name, records = total, ms = started.elapsed().as_millis() as u64, "index ready");
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(collection = %me.spec.name, error = %e, "index build failed; searches scan exactly");
                        let mut w = me.writer.lock().unwrap_or_else(|p| p.into_inner());
                        w.build_failed = true;
                        *me.ann_state() = AnnState::Off;
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(collection = %self.spec.name, error = %e, "cannot start the index build");
            let _ = self.writer.lock().map(|mut w| w.build_failed = true);
            *self.ann_state() = AnnState::Off;
        }
    }

    /// The build itself; `Ok(false)` when the collection closed or was dropped meanwhile.
    fn build(&self, ann: Ann, todo: Vec<usize>) -> Result<bool> {
        let dims = self.spec.dims;
        for chunk in todo.chunks(BUILD_CHUNK) {
            if self.closing.load(Ordering::Relaxed) {
                *self.ann_state() = AnnState::Off;
                return Ok(false);
            }
            let (mut gone, mut slots, mut vectors) = (Vec::new(), Vec::new(), Vec::new());
            {
                let state = self.read();
                for &s in chunk {
                    if state.is_live(s) {
                        slots.push(s);
                        vectors.extend_from_slice(state.vector(s));
                    } else {
                        gone.push(s);
                    }
                }
            }
            ann.remove(gone)?;
            let items: Vec<(usize, &[f32])> = slots
                .iter()
                .zip(vectors.chunks(dims))
                .map(|(&s, v)| (s, v))
                .collect();
            ann.upsert(&items)?;
        }
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut st = self.ann_state();
        if w.dropped || self.closing.load(Ordering::Relaxed) {
            *st = AnnState::Off;
            return Ok(false);
        }
        let mut pending = match &mut *st {
            AnnState::Building { pending } => std::mem::take(pending),
            _ => Vec::new(),
        };
        let state = self.read();
        sync_slots(&ann, &state, &mut pending)?;
        if ann.len() != state.len() {
            return Err(Error::Internal {
                context: format!(
                    "the index holds {} vectors for {} records",
                    ann.len(),
                    state.len()
                ),
                source: None,
            });
        }
        drop(state);
        let ann = Arc::new(ann);
        *st = AnnState::Ready(ann.clone());
        drop(st);
        w.dirty = 0;
        self.checkpoint(&mut w, &ann);
        Ok(true)
    }

    /// Rewrites the log once it holds much more than the live records (replaced and deleted
    /// records), so disk use and reopen time follow the data, not its history.
    fn maybe_compact(&self, w: &mut Writer, live: usize) -> Result<()> {
        let live_bytes = (live * (self.spec.dims * 4 + 96)) as u64;
        if w.log.len() < 64 * 1024 * 1024 || w.log.len() < 3 * live_bytes.max(1) {
            return Ok(());
        }
        let ann = match &*self.ann_state() {
            // The build works on the current slot numbers; compact after it finishes.
            AnnState::Building { .. } => return Ok(()),
            AnnState::Ready(a) => Some(a.clone()),
            AnnState::Off => None,
        };
        let started = Instant::now();
        let before = w.log.len();
        // The checkpoint names a position in the old log; a crash before the new one is saved
        // must not pair it with the new log.
        discard_checkpoint(&self.dir);
        {
            let state = self.read();
            let slots: Vec<usize> = state.live().collect();
            let dims = self.spec.dims;
            let ops = slots.chunks(COMPACT_CHUNK).map(|chunk| {
                let records = chunk.iter().map(|&s| state.record(s)).collect();
                encode(&Op::Upsert(records), dims)
            });
            w.log.rewrite(ops)?;
        }
        // Replaying the compacted log numbers the records densely; match it in memory.
        let moves = self
            .state
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .renumber();
        if let Some(ann) = ann {
            match ann.rename(&moves) {
                Ok(()) => self.checkpoint(w, &ann),
                Err(e) => {
                    tracing::error!(collection = %self.spec.name, error = %e, "index renumbering failed; searches scan exactly until reopen");
                    w.build_failed = true;
                    *self.ann_state() = AnnState::Off;
                }
            }
        }
        tracing::info!(
            collection = %self.spec.name,
            before_bytes = before,
            after_bytes = w.log.len(),
            ms = started.elapsed().as_millis() as u64,
            "compacted the collection log"
        );
        Ok(())
    }
}

/// The default store: durable in one data directory, with no server.
pub struct EmbeddedStore {
    root: PathBuf,
    cfg: AnnConfig,
    collections: RwLock<BTreeMap<String, Arc<Collection>>>,
    _lock: File,
}

impl Drop for EmbeddedStore {
    /// Stops background index builds and checkpoints the indexes, so the next open is fast.
    fn drop(&mut self) {
        let map = self
            .collections
            .get_mut()
            .unwrap_or_else(|p| p.into_inner());
        for c in map.values() {
            c.closing.store(true, Ordering::Relaxed);
            c.flush();
        }
    }
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("root", &self.root)
            .finish()
    }
}

fn collections_dir(root: &Path) -> PathBuf {
    root.join("collections")
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `root`, replaying every collection's log. One
    /// process at a time: a second open of the same directory fails with `Unavailable`.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Arc<Self>> {
        Self::open_with(root, AnnConfig::default()).await
    }

    /// Like [`EmbeddedStore::open`], with explicit HNSW index settings.
    pub async fn open_with(root: impl Into<PathBuf>, cfg: AnnConfig) -> Result<Arc<Self>> {
        cfg.validate()?;
        let root = root.into();
        tokio::task::spawn_blocking(move || Self::open_blocking(&root, cfg))
            .await
            .map_err(|e| Error::internal("opening the store", e))?
    }

    /// Saves every index checkpoint that is behind its log (also done when the store drops).
    pub async fn flush(self: &Arc<Self>) -> Result<()> {
        self.blocking(|s| {
            let map = s.collections.read().unwrap_or_else(|p| p.into_inner());
            map.values().for_each(|c| c.flush());
            Ok(())
        })
        .await
    }

    /// The HNSW index status of a collection.
    pub fn index_status(&self, collection: &str) -> Result<IndexStatus> {
        Ok(self.get_collection(collection)?.status())
    }

    fn open_blocking(root: &Path, cfg: AnnConfig) -> Result<Arc<Self>> {
        let cdir = collections_dir(root);
        std::fs::create_dir_all(&cdir).map_err(|e| Error::io(cdir.display().to_string(), e))?;
        sync_dir(root)?;
        let lock_path = root.join("LOCK");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(lock_path.display().to_string(), e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::unavailable(format!(
                    "the data directory {} is in use by another process",
                    root.display()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io(lock_path.display().to_string(), e))
            }
        }
        let mut collections = BTreeMap::new();
        let entries =
            std::fs::read_dir(&cdir).map_err(|e| Error::io(cdir.display().to_string(), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(cdir.display().to_string(), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with('.') {
                // Leftovers of an interrupted create or drop.
                let _ = std::fs::remove_dir_all(&path);
                continue;
            }
            let c = Self::open_collection(&path, &name, &cfg)?;
            collections.insert(name, c);
        }
        Ok(Arc::new(Self {
            root: root.to_path_buf(),
            cfg,
            collections: RwLock::new(collections),
            _lock: lock,
        }))
    }

    /// Opens one collection: replays its log, then loads its index checkpoint and brings it up
    /// to date with the log's tail (in the background when the tail is long), or builds the
    /// index in the background when there is no usable checkpoint.
    fn open_collection(dir: &Path, name: &str, cfg: &AnnConfig) -> Result<Arc<Collection>> {
        let meta_path = dir.join("meta.json");
        let bytes =
            std::fs::read(&meta_path).map_err(|e| Error::io(meta_path.display().to_string(), e))?;
        let spec: CollectionSpec = serde_json::from_slice(&bytes).map_err(|e| {
            Error::internal(
                format!("{} is not a valid collection spec", meta_path.display()),
                e,
            )
        })?;
        if spec.name != name {
            return Err(Error::Internal {
                context: format!("{} names collection {:?}", meta_path.display(), spec.name),
                source: None,
            });
        }
        let mut state = State::new(spec.clone());
        let loaded = if cfg.enabled {
            Ann::load(dir, spec.dims, spec.metric, cfg)
        } else {
            None
        };
        let at = loaded.as_ref().map(|(_, pos)| *pos);
        let mut reached = at == Some(FramePos::start());
        let mut tail = Vec::new();
        let log = LogWriter::open(&dir.join("log"), spec.dims, |op, pos| {
            let touched = state.apply(op);
            if reached {
                tail.extend(touched);
            }
            reached |= at == Some(pos);
        })?;
        let live = state.len();
        let mut start = None;
        let mut ann_state = AnnState::Off;
        match loaded {
            Some((ann, _)) if reached => {
                tail.sort_unstable();
                tail.dedup();
                if tail.len() <= SYNC_TAIL {
                    sync_slots(&ann, &state, &mut tail)?;
                    if ann.len() == live {
                        ann_state = AnnState::Ready(Arc::new(ann));
                    } else {
                        tracing::warn!(collection = %name, "the index checkpoint does not match the log; rebuilding");
                    }
                } else {
                    start = Some((ann, tail));
                }
            }
            Some(_) => {
                tracing::warn!(collection = %name, "the index checkpoint is not at a position of the log; rebuilding");
            }
            None => {}
        }
        if matches!(ann_state, AnnState::Off)
            && start.is_none()
            && cfg.enabled
            && live >= cfg.exact_below
        {
            discard_checkpoint(dir);
            start = Some((
                Ann::new(spec.dims, spec.metric, cfg, live)?,
                state.live().collect(),
            ));
        }
        if start.is_some() {
            ann_state = AnnState::Building {
                pending: Vec::new(),
            };
        }
        let c = Arc::new(Collection {
            spec,
            dir: dir.to_path_buf(),
            cfg: cfg.clone(),
            writer: Mutex::new(Writer {
                log,
                dropped: false,
                dirty: 0,
                saved_at: Instant::now(),
                build_failed: false,
            }),
            state: RwLock::new(state),
            ann: Mutex::new(ann_state),
            closing: AtomicBool::new(false),
        });
        if let Some((ann, todo)) = start {
            c.spawn_build(ann, todo);
        }
        Ok(c)
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn get_collection(&self, name: &str) -> Result<Arc<Collection>> {
        self.collections
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                what: format!("collection {name:?}"),
            })
    }

    fn create_blocking(&self, spec: &CollectionSpec, exist_ok: bool) -> Result<()> {
        spec.validate()?;
        let mut map = self.collections.write().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = map.get(&spec.name) {
            if exist_ok && existing.spec == *spec {
                return Ok(());
            }
            return Err(Error::Conflict(format!(
                "collection {:?} already exists with {} dims and metric {}",
                spec.name,
                existing.spec.dims,
                existing.spec.metric.as_str()
            )));
        }
        let cdir = collections_dir(&self.root);
        let tmp = cdir.join(format!(".create-{}", spec.name));
        let _ = std::fs::remove_dir_all(&tmp);
        let io = |e| Error::io(tmp.display().to_string(), e);
        std::fs::create_dir(&tmp).map_err(io)?;
        let meta = serde_json::to_vec_pretty(spec).map_err(|e| Error::internal("spec", e))?;
        {
            use std::io::Write;
            let mut f = File::create(tmp.join("meta.json")).map_err(io)?;
            f.write_all(&meta).and_then(|_| f.sync_all()).map_err(io)?;
        }
        LogWriter::create(&tmp.join("log"))?;
        sync_dir(&tmp)?;
        let dir = cdir.join(&spec.name);
        std::fs::rename(&tmp, &dir).map_err(io)?;
        sync_dir(&cdir)?;
        let c = Self::open_collection(&dir, &spec.name, &self.cfg)?;
        map.insert(spec.name.clone(), c);
        Ok(())
    }

    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Self) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|e| Error::internal("a store task failed", e))?
    }
}

/// The store behind an `Arc`, so blocking work can move to the blocking pool.
#[async_trait]
impl VectorStore for Arc<EmbeddedStore> {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn create_collection(&self, spec: &CollectionSpec) -> Result<()> {
        let spec = spec.clone();
        self.blocking(move |s| s.create_blocking(&spec, false))
            .await
    }

    async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<()> {
        let spec = spec.clone();
        self.blocking(move |s| s.create_blocking(&spec, true)).await
    }

    async fn list_collections(&self) -> Result<Vec<CollectionInfo>> {
        let map = self.collections.read().unwrap_or_else(|p| p.into_inner());
        Ok(map
            .values()
            .map(|c| CollectionInfo {
                spec: c.spec.clone(),
                count: c.read().len() as u64,
            })
            .collect())
    }

    async fn collection(&self, name: &str) -> Result<CollectionInfo> {
        validate_collection_name(name)?;
        let c = self.get_collection(name)?;
        let count = c.read().len() as u64;
        Ok(CollectionInfo {
            spec: c.spec.clone(),
            count,
        })
    }

    async fn drop_collection(&self, name: &str) -> Result<bool> {
        validate_collection_name(name)?;
        let name = name.to_string();
        self.blocking(move |s| {
            let mut map = s.collections.write().unwrap_or_else(|p| p.into_inner());
            let Some(c) = map.get(&name).cloned() else {
                return Ok(false);
            };
            let mut w = c.writer.lock().unwrap_or_else(|p| p.into_inner());
            let cdir = collections_dir(&s.root);
            let trash = cdir.join(format!(".drop-{name}-{}", std::process::id()));
            std::fs::rename(&c.dir, &trash)
                .map_err(|e| Error::io(c.dir.display().to_string(), e))?;
            sync_dir(&cdir)?;
            w.dropped = true;
            c.closing.store(true, Ordering::Relaxed);
            map.remove(&name);
            drop(w);
            drop(map);
            let _ = std::fs::remove_dir_all(&trash);
            Ok(true)
        })
        .await
    }

    async fn upsert(&self, collection: &str, mut records: Vec<Record>) -> Result<()> {
        let c = self.get_collection(collection)?;
        prepare_records(&c.spec, &mut records)?;
        if records.is_empty() {
            return Ok(());
        }
        self.blocking(move |_| c.write(Op::Upsert(records))).await
    }

    async fn get(&self, collection: &str, ids: &[String]) -> Result<Vec<Record>> {
        let c = self.get_collection(collection)?;
        let state = c.read();
        Ok(ids
            .iter()
            .filter_map(|id| state.slots.get(id).map(|&s| state.record(s)))
            .collect())
    }

    async fn delete(&self, collection: &str, ids: &[String]) -> Result<u64> {
        let c = self.get_collection(collection)?;
        let present: Vec<String> = {
            let state = c.read();
            let mut seen = std::collections::HashSet::new();
            ids.iter()
                .filter(|id| state.slots.contains_key(*id) && seen.insert(*id))
                .cloned()
                .collect()
        };
        if present.is_empty() {
            return Ok(0);
        }
        // Log every id asked for, so a concurrent upsert of one of them cannot survive the delete.
        let all: Vec<String> = ids.to_vec();
        let n = present.len() as u64;
        self.blocking(move |_| c.write(Op::Delete(all))).await?;
        Ok(n)
    }

    async fn delete_where(&self, collection: &str, filter: &Filter) -> Result<u64> {
        let c = self.get_collection(collection)?;
        let ids: Vec<String> = {
            let state = c.read();
            state
                .matching(Some(filter))
                .filter_map(|s| state.ids[s].clone())
                .collect()
        };
        if ids.is_empty() {
            return Ok(0);
        }
        let n = ids.len() as u64;
        self.blocking(move |_| c.write(Op::Delete(ids))).await?;
        Ok(n)
    }

    async fn count(&self, collection: &str, filter: Option<&Filter>) -> Result<u64> {
        let c = self.get_collection(collection)?;
        let state = c.read();
        Ok(match filter {
            None => state.len() as u64,
            Some(f) => state.matching(Some(f)).count() as u64,
        })
    }

    async fn search(&self, collection: &str, requests: &[SearchRequest]) -> Result<Vec<Vec<Hit>>> {
        let c = self.get_collection(collection)?;
        let queries = prepare_requests(&c.spec, requests)?;
        let requests = requests.to_vec();
        self.blocking(move |_| {
            let ann = c.ready_ann();
            let state = c.read();
            Ok(requests
                .iter()
                .zip(&queries)
                .map(|(r, q)| c.search(&state, ann.as_deref(), r, q))
                .collect())
        })
        .await
    }
}
