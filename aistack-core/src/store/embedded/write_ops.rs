//! The write path of a collection: a write is logged (fsynced), applied to the slot table and
//! carried over to the index; the index is checkpointed beside the log now and then, built in the
//! background once the collection is large enough, and the log is compacted once it holds much
//! more than the live records.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ann::{discard_checkpoint, Ann};
use super::lexical::LexIndex;
use super::log::{encode, FramePos, Op};
use super::state::{Lexical, State};
use super::{AnnState, Collection, Writer};
use crate::error::{Error, Result};
use crate::store::{Filter, Record};

/// Records per frame when a log is compacted.
const COMPACT_CHUNK: usize = 1024;
/// Records the background index build copies out of the collection at a time.
const BUILD_CHUNK: usize = 4_096;
/// A checkpoint is written during writes once this many records changed since the last one
/// (and at least a quarter of the collection), at most once per [`CHECKPOINT_EVERY`].
const CHECKPOINT_CHANGES: usize = 20_000;
const CHECKPOINT_EVERY: Duration = Duration::from_secs(30);
/// How long after a failure a write tries to rebuild the lexical index.
const LEXICAL_RETRY: Duration = Duration::from_secs(30);

/// Brings the index up to date for `slots`: live ones (re)indexed, freed ones removed.
pub(super) fn sync_slots(ann: &Ann, state: &State, slots: &mut Vec<usize>) -> Result<()> {
    slots.sort_unstable();
    slots.dedup();
    let (live, gone): (Vec<usize>, Vec<usize>) = slots.iter().partition(|&&s| state.is_live(s));
    ann.remove(gone)?;
    let items: Vec<(usize, &[f32])> = live.iter().map(|&s| (s, state.vector(s))).collect();
    ann.upsert(&items)
}

impl Collection {
    /// Deletes the records stored under `ids`; returns how many there were.
    pub(super) fn delete(self: &Arc<Self>, ids: Vec<String>) -> Result<u64> {
        let present = {
            let state = self.read();
            let mut seen = std::collections::HashSet::new();
            ids.iter()
                .filter(|id| state.contains(id) && seen.insert(*id))
                .count()
        };
        if present == 0 {
            return Ok(0);
        }
        // Log every id asked for, so a concurrent upsert of one of them cannot survive the delete.
        self.write(Op::Delete(ids))?;
        Ok(present as u64)
    }

    /// Deletes the records `filter` passes; returns how many there were.
    pub(super) fn delete_where(self: &Arc<Self>, filter: &Filter) -> Result<u64> {
        let ids = self.read().ids_matching(filter);
        if ids.is_empty() {
            return Ok(0);
        }
        let n = ids.len() as u64;
        self.write(Op::Delete(ids))?;
        Ok(n)
    }

    /// Upserts `records` and deletes every other record `stale` passes, in one log frame: after
    /// a failure or a crash either all of it is visible or none. Returns how many were deleted.
    pub(super) fn replace(self: &Arc<Self>, records: Vec<Record>, stale: &Filter) -> Result<u64> {
        let mut w = self.lock_writer()?;
        // Under the writer lock no other write can change what the filter passes.
        let delete: Vec<String> = {
            let keep: std::collections::HashSet<&str> =
                records.iter().map(|r| r.id.as_str()).collect();
            self.read()
                .ids_matching(stale)
                .into_iter()
                .filter(|id| !keep.contains(id.as_str()))
                .collect()
        };
        let n = delete.len() as u64;
        if delete.is_empty() && records.is_empty() {
            return Ok(0);
        }
        let op = Op::Batch {
            delete,
            upsert: records,
        };
        let payload = encode(&op, self.spec.dims)?;
        self.write_locked(&mut w, &payload, op)?;
        Ok(n)
    }

    /// Logs `op` (fsynced), writes it to the lexical index, then applies it in memory (with the
    /// lexical index's new view) and to the HNSW index. Serialized per collection.
    pub(super) fn write(self: &Arc<Self>, op: Op) -> Result<()> {
        let payload = encode(&op, self.spec.dims)?;
        let mut w = self.lock_writer()?;
        self.write_locked(&mut w, &payload, op)
    }

