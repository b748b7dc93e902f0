//! Opening a store (replaying each collection's log, then loading or rebuilding its index),
//! creating and dropping collections, flushing index checkpoints, and closing.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};

use super::ann::{discard_checkpoint, Ann, AnnConfig};
use super::lexical::LexIndex;
use super::log::{sync_dir, FramePos, LogWriter};
use super::state::{Lexical, State};
use super::write_ops::sync_slots;
use super::{AnnState, Collection, EmbeddedStore, Inner, Writer};
use crate::error::{Error, Result};
use crate::store::CollectionSpec;

/// On open, a checkpoint at most this many changed records behind the log is brought up to date
/// before open returns; a larger gap is closed in the background.
const SYNC_TAIL: usize = 2_000;

fn collections_dir(root: &Path) -> PathBuf {
    root.join("collections")
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `root`, replaying every collection's log. One
    /// process at a time: a second open of the same directory fails with `Unavailable`.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self> {
        Self::open_with(root, AnnConfig::default()).await
    }

    /// Like [`EmbeddedStore::open`], with explicit HNSW index settings.
    pub async fn open_with(root: impl Into<PathBuf>, cfg: AnnConfig) -> Result<Self> {
        cfg.validate()?;
        let root = root.into();
        let inner = tokio::task::spawn_blocking(move || Inner::open(&root, cfg))
            .await
            .map_err(|e| Error::internal("opening the store", e))??;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Saves every index checkpoint that is behind its log (also done when the store drops).
    pub async fn flush(&self) -> Result<()> {
        self.blocking(|s| {
            s.flush();
            Ok(())
        })
        .await
    }
}

