//! The approximate-nearest-neighbour index of an embedded collection: an HNSW graph (usearch)
//! keyed by record slot. It only proposes candidates; the collection rescores them with its
//! exact f32 vectors, so scores are always exact and the index may store a compact copy of
//! each vector ([`IndexPrecision`]).
//!
//! A checkpoint is the index saved beside the log, with the log position it reflects
//! (`ann.json` names the index file and the [`FramePos`]); opening loads it and re-indexes only
//! the slots the log changed after that position.

use std::path::{Path, PathBuf};

use parking_lot::{Condvar, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use super::log::{sync_dir, FramePos};
use crate::error::{Error, Result};
use crate::store::Metric;

/// How the embedded store builds and uses its HNSW indexes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnnConfig {
    /// Keep an HNSW index per collection (false: every search is an exact scan).
    pub enabled: bool,
    /// Graph degree (HNSW `M`).
    pub connectivity: usize,
    /// Candidate list size while inserting (HNSW `ef_construction`).
    pub expansion_add: usize,
    /// Minimum candidate list size while searching (HNSW `ef_search`).
    pub expansion_search: usize,
    /// How the index stores its copy of each vector; hits are rescored in f32 anyway.
    pub precision: IndexPrecision,
    /// Collections with fewer live records than this are scanned exactly.
    pub exact_below: usize,
    /// For the rare filter the metadata index cannot answer (equality with a string over 256
    /// bytes), the HNSW index is used only when at least this share of records pass it
    /// (estimated from a sample). Filters the metadata index answers use the index when more
    /// than 2,048 records match, and scan the matches exactly otherwise.
    pub min_filter_share: f32,
}

impl Default for AnnConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            connectivity: 32,
            expansion_add: 128,
            expansion_search: 40,
            precision: IndexPrecision::Auto,
            exact_below: 5_000,
            min_filter_share: 0.25,
        }
    }
}

impl AnnConfig {
    /// Checks the settings, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: &str| {
            Err(Error::Config {
                key: format!("ann.{key}"),
                reason: why.to_string(),
            })
        };
        if !(2..=128).contains(&self.connectivity) {
            return bad("connectivity", "must be between 2 and 128");
        }
        if !(8..=4096).contains(&self.expansion_add) {
            return bad("expansion_add", "must be between 8 and 4096");
        }
        if !(8..=4096).contains(&self.expansion_search) {
            return bad("expansion_search", "must be between 8 and 4096");
        }
        if !(0.0..=1.0).contains(&self.min_filter_share) {
            return bad("min_filter_share", "must be between 0 and 1");
        }
        Ok(())
    }
}

/// How an HNSW index stores its vectors. Smaller copies mean less memory traffic per visited
/// node, so faster searches; candidates are rescored with the exact f32 vectors either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IndexPrecision {
    /// i8 for cosine collections, bf16 for dot and l2 (the measured best; docs/benchmarks.md).
    #[default]
    Auto,
    /// Full f32 copies (4 bytes a dimension).
    F32,
    /// bfloat16 (2 bytes a dimension; keeps f32's range).
    Bf16,
    /// IEEE half (2 bytes a dimension; values beyond ±65,504 saturate).
    F16,
    /// 1 byte a dimension, each vector scaled to unit length first. It applies to cosine
    /// collections only (the scaling would lose a dot or l2 vector's length); others use bf16.
    I8,
}

impl IndexPrecision {
    /// The scalar kind an index over `metric` uses under this setting.
    fn scalar(self, metric: Metric) -> ScalarKind {
        match (self, metric) {
            (Self::Auto | Self::I8, Metric::Cosine) => ScalarKind::I8,
            (Self::Auto | Self::I8 | Self::Bf16, _) => ScalarKind::BF16,
            (Self::F32, _) => ScalarKind::F32,
            (Self::F16, _) => ScalarKind::F16,
        }
    }
}

fn scalar_name(kind: ScalarKind) -> &'static str {
    match kind {
        ScalarKind::I8 => "i8",
        ScalarKind::BF16 => "bf16",
        ScalarKind::F16 => "f16",
        ScalarKind::F32 => "f32",
        _ => "other",
    }
}

