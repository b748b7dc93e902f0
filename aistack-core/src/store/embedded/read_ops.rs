//! Reads: records by id, counts, searches (through the index or by an exact scan) and
//! collection information. They share the slot table's read lock with each other.

use std::sync::Arc;

use roaring::RoaringBitmap;

use super::ann::Ann;
use super::state::State;
use super::{AnnState, Collection, EmbeddedStore, IndexStatus, Inner};
use crate::error::Result;
use crate::store::hybrid::{fuse, rank_arm};
use crate::store::{CollectionInfo, Filter, Hit, Record, SearchMode, SearchRequest};

/// A filtered search whose matches (known exactly from the metadata index) number at most this
/// many scans them exactly (about 1 ms at 384 dimensions); more go through the HNSW index with the
/// match set as its predicate.
const EXACT_CANDIDATES: u64 = 2_048;

impl EmbeddedStore {
    /// Bytes a collection's lexical (BM25) index takes on disk (0 before any record has text).
    pub fn lexical_index_bytes(&self, collection: &str) -> Result<u64> {
        Ok(super::lexical::disk_bytes(
            &self.inner.get_collection(collection)?.dir,
        ))
    }

    /// The HNSW index status of a collection.
    pub fn index_status(&self, collection: &str) -> Result<IndexStatus> {
        Ok(self.inner.get_collection(collection)?.status())
    }
}

impl Inner {
    /// Every collection with its record count.
    pub(super) fn list(&self) -> Vec<CollectionInfo> {
        let map = self.collections.read();
        map.values().map(|c| c.info()).collect()
    }
}

impl Collection {
    /// The collection's spec and record count.
    pub(super) fn info(&self) -> CollectionInfo {
        CollectionInfo {
            spec: self.spec.clone(),
            count: self.read().len() as u64,
        }
    }

    /// The records stored under `ids` (missing ones left out), in the order asked.
    pub(super) fn get(&self, ids: &[String]) -> Vec<Record> {
        let state = self.read();
        ids.iter().filter_map(|id| state.record_of(id)).collect()
    }

    /// The number of records `filter` passes (all of them without one).
    pub(super) fn count(&self, filter: Option<&Filter>) -> u64 {
        let state = self.read();
        match filter {
            None => state.len() as u64,
            Some(f) => match state.plan(f) {
                Some(set) => set.len(),
                None => state.matching(Some(f)).count() as u64,
            },
        }
    }

    /// Answers `requests` (with their prepared query vectors) against one view of the records.
    pub(super) fn search_all(
        &self,
        requests: &[SearchRequest],
        queries: &[Vec<f32>],
    ) -> Result<Vec<Vec<Hit>>> {
        let ann = self.ready_ann();
        let state = self.read();
        requests
            .iter()
            .zip(queries)
            .map(|(r, q)| self.search(&state, ann.as_deref(), r, q))
            .collect()
    }

    /// Answers one search in its mode. A filter becomes its set of slots once (from the
    /// metadata index), and both arms of a hybrid search use it.
    fn search(
        &self,
        state: &State,
        ann: Option<&Ann>,
        req: &SearchRequest,
        q: &[f32],
    ) -> Result<Vec<Hit>> {
        let allowed = req
            .filter
            .as_ref()
            .and_then(|f| state.plan(f))
            .map(Arc::new);
        let allowed = allowed.as_ref();
        Ok(match req.mode {
            SearchMode::Vector => {
                let mut hits = self.search_vector(state, ann, req, q, allowed);
                rank_arm(&mut hits, SearchMode::Vector);
                hits
            }
            SearchMode::Lexical => {
                let mut hits = state.search_lexical(req, allowed)?;
                rank_arm(&mut hits, SearchMode::Lexical);
                hits
            }
            SearchMode::Hybrid => {
                // The arms rank ids only: metadata and vectors are copied for the `k` winners
                // alone, not for every candidate of both arms.
                let bare = |mode, depth| SearchRequest {
                    with_metadata: false,
                    with_vector: false,
                    ..req.arm(mode, depth)
                };
                let v = bare(SearchMode::Vector, req.fusion.vector_depth_for(req.k));
                let l = bare(SearchMode::Lexical, req.fusion.lexical_depth_for(req.k));
                // The arms are independent reads of one view: run them side by side.
                let (vector, lexical) = rayon::join(
                    || self.search_vector(state, ann, &v, q, allowed),
                    || state.search_lexical(&l, allowed),
                );
                let mut hits = fuse(&req.fusion, vector, lexical?, req.k);
                state.fill(&mut hits, req);
                hits
            }
        })
    }

    /// The vector arm: through the index, or an exact scan where that is cheaper (small
    /// collections, selective filters) or the index falls short.
    fn search_vector(
        &self,
        state: &State,
        ann: Option<&Ann>,
        req: &SearchRequest,
        q: &[f32],
        allowed: Option<&Arc<RoaringBitmap>>,
    ) -> Vec<Hit> {
        let allowed = allowed.map(|a| &**a);
        let use_ann = ann.filter(|_| {
            state.len() >= self.cfg.exact_below
                && match (&req.filter, allowed) {
                    (None, _) => true,
                    // The metadata index gave the exact matches: scanning them costs what they
                    // number, so only a long list goes through the graph.
                    (Some(_), Some(set)) => set.len() > EXACT_CANDIDATES,
                    (Some(f), None) => state.filter_share(f) >= self.cfg.min_filter_share,
                }
        });
        use_ann
            .and_then(|a| state.search_ann(a, req, q, allowed))
            .unwrap_or_else(|| state.search(req, q, allowed))
    }

    /// How far along the collection's index is.
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
}
