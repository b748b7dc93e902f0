//! A decorator that puts any [`VectorStore`] behind retry (for retryable errors) and a named
//! circuit breaker, so a backend that is down fails fast and shows in health and metrics.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;

use super::{CollectionInfo, CollectionSpec, Filter, Hit, Record, SearchRequest, VectorStore};
use crate::error::Result;
use crate::resilience::{retry, CircuitBreaker, RetryPolicy};

/// A store whose every call goes through `retry`, each attempt through the breaker. Every
/// operation is safe to repeat: upserts and deletes are idempotent by id.
pub struct ResilientStore {
    inner: Arc<dyn VectorStore>,
    retry: RetryPolicy,
    breaker: Arc<CircuitBreaker>,
}

impl std::fmt::Debug for ResilientStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResilientStore")
            .field("backend", &self.inner.backend())
            .field("breaker", &self.breaker)
            .finish()
    }
}

impl ResilientStore {
    /// Wraps `inner`; take `breaker` from a [`crate::resilience::BreakerRegistry`] so health can
    /// report it.
    pub fn new(
        inner: Arc<dyn VectorStore>,
        retry: RetryPolicy,
        breaker: Arc<CircuitBreaker>,
    ) -> Self {
        Self {
            inner,
            retry,
            breaker,
        }
    }

    /// The breaker in front of the backend.
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breaker
    }

    async fn run<T, F, Fut>(&self, op: &str, f: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let name = format!("{} {op}", self.inner.backend());
        retry(&self.retry, &name, || self.breaker.call(&f)).await
    }
}

#[async_trait]
impl VectorStore for ResilientStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn pool_stats(&self) -> Option<super::PoolStats> {
        self.inner.pool_stats()
    }

    async fn create_collection(&self, spec: &CollectionSpec) -> Result<()> {
        self.run("create_collection", || self.inner.create_collection(spec))
            .await
    }

    async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<()> {
        self.run("ensure_collection", || self.inner.ensure_collection(spec))
            .await
    }

    async fn list_collections(&self) -> Result<Vec<CollectionInfo>> {
        self.run("list_collections", || self.inner.list_collections())
            .await
    }

    async fn collection(&self, name: &str) -> Result<CollectionInfo> {
        self.run("collection", || self.inner.collection(name)).await
    }

    async fn collection_spec(&self, name: &str) -> Result<CollectionSpec> {
        self.run("collection_spec", || self.inner.collection_spec(name))
            .await
    }

    async fn drop_collection(&self, name: &str) -> Result<bool> {
        self.run("drop_collection", || self.inner.drop_collection(name))
            .await
    }

    async fn upsert(&self, collection: &str, records: Vec<Record>) -> Result<()> {
        self.run("upsert", || self.inner.upsert(collection, records.clone()))
            .await
    }

    async fn get(&self, collection: &str, ids: &[String]) -> Result<Vec<Record>> {
        self.run("get", || self.inner.get(collection, ids)).await
    }

    async fn delete(&self, collection: &str, ids: &[String]) -> Result<u64> {
        self.run("delete", || self.inner.delete(collection, ids))
            .await
    }

    async fn delete_where(&self, collection: &str, filter: &Filter) -> Result<u64> {
        self.run("delete_where", || {
            self.inner.delete_where(collection, filter)
        })
        .await
    }

    async fn replace(&self, collection: &str, records: Vec<Record>, stale: &Filter) -> Result<u64> {
        self.run("replace", || {
            self.inner.replace(collection, records.clone(), stale)
        })
        .await
    }

    async fn check_writable(&self) -> Result<()> {
        self.inner.check_writable().await
    }

    async fn count(&self, collection: &str, filter: Option<&Filter>) -> Result<u64> {
        self.run("count", || self.inner.count(collection, filter))
            .await
    }

    async fn search(&self, collection: &str, requests: &[SearchRequest]) -> Result<Vec<Vec<Hit>>> {
        self.run("search", || self.inner.search(collection, requests))
            .await
    }
}
