//! Bounded in-memory caches on `moka` (by entries or by bytes, with TTL and hit/miss counters),
//! and [`Epochs`], per-namespace counters that invalidate a whole namespace at once.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use serde::Serialize;

/// How a cache is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheBound {
    /// At most this many entries.
    Entries(u64),
    /// At most this many bytes, as the cache's weigher counts them.
    Bytes(u64),
}

/// A cache's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Size bound; a bound of zero disables the cache.
    pub bound: CacheBound,
    /// Time to live after insertion; `None` keeps entries until evicted.
    pub ttl: Option<Duration>,
}

/// Hit and miss counts and the current size of one cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    /// Lookups that found an entry.
    pub hits: u64,
    /// Lookups that found none.
    pub misses: u64,
    /// Entries held (approximate: moka applies writes lazily).
    pub entries: u64,
    /// Weighted size (bytes for byte-bounded caches, entries otherwise).
    pub weighted_size: u64,
}

/// A concurrent bounded cache that counts its hits and misses.
pub struct Cache<K, V> {
    inner: Option<moka::sync::Cache<K, V>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<K, V> std::fmt::Debug for Cache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("enabled", &self.inner.is_some())
            .field("hits", &self.hits.load(Ordering::Relaxed))
            .field("misses", &self.misses.load(Ordering::Relaxed))
            .finish()
    }
}

impl<K, V> Cache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A cache bounded by `config`; with [`CacheBound::Bytes`], `weigher` gives each entry's size
    /// in bytes (saturating at `u32::MAX`).
    pub fn new(
        config: CacheConfig,
        weigher: impl Fn(&K, &V) -> u32 + Send + Sync + 'static,
    ) -> Self {
        let inner = match config.bound {
            CacheBound::Entries(0) | CacheBound::Bytes(0) => None,
            CacheBound::Entries(n) => {
                let mut b = moka::sync::Cache::builder().max_capacity(n);
                if let Some(ttl) = config.ttl {
                    b = b.time_to_live(ttl);
                }
                Some(b.build())
            }
            CacheBound::Bytes(n) => {
                let mut b = moka::sync::Cache::builder()
                    .max_capacity(n)
                    .weigher(move |k: &K, v: &V| weigher(k, v));
                if let Some(ttl) = config.ttl {
                    b = b.time_to_live(ttl);
                }
                Some(b.build())
            }
        };
        Self {
            inner,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Whether the cache holds anything at all (a zero bound disables it).
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Looks `key` up, counting a hit or a miss.
    pub fn get(&self, key: &K) -> Option<V> {
        let found = self.inner.as_ref().and_then(|c| c.get(key));
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// Stores `value` under `key`.
    pub fn insert(&self, key: K, value: V) {
        if let Some(c) = &self.inner {
            c.insert(key, value);
        }
    }

    /// Removes every entry.
    pub fn clear(&self) {
        if let Some(c) = &self.inner {
            c.invalidate_all();
        }
    }

    /// Counters and size.
    pub fn stats(&self) -> CacheStats {
        let (entries, weighted_size) = match &self.inner {
            Some(c) => {
                c.run_pending_tasks();
                (c.entry_count(), c.weighted_size())
            }
            None => (0, 0),
        };
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries,
            weighted_size,
        }
    }
}

/// Per-namespace epoch counters. A cache key that includes its namespace's epoch goes stale the
/// moment the epoch is bumped, so one bump invalidates everything cached for that namespace
/// (for example every search result of a collection after a write).
#[derive(Debug, Default)]
pub struct Epochs {
    map: RwLock<HashMap<String, Arc<AtomicU64>>>,
}

impl Epochs {
    /// No namespaces yet; every namespace starts at epoch 0.
    pub fn new() -> Self {
        Self::default()
    }

    fn counter(&self, ns: &str) -> Arc<AtomicU64> {
        if let Some(c) = self.map.read().get(ns) {
            return c.clone();
        }
        self.map.write().entry(ns.to_string()).or_default().clone()
    }

    /// The current epoch of `ns`.
    pub fn current(&self, ns: &str) -> u64 {
        self.counter(ns).load(Ordering::Acquire)
    }

    /// Moves `ns` to a new epoch and returns it.
    pub fn bump(&self, ns: &str) -> u64 {
        self.counter(ns).fetch_add(1, Ordering::AcqRel) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_hits_and_misses() {
        let c: Cache<String, u32> = Cache::new(
            CacheConfig {
                bound: CacheBound::Entries(100),
                ttl: None,
            },
            |_, _| 1,
        );
        assert_eq!(c.get(&"a".into()), None);
        c.insert("a".into(), 1);
        assert_eq!(c.get(&"a".into()), Some(1));
        assert_eq!(c.get(&"a".into()), Some(1));
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.entries), (2, 1, 1));
    }

    #[test]
    fn byte_bound_evicts() {
        let c: Cache<u32, Vec<u8>> = Cache::new(
            CacheConfig {
                bound: CacheBound::Bytes(10_000),
                ttl: None,
            },
            |_, v: &Vec<u8>| v.len() as u32,
        );
        for i in 0..100 {
            c.insert(i, vec![0u8; 1_000]);
        }
        let s = c.stats();
        assert!(s.weighted_size <= 10_000, "{s:?}");
        assert!(s.entries <= 10, "{s:?}");
    }

    #[test]
    fn ttl_expires() {
        let c: Cache<u32, u32> = Cache::new(
            CacheConfig {
                bound: CacheBound::Entries(10),
                ttl: Some(Duration::from_millis(30)),
            },
            |_, _| 1,
        );
        c.insert(1, 1);
        assert_eq!(c.get(&1), Some(1));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.get(&1), None);
    }

    #[test]
    fn zero_bound_disables() {
        let c: Cache<u32, u32> = Cache::new(
            CacheConfig {
                bound: CacheBound::Bytes(0),
                ttl: None,
            },
            |_, _| 1,
        );
        c.insert(1, 1);
        assert!(!c.is_enabled());
        assert_eq!(c.get(&1), None);
    }

    #[test]
    fn epoch_bump_invalidates_a_namespace_only() {
        let epochs = Epochs::new();
        let c: Cache<(String, u64, String), u32> = Cache::new(
            CacheConfig {
                bound: CacheBound::Entries(100),
                ttl: None,
            },
            |_, _| 1,
        );
        let key = |ns: &str, q: &str| (ns.to_string(), epochs.current(ns), q.to_string());
        c.insert(key("docs", "q"), 1);
        c.insert(key("notes", "q"), 2);
        assert_eq!(c.get(&key("docs", "q")), Some(1));
        assert_eq!(epochs.bump("docs"), 1);
        assert_eq!(c.get(&key("docs", "q")), None);
        assert_eq!(c.get(&key("notes", "q")), Some(2));
    }
}
