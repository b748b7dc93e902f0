//! Reads: records by id, counts, searches (through the index or by an exact scan) and
//! collection information. They share the slot table's read lock with each other.

use super::ann::Ann;
use super::state::State;
use super::{AnnState, Collection, EmbeddedStore, IndexStatus, Inner};
use crate::error::Result;
use crate::store::{CollectionInfo, Filter, Hit, Record, SearchRequest};

impl EmbeddedStore {
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
            Some(f) => state.matching(Some(f)).count() as u64,
        }
    }

    /// Answers `requests` (with their prepared query vectors) against one view of the records.
    pub(super) fn search_all(
        &self,
        requests: &[SearchRequest],
        queries: &[Vec<f32>],
    ) -> Vec<Vec<Hit>> {
        let ann = self.ready_ann();
        let state = self.read();
        requests
            .iter()
            .zip(queries)
            .map(|(r, q)| self.search(&state, ann.as_deref(), r, q))
            .collect()
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