/// `ann.json`: which index file holds the checkpoint and what it reflects.
#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    file: String,
    pos: FramePos,
    count: usize,
    dims: usize,
    /// The scalar kind the index stores (`i8`, `bf16`, `f16`, `f32`).
    scalar: String,
    connectivity: usize,
    /// CRC-32 and length of the index file: the index library trusts the bytes it loads, so a
    /// damaged file must be refused before it is handed over (checkpoints without one are
    /// rebuilt).
    #[serde(default)]
    file_crc: Option<u32>,
    #[serde(default)]
    file_len: u64,
}

/// CRC-32 and length of a file, read in 1 MiB blocks.
fn file_crc(path: &Path) -> std::io::Result<(u32, u64)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok((h.finalize(), len));
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
}

const CHECKPOINT: &str = "ann.json";

fn usearch_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Internal {
        context: format!("{what}: {e}"),
        source: None,
    }
}

/// One collection's HNSW index. Adds, removes and searches run concurrently; growing the
/// capacity takes the write lock.
pub struct Ann {
    index: RwLock<Index>,
    dims: usize,
    /// The scalar kind stored, as the checkpoint names it.
    scalar: &'static str,
    permits: Permits,
}

/// Concurrent calls into the index, bounded by the thread contexts it reserved (usearch fails a
/// call that finds none free, so callers wait here instead).
struct Permits {
    free: Mutex<usize>,
    freed: Condvar,
}

struct Permit<'a>(&'a Permits);

impl Permits {
    fn new(n: usize) -> Self {
        Self {
            free: Mutex::new(n),
            freed: Condvar::new(),
        }
    }

    fn take(&self) -> Permit<'_> {
        let mut free = self.free.lock();
        while *free == 0 {
            self.freed.wait(&mut free);
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock() += 1;
        self.0.freed.notify_one();
    }
}

/// Vectors an index takes one at a time before inserts run in parallel.
const SEQUENTIAL_SEED: usize = 2048;

/// Thread contexts each index reserves: concurrent searches and adds beyond this wait.
fn contexts() -> usize {
    (threads() * 4).max(16)
}

impl std::fmt::Debug for Ann {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ann")
            .field("dims", &self.dims)
            .field("len", &self.len())
            .finish()
    }
}

