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
//!
//! Records with text ([`TEXT_KEY`](crate::store::TEXT_KEY)) are also in a BM25 index
//! ([`lexical`], tantivy) for lexical and hybrid search, and every collection keeps an inverted
//! index of its metadata in memory ([`meta_index`]), so a filter is the exact set of matching
//! records before any vector is read.
//!
//! The code is split by what it does: `state` is the slot table and the searches over it,
//! `lifecycle` opens, creates, drops and closes, `write_ops` is the write path (log, index,
//! checkpoints, compaction, background builds) and `read_ops` the reads; this file holds the
//! types they share and the [`VectorStore`] impl, which only decides where each call runs.

mod ann;
#[doc(hidden)]
pub mod fuzz;
mod lexical;
mod lifecycle;
mod log;
mod meta_index;
mod read_ops;
mod state;
mod write_ops;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};

use async_trait::async_trait;

use self::ann::Ann;
pub use self::ann::{AnnConfig, IndexPrecision};
use self::lexical::LexIndex;
use self::log::{LogWriter, Op};
use self::state::State;
use super::{
    prepare_records, prepare_requests, validate_collection_name, CollectionInfo, CollectionSpec,
    Filter, Hit, Record, SearchRequest, VectorStore,
};
use crate::error::{Error, ErrorKind, Result};

/// A `get` of at most this many ids is answered on the calling task (a hash lookup and a copy
/// per id); a longer one moves to the blocking pool like the other reads that scan records.
const INLINE_GET: usize = 64;

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

/// Where a collection's index is; see [`IndexStatus`].
enum AnnState {
    /// No index.
    Off,
    /// A build is running; writes meanwhile record the slots they changed.
    Building { pending: Vec<usize> },
    /// In use.
    Ready(Arc<Ann>),
}

/// What a collection's writer holds: its log and the bookkeeping of writes.
struct Writer {
    log: LogWriter,
    dropped: bool,
    /// Records changed since the index checkpoint.
    dirty: usize,
    saved_at: Instant,
    /// A build failed; no new one starts until the store is reopened.
    build_failed: bool,
    /// The lexical index's writer; `None` until a record has text, or after it failed.
    lexical: Option<LexIndex>,
    /// After a failure (a full disk, say), when a write may rebuild the lexical index.
    lexical_retry_at: Option<Instant>,
}

/// One open collection.
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

impl Collection {
    /// The records, for reading.
    fn read(&self) -> parking_lot::RwLockReadGuard<'_, State> {
        self.state.read()
    }

    /// The index state (status transitions happen under the writer lock).
    fn ann_state(&self) -> parking_lot::MutexGuard<'_, AnnState> {
        self.ann.lock()
    }

    /// The index, when it is ready.
    fn ready_ann(&self) -> Option<Arc<Ann>> {
        match &*self.ann_state() {
            AnnState::Ready(a) => Some(a.clone()),
            _ => None,
        }
    }
}

/// The default store: durable in one data directory, with no server. A cheap handle: clones
/// share the open store, which closes (checkpointing its indexes) when the last clone goes.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

/// The open store behind every [`EmbeddedStore`] handle.
struct Inner {
    root: PathBuf,
    cfg: AnnConfig,
    collections: RwLock<BTreeMap<String, Arc<Collection>>>,
    /// A write failed for a full or read-only disk, and no probe has seen the disk take
    /// writes since ([`Inner::check_writable`]).
    write_failed: AtomicBool,
    _lock: File,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("root", &self.inner.root)
            .finish()
    }
}

impl EmbeddedStore {
    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Runs `f` on the blocking pool: every call that does disk I/O or scans records goes
    /// through here. The task holds a handle, so the store stays open until it finishes.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Error::internal("a store task failed", e))?
    }

    /// [`EmbeddedStore::blocking`] for a write: a full or read-only disk is remembered, so
    /// health reports it until the disk takes writes again.
    async fn writing<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let result = self.blocking(f).await;
        self.inner.note_write(&result);
        result
    }
}

/// Bytes written, fsynced and removed to tell whether the disk takes writes again.
const PROBE_BYTES: usize = 64 * 1024;