impl Inner {
    /// Opens the data directory `root`: takes its lock, clears leftovers of interrupted creates
    /// and drops, and opens every collection.
    fn open(root: &Path, cfg: AnnConfig) -> Result<Self> {
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
            let c = Collection::open(&path, &name, &cfg)?;
            collections.insert(name, c);
        }
        Ok(Self {
            root: root.to_path_buf(),
            cfg,
            collections: RwLock::new(collections),
            write_failed: AtomicBool::new(false),
            _lock: lock,
        })
    }

    /// Creates the collection `spec` names; with `exist_ok`, an existing one with the same spec
    /// is not an error.
    pub(super) fn create(&self, spec: &CollectionSpec, exist_ok: bool) -> Result<()> {
        spec.validate()?;
        let mut map = self.collections.write();
        if let Some(existing) = map.get(&spec.name) {
            if exist_ok && existing.spec.same_shape(spec) {
                return Ok(());
            }
            return Err(Error::Conflict(format!(
                "collection {:?} already exists with {} dims, metric {} and analyzer {}",
                spec.name,
                existing.spec.dims,
                existing.spec.metric.as_str(),
                existing.spec.analyzer.as_str()
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
        let c = Collection::open(&dir, &spec.name, &self.cfg)?;
        map.insert(spec.name.clone(), c);
        Ok(())
    }

    /// Drops the collection `name`: its folder is renamed away (then removed) under its writer
    /// lock, so no write lands after it; `false` when there is no such collection.
    pub(super) fn drop_collection(&self, name: &str) -> Result<bool> {
        let mut map = self.collections.write();
        let Some(c) = map.get(name).cloned() else {
            return Ok(false);
        };
        let mut w = c.writer.lock();
        let cdir = collections_dir(&self.root);
        let trash = cdir.join(format!(".drop-{name}-{}", std::process::id()));
        std::fs::rename(&c.dir, &trash).map_err(|e| Error::io(c.dir.display().to_string(), e))?;
        sync_dir(&cdir)?;
        w.dropped = true;
        c.closing.store(true, Ordering::Relaxed);
        map.remove(name);
        drop(w);
        drop(map);
        let _ = std::fs::remove_dir_all(&trash);
        Ok(true)
    }

    /// Saves every index checkpoint that is behind its log.
    fn flush(&self) {
        let map = self.collections.read();
        map.values().for_each(|c| c.flush());
    }
}

impl Drop for Inner {
    /// When the last handle goes: stops background index builds and checkpoints the indexes, so
    /// the next open is fast.
    fn drop(&mut self) {
        let map = self.collections.get_mut();
        for c in map.values() {
            c.closing.store(true, Ordering::Relaxed);
            c.flush();
        }
    }
}

/// Brings the lexical index up to date with the replayed log: syncs the slots written after its
/// commit when that commit is at a position of the log, else rebuilds it from the records (when
/// any has text). Puts its view in `state`; a failure leaves lexical search out of service.
#[allow(clippy::too_many_arguments)]
fn open_lexical(
    dir: &Path,
    name: &str,
    spec: &CollectionSpec,
    state: &mut State,
    opened: Option<(LexIndex, FramePos)>,
    reached: bool,
    mut tail: Vec<usize>,
    end: FramePos,
) -> Option<LexIndex> {
    let started = Instant::now();
    let synced = match opened {
        Some((mut ix, _)) if reached => {
            tail.sort_unstable();
            tail.dedup();
            let done = tail.iter().try_for_each(|&s| {
                let text = if state.is_live(s) {
                    state.text(s)
                } else {
                    None
                };
                ix.stage(s, text)
            });
            // An index already at the log's end needs no commit (most opens).
            let commit = |ix: &mut LexIndex| {
                if tail.is_empty() {
                    Ok(())
                } else {
                    ix.commit(Some(end))
                }
            };
            match done.and_then(|()| commit(&mut ix)) {
                Ok(()) => Some(ix),
                Err(e) => {
                    tracing::warn!(collection = %name, error = %e, "cannot bring the lexical index up to date; rebuilding");
                    None
                }
            }
        }
        Some(_) => {
            tracing::warn!(collection = %name, "the lexical index is not at a position of the log; rebuilding");
            None
        }
        None => None,
    };
    let ix = match synced {
        Some(ix) => ix,
        None if !state.has_text() => {
            let _ = std::fs::remove_dir_all(LexIndex::dir_of(dir));
            return None;
        }
        None => {
            let built = LexIndex::create(dir, spec.analyzer).and_then(|mut ix| {
                ix.stage_all(state, false)?;
                ix.commit(Some(end))?;
                Ok(ix)
            });
            match built {
                Ok(ix) => {
                    tracing::info!(collection = %name, records = state.len(), ms = started.elapsed().as_millis() as u64, "rebuilt the lexical index");
                    ix
                }
                Err(e) => {
                    tracing::error!(collection = %name, error = %e, "cannot build the lexical index; lexical search is unavailable");
                    state.set_lexical(Lexical::Failed);
                    return None;
                }
            }
        }
    };
    match ix.view() {
        Ok(view) => {
            state.set_lexical(Lexical::Ready(view));
            Some(ix)
        }
        Err(e) => {
            tracing::error!(collection = %name, error = %e, "cannot read the lexical index; lexical search is unavailable");
            state.set_lexical(Lexical::Failed);
            None
        }
    }
}

impl Collection {
    /// Opens one collection: replays its log, then loads its index checkpoint and brings it up
    /// to date with the log's tail (in the background when the tail is long), or builds the
    /// index in the background when there is no usable checkpoint.
    fn open(dir: &Path, name: &str, cfg: &AnnConfig) -> Result<Arc<Self>> {
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
        let lexical = match LexIndex::open(dir, spec.analyzer) {
            Ok((ix, Some(pos))) => Some((ix, pos)),
            Ok((_, None)) => {
                tracing::warn!(collection = %name, "the lexical index is at no known log position; rebuilding");
                None
            }
            Err(Error::NotFound { .. }) => None,
            Err(e) => {
                tracing::warn!(collection = %name, error = %e, "the lexical index cannot be opened; rebuilding");
                None
            }
        };
        let lex_at = lexical.as_ref().map(|(_, pos)| *pos);
        let mut lex_reached = lex_at == Some(FramePos::start());
        let mut lex_tail = Vec::new();
        let log = LogWriter::open(&dir.join("log"), spec.dims, |op, pos| {
            let touched = state.apply(op);
            if lex_reached {
                lex_tail.extend_from_slice(&touched);
            }
            if reached {
                tail.extend(touched);
            }
            reached |= at == Some(pos);
            lex_reached |= lex_at == Some(pos);
        })?;
        let lexical = open_lexical(
            dir,
            name,
            &spec,
            &mut state,
            lexical,
            lex_reached,
            lex_tail,
            log.last(),
        );
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
        let c = Arc::new(Self {
            spec,
            dir: dir.to_path_buf(),
            cfg: cfg.clone(),
            writer: Mutex::new(Writer {
                log,
                dropped: false,
                dirty: 0,
                saved_at: Instant::now(),
                build_failed: false,
                lexical,
                lexical_retry_at: None,
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

    /// Saves the index checkpoint if records changed since the last one.
    fn flush(&self) {
        let mut w = self.writer.lock();
        if w.dropped || w.dirty == 0 {
            return;
        }
        if let Some(ann) = self.ready_ann() {
            self.checkpoint(&mut w, &ann);
        }
    }
}