fn options(dims: usize, metric: Metric, cfg: &AnnConfig) -> IndexOptions {
    IndexOptions {
        dimensions: dims,
        // Cosine collections store unit vectors, so inner product ranks them the same.
        metric: match metric {
            Metric::Cosine | Metric::Dot => MetricKind::IP,
            Metric::L2 => MetricKind::L2sq,
        },
        // Set explicitly: usearch's default options are cosine over bf16.
        quantization: cfg.precision.scalar(metric),
        connectivity: cfg.connectivity,
        expansion_add: cfg.expansion_add,
        expansion_search: cfg.expansion_search,
        multi: false,
    }
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Ann {
    /// An empty index with room for `capacity` vectors.
    pub fn new(dims: usize, metric: Metric, cfg: &AnnConfig, capacity: usize) -> Result<Self> {
        let index = Index::new(&options(dims, metric, cfg))
            .map_err(|e| usearch_err("creating an index", e))?;
        index
            .reserve_capacity_and_threads(capacity.max(1024), contexts())
            .map_err(|e| usearch_err("reserving index memory", e))?;
        Ok(Self {
            index: RwLock::new(index),
            dims,
            scalar: scalar_name(cfg.precision.scalar(metric)),
            permits: Permits::new(contexts()),
        })
    }

    fn read(&self) -> parking_lot::RwLockReadGuard<'_, Index> {
        self.index.read()
    }

    /// Live vectors in the index.
    pub fn len(&self) -> usize {
        self.read().size()
    }

    /// Bytes the index holds in memory.
    pub fn memory(&self) -> usize {
        self.read().memory_usage()
    }

    fn ensure_capacity(&self, extra: usize) -> Result<()> {
        let need = self.read().size() + extra;
        if need <= self.read().capacity() {
            return Ok(());
        }
        let index = self.index.write();
        let cap = index.capacity();
        if need > cap {
            index
                .reserve_capacity_and_threads(need.max(cap * 2), contexts())
                .map_err(|e| usearch_err("growing the index", e))?;
        }
        Ok(())
    }

    /// Removes `slots` from the index (absent ones are skipped).
    pub fn remove(&self, slots: impl IntoIterator<Item = usize>) -> Result<()> {
        let index = self.read();
        let _permit = self.permits.take();
        for slot in slots {
            let key = slot as u64;
            if index.contains(key) {
                index
                    .remove(key)
                    .map_err(|e| usearch_err("removing from the index", e))?;
            }
        }
        Ok(())
    }

    /// Indexes (or re-indexes) each `(slot, vector)`; large batches use every core.
    pub fn upsert(&self, items: &[(usize, &[f32])]) -> Result<()> {
        self.remove(items.iter().map(|(s, _)| *s))?;
        self.ensure_capacity(items.len())?;
        let index = self.read();
        let add = |chunk: &[(usize, &[f32])]| -> Result<()> {
            let _permit = self.permits.take();
            for (slot, v) in chunk {
                index
                    .add(*slot as u64, v)
                    .map_err(|e| usearch_err("adding to the index", e))?;
            }
            Ok(())
        };
        // Concurrent inserts into a small graph leave poorly linked nodes (seen as exact-match
        // misses at 300 nodes), so the first `SEQUENTIAL_SEED` vectors go in one at a time.
        let seed = SEQUENTIAL_SEED
            .saturating_sub(index.size())
            .min(items.len());
        add(&items[..seed])?;
        let items = &items[seed..];
        let n = threads();
        if items.len() < 256 || n == 1 {
            return add(items);
        }
        let per = items.len().div_ceil(n);
        std::thread::scope(|s| {
            let handles: Vec<_> = items.chunks(per).map(|c| s.spawn(move || add(c))).collect();
            handles.into_iter().try_for_each(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(usearch_err("index thread", "panicked")))
            })
        })
    }

    /// Up to `count` candidate slots near `query`, best first, among slots `keep` accepts. The
    /// search explores at least `max(expansion_search, count)` candidates.
    pub fn search(
        &self,
        query: &[f32],
        count: usize,
        keep: Option<&dyn Fn(usize) -> bool>,
    ) -> Result<Vec<usize>> {
        let index = self.read();
        let _permit = self.permits.take();
        let matches = match keep {
            None => index.search(query, count),
            Some(f) => index.filtered_search(query, count, |key| f(key as usize)),
        }
        .map_err(|e| usearch_err("searching the index", e))?;
        Ok(matches.keys.into_iter().map(|k| k as usize).collect())
    }

    /// Moves each `(from, to)` key, in order (compaction renumbers slots).
    pub fn rename(&self, moves: &[(usize, usize)]) -> Result<()> {
        let index = self.index.write();
        for &(from, to) in moves {
            index
                .rename(from as u64, to as u64)
                .map_err(|e| usearch_err("renumbering the index", e))?;
        }
        Ok(())
    }

    /// Saves a checkpoint reflecting the log up to `pos` into `dir`: the index under a fresh
    /// name, fsynced, then `ann.json` atomically replaced, then the previous index file removed.
    pub fn save(&self, dir: &Path, pos: FramePos, cfg: &AnnConfig) -> Result<()> {
        let old = read_checkpoint(dir).map(|c| c.file);
        let file = format!("ann-{}-{}.usearch", pos.end, pos.crc);
        let path = dir.join(&file);
        let io = |p: &Path| {
            let shown = p.display().to_string();
            move |e| Error::io(shown.clone(), e)
        };
        let index = self.read();
        let count = index.size();
        let shown = path.display().to_string();
        index
            .save(&shown)
            .map_err(|e| usearch_err(&format!("saving {shown}"), e))?;
        drop(index);
        std::fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(io(&path))?;
        let (crc, len) = file_crc(&path).map_err(io(&path))?;
        let meta = Checkpoint {
            file: file.clone(),
            pos,
            count,
            dims: self.dims,
            scalar: self.scalar.to_string(),
            connectivity: cfg.connectivity,
            file_crc: Some(crc),
            file_len: len,
        };
        let tmp = dir.join("ann.json.tmp");
        let bytes = serde_json::to_vec(&meta).map_err(|e| Error::internal("checkpoint", e))?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(&bytes)
                .and_then(|_| f.sync_all())
                .map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, dir.join(CHECKPOINT)).map_err(io(&tmp))?;
        sync_dir(dir)?;
        if let Some(old) = old.filter(|o| *o != file) {
            let _ = std::fs::remove_file(dir.join(old));
        }
        Ok(())
    }

    /// Loads the checkpoint in `dir`, if there is one made with the same settings. Returns the
    /// index and the log position it reflects; anything unreadable yields `None` (and a rebuild).
    pub fn load(
        dir: &Path,
        dims: usize,
        metric: Metric,
        cfg: &AnnConfig,
    ) -> Option<(Self, FramePos)> {
        let cp = read_checkpoint(dir)?;
        let scalar = scalar_name(cfg.precision.scalar(metric));
        if cp.dims != dims || cp.scalar != scalar || cp.connectivity != cfg.connectivity {
            return None;
        }
        let path: PathBuf = dir.join(&cp.file);
        let shown = path.display().to_string();
        // Only a file named by its checkpoint and matching its checksum reaches the loader.
        if cp.file.contains(['/', '\\']) || cp.file.starts_with('.') {
            return None;
        }
        match file_crc(&path) {
            Ok(found) if Some(found.0) == cp.file_crc && found.1 == cp.file_len => {}
            _ => {
                tracing::warn!(file = %shown, "the index checkpoint is missing, damaged or unverifiable; rebuilding");
                return None;
            }
        }
        let index = Index::new(&options(dims, metric, cfg)).ok()?;
        if let Err(e) = index.load(&shown) {
            tracing::warn!(file = %shown, error = %e, "cannot load the index checkpoint; rebuilding");
            return None;
        }
        if index.size() != cp.count || index.dimensions() != dims {
            tracing::warn!(file = %shown, "the index checkpoint does not match its description; rebuilding");
            return None;
        }
        index.change_expansion_search(cfg.expansion_search);
        index.change_expansion_add(cfg.expansion_add);
        // Loading resets the reserved thread contexts to the saved ones.
        if let Err(e) =
            index.reserve_capacity_and_threads(index.capacity().max(cp.count + 1024), contexts())
        {
            tracing::warn!(file = %shown, error = %e, "cannot reserve index memory; rebuilding");
            return None;
        }
        Some((
            Self {
                index: RwLock::new(index),
                dims,
                scalar,
                permits: Permits::new(contexts()),
            },
            cp.pos,
        ))
    }
}