impl Inner {
    /// Remembers a write that failed for a full or read-only disk (until [`Inner::check_writable`]
    /// sees the disk take writes again).
    fn note_write<T>(&self, result: &Result<T>) {
        if matches!(result, Err(e) if e.kind() == ErrorKind::InsufficientStorage) {
            self.write_failed.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the data directory takes writes: after a write failed for a full or read-only
    /// disk, a small file is written, fsynced and removed to see if it does again.
    fn check_writable(&self) -> Result<()> {
        let probe = self.root.join(".write-probe");
        let written = File::create(&probe).and_then(|mut f| {
            std::io::Write::write_all(&mut f, &[0u8; PROBE_BYTES])?;
            f.sync_all()
        });
        let _ = std::fs::remove_file(&probe);
        match written {
            Ok(()) => {
                self.write_failed.store(false, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(Error::io(format!("writing {}", probe.display()), e)),
        }
    }

    /// The open collection `name`, or `NotFound`.
    fn get_collection(&self, name: &str) -> Result<Arc<Collection>> {
        self.collections
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                what: format!("collection {name:?}"),
            })
    }
}

/// Cheap calls (lookups of a few ids, counts without a filter, collection info) are answered
/// inline; creates, drops, writes, filtered counts and deletes, long gets and searches run on
/// the blocking pool.
#[async_trait]
impl VectorStore for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn create_collection(&self, spec: &CollectionSpec) -> Result<()> {
        let spec = spec.clone();
        self.writing(move |s| s.create(&spec, false)).await
    }

    async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<()> {
        let spec = spec.clone();
        self.writing(move |s| s.create(&spec, true)).await
    }

    async fn list_collections(&self) -> Result<Vec<CollectionInfo>> {
        Ok(self.inner.list())
    }

    async fn collection(&self, name: &str) -> Result<CollectionInfo> {
        validate_collection_name(name)?;
        Ok(self.inner.get_collection(name)?.info())
    }

    async fn drop_collection(&self, name: &str) -> Result<bool> {
        validate_collection_name(name)?;
        let name = name.to_string();
        self.writing(move |s| s.drop_collection(&name)).await
    }

    async fn upsert(&self, collection: &str, mut records: Vec<Record>) -> Result<()> {
        let c = self.inner.get_collection(collection)?;
        prepare_records(&c.spec, &mut records)?;
        if records.is_empty() {
            return Ok(());
        }
        self.writing(move |_| c.write(Op::Upsert(records))).await
    }

    async fn get(&self, collection: &str, ids: &[String]) -> Result<Vec<Record>> {
        let c = self.inner.get_collection(collection)?;
        if ids.len() <= INLINE_GET {
            return Ok(c.get(ids));
        }
        let ids = ids.to_vec();
        self.blocking(move |_| Ok(c.get(&ids))).await
    }

    async fn delete(&self, collection: &str, ids: &[String]) -> Result<u64> {
        let c = self.inner.get_collection(collection)?;
        let ids = ids.to_vec();
        self.writing(move |_| c.delete(ids)).await
    }

    async fn delete_where(&self, collection: &str, filter: &Filter) -> Result<u64> {
        let c = self.inner.get_collection(collection)?;
        let filter = filter.clone();
        self.writing(move |_| c.delete_where(&filter)).await
    }

    async fn replace(
        &self,
        collection: &str,
        mut records: Vec<Record>,
        stale: &Filter,
    ) -> Result<u64> {
        let c = self.inner.get_collection(collection)?;
        prepare_records(&c.spec, &mut records)?;
        let stale = stale.clone();
        self.writing(move |_| c.replace(records, &stale)).await
    }

    async fn count(&self, collection: &str, filter: Option<&Filter>) -> Result<u64> {
        let c = self.inner.get_collection(collection)?;
        let Some(filter) = filter.cloned() else {
            return Ok(c.count(None));
        };
        self.blocking(move |_| Ok(c.count(Some(&filter)))).await
    }

    async fn check_writable(&self) -> Result<()> {
        if !self.inner.write_failed.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.blocking(|s| s.check_writable()).await
    }

    async fn search(&self, collection: &str, requests: &[SearchRequest]) -> Result<Vec<Vec<Hit>>> {
        let c = self.inner.get_collection(collection)?;
        let queries = prepare_requests(&c.spec, requests)?;
        let requests = requests.to_vec();
        self.blocking(move |_| c.search_all(&requests, &queries))
            .await
    }
}