    /// The writer lock of a collection that has not been dropped.
    fn lock_writer(&self) -> Result<parking_lot::MutexGuard<'_, Writer>> {
        let w = self.writer.lock();
        if w.dropped {
            return Err(Error::NotFound {
                what: format!("collection {:?}", self.spec.name),
            });
        }
        Ok(w)
    }

    fn write_locked(self: &Arc<Self>, w: &mut Writer, payload: &[u8], op: Op) -> Result<()> {
        w.log.append(payload)?;
        let lexical = self.lexical_write(w, &op);
        let (touched, live) = {
            let mut state = self.state.write();
            let touched = state.apply(op);
            if let Some(l) = lexical {
                state.set_lexical(l);
            }
            (touched, state.len())
        };
        self.index_write(w, touched, live);
        // The write is durable and applied: a compaction that fails (a full disk, say) is
        // logged and tried again on a later write, never reported as this write's failure.
        if let Err(e) = self.maybe_compact(w, live) {
            tracing::warn!(collection = %self.spec.name, error = %e, "cannot compact the collection log; will retry");
        }
        Ok(())
    }

    /// Writes a logged `op` to the lexical index and commits it at the log's new end, before
    /// the records change; returns the view to put in use with them (`None`: unchanged). The
    /// write is durable already, so a failure only takes lexical search out of service (until
    /// the store reopens and rebuilds the index) and is logged.
    fn lexical_write(&self, w: &mut Writer, op: &Op) -> Option<Lexical> {
        let pos = w.log.last();
        let result = {
            let state = self.read();
            let planned = state.plan_op(op);
            let relevant = planned
                .iter()
                .any(|&(slot, text)| text.is_some() || state.text(slot).is_some());
            if !relevant {
                return None;
            }
            let retry = w.lexical_retry_at.is_some_and(|t| Instant::now() >= t);
            if w.lexical.is_none() && (!state.lexical_failed() || retry) {
                w.lexical_retry_at = None;
                match LexIndex::create(&self.dir, self.spec.analyzer)
                    .and_then(|ix| ix.stage_all(&state, false).map(|()| ix))
                {
                    Ok(ix) => w.lexical = Some(ix),
                    Err(e) => return Some(self.lexical_failed(w, &e)),
                }
            }
            let ix = w.lexical.as_mut()?;
            planned
                .iter()
                .try_for_each(|&(slot, text)| ix.stage(slot, text))
        };
        let ix = w.lexical.as_mut()?;
        match result
            .and_then(|()| ix.commit(Some(pos)))
            .and_then(|()| ix.view())
        {
            Ok(view) => Some(Lexical::Ready(view)),
            Err(e) => Some(self.lexical_failed(w, &e)),
        }
    }

    /// Takes the lexical index out of service after a failure; a write after
    /// [`LEXICAL_RETRY`] rebuilds it from the records (once the disk has room again, say).
    fn lexical_failed(&self, w: &mut Writer, e: &Error) -> Lexical {
        tracing::error!(collection = %self.spec.name, error = %e, retry_s = LEXICAL_RETRY.as_secs(), "lexical index update failed; lexical search is unavailable until it is rebuilt");
        w.lexical = None;
        w.lexical_retry_at = Some(Instant::now() + LEXICAL_RETRY);
        Lexical::Failed
    }

    /// Rebuilds the lexical index for the records as compaction renumbers them, at the new
    /// log's end; the view goes in use with the renumbering.
    fn lexical_rebuild(&self, w: &mut Writer, pos: FramePos) -> Option<Lexical> {
        let ix = w.lexical.as_mut()?;
        let result = ix
            .stage_all(&self.read(), true)
            .and_then(|()| ix.commit(Some(pos)))
            .and_then(|()| ix.view());
        match result {
            Ok(view) => Some(Lexical::Ready(view)),
            Err(e) => Some(self.lexical_failed(w, &e)),
        }
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
    pub(super) fn checkpoint(&self, w: &mut Writer, ann: &Ann) {
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

    /// Builds (or brings up to date) `ann` on a background thread by indexing `todo`, then
    /// applies the writes made meanwhile and puts it in use.
    pub(super) fn spawn_build(self: &Arc<Self>, ann: Ann, todo: Vec<usize>) {
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
                        let mut w = me.writer.lock();
                        w.build_failed = true;
                        *me.ann_state() = AnnState::Off;
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(collection = %self.spec.name, error = %e, "cannot start the index build");
            self.writer.lock().build_failed = true;
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
        let mut w = self.writer.lock();
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
        // The checkpoints name positions in the old log; a crash before the new ones are saved
        // must not pair them with the new log.
        discard_checkpoint(&self.dir);
        if let Some(ix) = w.lexical.as_mut() {
            if let Err(e) = ix.commit(None) {
                let failed = self.lexical_failed(w, &e);
                self.state.write().set_lexical(failed);
            }
        }
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
        // Replaying the compacted log numbers the records densely; match it in memory, and the
        // lexical index with it.
        let lexical = self.lexical_rebuild(w, w.log.last());
        let moves = {
            let mut state = self.state.write();
            let moves = state.renumber();
            if let Some(l) = lexical {
                state.set_lexical(l);
            }
            moves
        };
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