fn read_checkpoint(dir: &Path) -> Option<Checkpoint> {
    let bytes = std::fs::read(dir.join(CHECKPOINT)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Removes a collection's checkpoint (it no longer matches the log).
pub fn discard_checkpoint(dir: &Path) {
    if let Some(cp) = read_checkpoint(dir) {
        let _ = std::fs::remove_file(dir.join(cp.file));
    }
    let _ = std::fs::remove_file(dir.join(CHECKPOINT));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64, dims: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut v: Vec<f32> = (0..dims)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 2000) as f32 / 1000.0 - 1.0
            })
            .collect();
        let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
        v.iter_mut().for_each(|a| *a /= n);
        v
    }

    #[test]
    fn finds_added_vectors_and_forgets_removed_ones() {
        let cfg = AnnConfig::default();
        let ann = Ann::new(16, Metric::Cosine, &cfg, 10).unwrap();
        let vs: Vec<Vec<f32>> = (0..2000).map(|i| unit(i, 16)).collect();
        let items: Vec<(usize, &[f32])> = vs.iter().enumerate().map(|(i, v)| (i, &v[..])).collect();
        ann.upsert(&items).unwrap();
        assert_eq!(ann.len(), 2000);
        assert_eq!(ann.search(&vs[7], 1, None).unwrap(), vec![7]);
        ann.remove([7]).unwrap();
        assert_eq!(ann.len(), 1999);
        assert!(!ann.search(&vs[7], 10, None).unwrap().contains(&7));
        // Re-adding a removed slot with another vector works, and replaces rather than duplicates.
        ann.upsert(&[(7, &vs[8][..])]).unwrap();
        ann.upsert(&[(7, &vs[9][..])]).unwrap();
        assert_eq!(ann.len(), 2000);
        let even = |s: usize| s.is_multiple_of(2);
        let hits = ann.search(&vs[9], 5, Some(&even)).unwrap();
        assert!(!hits.is_empty() && hits.iter().all(|s| s % 2 == 0));
    }

    #[test]
    fn i8_applies_to_cosine_only() {
        use IndexPrecision::*;
        assert_eq!(Auto.scalar(Metric::Cosine), ScalarKind::I8);
        assert_eq!(I8.scalar(Metric::Cosine), ScalarKind::I8);
        for metric in [Metric::Dot, Metric::L2] {
            assert_eq!(Auto.scalar(metric), ScalarKind::BF16);
            assert_eq!(I8.scalar(metric), ScalarKind::BF16);
        }
        assert_eq!(F16.scalar(Metric::Cosine), ScalarKind::F16);
        assert_eq!(F32.scalar(Metric::Dot), ScalarKind::F32);
        // A dot index keeps vector lengths: for the query u, 3u > 2u > 1.5u > u, which an i8
        // copy (each vector scaled to unit length first) could not tell apart.
        let cfg = AnnConfig {
            precision: I8,
            ..AnnConfig::default()
        };
        let ann = Ann::new(16, Metric::Dot, &cfg, 10).unwrap();
        let mut vs: Vec<Vec<f32>> = (0..500).map(|i| unit(i, 16)).collect();
        for (slot, scale) in [(1, 3.0), (2, 2.0), (3, 1.5)] {
            vs[slot] = vs[0].iter().map(|x| scale * x).collect();
        }
        let items: Vec<(usize, &[f32])> = vs.iter().enumerate().map(|(i, v)| (i, &v[..])).collect();
        ann.upsert(&items).unwrap();
        assert_eq!(ann.search(&vs[0], 4, None).unwrap(), vec![1, 2, 3, 0]);
    }

    #[test]
    fn checkpoints_round_trip_and_mismatches_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = AnnConfig::default();
        let ann = Ann::new(8, Metric::L2, &cfg, 10).unwrap();
        let vs: Vec<Vec<f32>> = (0..300).map(|i| unit(i, 8)).collect();
        let items: Vec<(usize, &[f32])> = vs.iter().enumerate().map(|(i, v)| (i, &v[..])).collect();
        ann.upsert(&items).unwrap();
        let pos = FramePos { end: 1234, crc: 99 };
        ann.save(dir.path(), pos, &cfg).unwrap();
        let (loaded, at) = Ann::load(dir.path(), 8, Metric::L2, &cfg).unwrap();
        assert_eq!(at, pos);
        assert_eq!(loaded.len(), 300);
        assert_eq!(loaded.search(&vs[42], 1, None).unwrap(), vec![42]);
        // A second save replaces the first file.
        ann.save(dir.path(), FramePos { end: 2000, crc: 1 }, &cfg)
            .unwrap();
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 2, "ann.json and one index file");
        // Other settings or dimensions: no checkpoint.
        let other = AnnConfig {
            precision: IndexPrecision::F32,
            ..cfg.clone()
        };
        assert!(Ann::load(dir.path(), 8, Metric::L2, &other).is_none());
        // For l2, `auto` and `i8` both mean bf16: the same checkpoint serves.
        let i8 = AnnConfig {
            precision: IndexPrecision::I8,
            ..cfg.clone()
        };
        assert!(Ann::load(dir.path(), 8, Metric::L2, &i8).is_some());
        assert!(Ann::load(dir.path(), 9, Metric::L2, &cfg).is_none());
        // A damaged index file: no checkpoint, no panic.
        let cp = read_checkpoint(dir.path()).unwrap();
        std::fs::write(dir.path().join(&cp.file), b"garbage").unwrap();
        assert!(Ann::load(dir.path(), 8, Metric::L2, &cfg).is_none());
        discard_checkpoint(dir.path());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
