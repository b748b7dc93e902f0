//! The embedded store: durable in a data directory, no server. Each collection is a folder with
//! `meta.json` and a write-ahead log; its records live in memory for search. A write returns Ok
//! only after its log frame is fsynced; opening replays the logs.
//!
//! Readers (get, count, search) run concurrently with each other and with a writer's disk I/O;
//! they wait only while a write is applied in memory. Writes to one collection are serialized.

mod log;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use serde_json::{Map, Value};

use self::log::{encode, sync_dir, LogWriter, Op};
use super::{
    prepare_records, prepare_requests, sort_hits, validate_collection_name, CollectionInfo,
    CollectionSpec, Filter, Hit, Record, SearchRequest, VectorStore,
};
use crate::error::{Error, Result};

/// Records per frame when a log is compacted.
const COMPACT_CHUNK: usize = 1024;

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

    fn apply(&mut self, op: Op) {
        let d = self.spec.dims;
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
                }
            }
            Op::Delete(ids) => {
                for id in ids {
                    if let Some(slot) = self.slots.remove(&id) {
                        self.ids[slot] = None;
                        self.metadata[slot] = Map::new();
                        self.free.push(slot);
                    }
                }
            }
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
        let mut scored: Vec<(f32, usize)> = self
            .matching(req.filter.as_ref())
            .map(|s| (metric.score(query, self.vector(s)), s))
            .filter(|(score, _)| req.min_score.is_none_or(|m| *score >= m))
            .collect();
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
}

struct Writer {
    log: LogWriter,
    dropped: bool,
}

struct Collection {
    spec: CollectionSpec,
    dir: PathBuf,
    writer: Mutex<Writer>,
    state: RwLock<State>,
}

impl Collection {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Logs `op` (fsynced), then applies it in memory. Serialized per collection.
    fn write(&self, op: Op) -> Result<()> {
        let payload = encode(&op, self.spec.dims)?;
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if w.dropped {
            return Err(Error::NotFound {
                what: format!("collection {:?}", self.spec.name),
            });
        }
        w.log.append(&payload)?;
        let live = {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            state.apply(op);
            state.len()
        };
        self.maybe_compact(&mut w, live)
    }

    /// Rewrites the log once it holds much more than the live records (replaced and deleted
    /// records), so disk use and reopen time follow the data, not its history.
    fn maybe_compact(&self, w: &mut Writer, live: usize) -> Result<()> {
        let live_bytes = (live * (self.spec.dims * 4 + 96)) as u64;
        if w.log.len() < 64 * 1024 * 1024 || w.log.len() < 3 * live_bytes.max(1) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let before = w.log.len();
        let state = self.read();
        let slots: Vec<usize> = state.live().collect();
        let dims = self.spec.dims;
        let ops = slots.chunks(COMPACT_CHUNK).map(|chunk| {
            let records = chunk.iter().map(|&s| state.record(s)).collect();
            encode(&Op::Upsert(records), dims)
        });
        w.log.rewrite(ops)?;
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
    collections: RwLock<BTreeMap<String, Arc<Collection>>>,
    _lock: File,
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
        let root = root.into();
        tokio::task::spawn_blocking(move || Self::open_blocking(&root))
            .await
            .map_err(|e| Error::internal("opening the store", e))?
    }

    fn open_blocking(root: &Path) -> Result<Arc<Self>> {
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
            let c = Self::open_collection(&path, &name)?;
            collections.insert(name, Arc::new(c));
        }
        Ok(Arc::new(Self {
            root: root.to_path_buf(),
            collections: RwLock::new(collections),
            _lock: lock,
        }))
    }

    fn open_collection(dir: &Path, name: &str) -> Result<Collection> {
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
        let log = LogWriter::open(&dir.join("log"), spec.dims, |op| state.apply(op))?;
        Ok(Collection {
            spec,
            dir: dir.to_path_buf(),
            writer: Mutex::new(Writer {
                log,
                dropped: false,
            }),
            state: RwLock::new(state),
        })
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
        let c = Self::open_collection(&dir, &spec.name)?;
        map.insert(spec.name.clone(), Arc::new(c));
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
            let state = c.read();
            Ok(requests
                .iter()
                .zip(&queries)
                .map(|(r, q)| state.search(r, q))
                .collect())
        })
        .await
    }
}
