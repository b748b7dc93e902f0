//! `aistack.VectorStore` and `aistack.Collection`: one API over the embedded store, PostgreSQL
//! with pgvector and Qdrant, with Chroma-shaped collections.

use std::path::PathBuf;
use std::sync::Arc;

use aistack_core::embed::Embedder as _;
use aistack_core::ingest::{SearchOptions, TextCollection, TextHit, TextRecord};
use aistack_core::store::{
    Analyzer, CollectionSpec, Fusion, Metric, SearchMode, StoreConfig, VectorStore as CoreStore,
};
use aistack_core::Error;
use numpy::{PyArray1, PyReadonlyArray2};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde_json::{Map, Value};

use crate::embedder::Embedder;
use crate::{error_to_py, run, ForkLocal};

/// Opens `config` (the core's one opener) and keeps the store.
async fn open(config: StoreConfig) -> aistack_core::Result<Arc<dyn CoreStore>> {
    Ok(config.open().await?.store)
}

fn invalid(py: Python<'_>, msg: impl Into<String>) -> PyErr {
    error_to_py(py, Error::invalid(msg))
}

/// A vector store: `"embedded"` (a local directory, the default), `"pgvector"` or `"qdrant"`.
#[pyclass(module = "aistack._native", frozen)]
pub struct VectorStore {
    backend: StoreConfig,
    store: ForkLocal<Arc<dyn CoreStore>>,
}

impl VectorStore {
    /// This process's connection. The embedded store belongs to the process that opened it; a
    /// forked child gets a clear error instead of sharing its files. Servers are reconnected.
    fn store(&self, py: Python<'_>) -> PyResult<Arc<dyn CoreStore>> {
        self.store.get(|| match &self.backend {
            StoreConfig::Embedded { path } => Err(error_to_py(
                py,
                Error::Unavailable {
                    reason: format!(
                        "the embedded store at {} belongs to the process that opened it; a \
                         forked process must open its own store (another directory) or use \
                         pgvector or qdrant",
                        path.display()
                    ),
                    source: None,
                },
            )),
            other => {
                let config = other.clone();
                run(py, open(config))
            }
        })
    }

    fn collection(
        slf: &Bound<'_, Self>,
        name: &str,
        embedder: Option<Bound<'_, Embedder>>,
        create: Option<(Option<usize>, &str)>,
    ) -> PyResult<Collection> {
        let py = slf.py();
        let store = slf.get().store(py)?;
        let model = embedder
            .as_ref()
            .map(|e| e.get().ready_model(py))
            .transpose()?;
        let name_owned = name.to_string();
        let inner = match create {
            Some((dims, metric)) => {
                let metric = Metric::parse(metric).map_err(|e| error_to_py(py, e))?;
                run(py, async move {
                    TextCollection::open_or_create(
                        store,
                        &name_owned,
                        model.map(|m| m as _),
                        dims,
                        metric,
                    )
                    .await
                })?
            }
            None => run(py, async move {
                TextCollection::open(store, &name_owned, model.map(|m| m as _)).await
            })?,
        };
        Ok(Collection {
            store: slf.clone().unbind(),
            embedder: embedder.map(Bound::unbind),
            spec: inner.spec().clone(),
            inner: ForkLocal::new(inner),
        })
    }
}

#[pymethods]
impl VectorStore {
    /// Opens a store: `VectorStore("embedded", path="./data")`,
    /// `VectorStore("pgvector", dsn="postgres://...")` or `VectorStore("qdrant", url="http://...:6334")`.
    #[new]
    #[pyo3(signature = (backend="embedded", *, path=None, dsn=None, url=None, api_key=None))]
    fn new(
        py: Python<'_>,
        backend: &str,
        path: Option<PathBuf>,
        dsn: Option<String>,
        url: Option<String>,
        api_key: Option<String>,
    ) -> PyResult<Self> {
        let backend = match (backend, path, dsn, url) {
            ("embedded", Some(path), None, None) => StoreConfig::Embedded { path },
            ("embedded", None, None, None) => StoreConfig::default(),
            ("pgvector", None, Some(dsn), None) => StoreConfig::Pgvector { dsn },
            ("qdrant", None, None, Some(url)) => StoreConfig::Qdrant {
                url,
                api_key,
                api_key_file: None,
            },
            ("embedded" | "pgvector" | "qdrant", ..) => {
                return Err(invalid(
                    py,
                    "give path= for \"embedded\", dsn= for \"pgvector\", url= for \"qdrant\" \
                     (and nothing else)",
                ))
            }
            (other, ..) => {
                return Err(invalid(
                    py,
                    format!("unknown backend {other:?}: \"embedded\", \"pgvector\" or \"qdrant\""),
                ))
            }
        };
        let store = run(py, open(backend.clone()))?;
        Ok(Self {
            backend,
            store: ForkLocal::new(store),
        })
    }

    /// `"embedded"`, `"pgvector"` or `"qdrant"`.
    #[getter]
    fn backend(&self) -> &'static str {
        self.backend.backend()
    }

    /// Creates a collection (`Conflict` if it exists). Dimensions default to the embedder's;
    /// `analyzer` (`english` or `simple`) says how text becomes terms for lexical search.
    #[pyo3(signature = (name, *, embedder=None, dim=None, metric="cosine", analyzer="english"))]
    fn create_collection(
        slf: &Bound<'_, Self>,
        name: &str,
        embedder: Option<Bound<'_, Embedder>>,
        dim: Option<usize>,
        metric: &str,
        analyzer: &str,
    ) -> PyResult<Collection> {
        let py = slf.py();
        let model = embedder
            .as_ref()
            .map(|e| e.get().ready_model(py))
            .transpose()?;
        let dims = match (dim, &model) {
            (Some(d), _) => d,
            (None, Some(m)) => m.dims(),
            (None, None) => return Err(invalid(py, "give dim= or embedder=")),
        };
        // The model is recorded when its vectors (or their leading dimensions) fill it.
        let origin = model
            .filter(|m| dims <= m.dims())
            .map(|m| m.origin().clone());
        let spec = CollectionSpec::new(
            name,
            dims,
            Metric::parse(metric).map_err(|e| error_to_py(py, e))?,
        )
        .with_analyzer(Analyzer::parse(analyzer).map_err(|e| error_to_py(py, e))?)
        .with_embedding(origin);
        let store = slf.get().store(py)?;
        run(py, async move { store.create_collection(&spec).await })?;
        Self::collection(slf, name, embedder, None)
    }

    /// An existing collection (`NotFound` if there is none).
    #[pyo3(signature = (name, *, embedder=None))]
    fn get_collection(
        slf: &Bound<'_, Self>,
        name: &str,
        embedder: Option<Bound<'_, Embedder>>,
    ) -> PyResult<Collection> {
        Self::collection(slf, name, embedder, None)
    }

    /// The collection, created if needed (dimensions and metric from the arguments or the
    /// embedder; an existing one with other settings is a `Conflict`).
    #[pyo3(signature = (name, *, embedder=None, dim=None, metric="cosine"))]
    fn get_or_create_collection(
        slf: &Bound<'_, Self>,
        name: &str,
        embedder: Option<Bound<'_, Embedder>>,
        dim: Option<usize>,
        metric: &str,
    ) -> PyResult<Collection> {
        Self::collection(slf, name, embedder, Some((dim, metric)))
    }

    /// The names of all collections.
    fn list_collections(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let store = self.store(py)?;
        let all = run(py, async move { store.list_collections().await })?;
        Ok(all.into_iter().map(|c| c.spec.name).collect())
    }

    /// Drops a collection and everything in it; `False` if there was none.
    fn delete_collection(&self, py: Python<'_>, name: &str) -> PyResult<bool> {
        let store = self.store(py)?;
        let name = name.to_string();
        run(py, async move { store.drop_collection(&name).await })
    }

    fn __repr__(&self) -> String {
        match &self.backend {
            StoreConfig::Embedded { path } => {
                format!("VectorStore(\"embedded\", path={:?})", path.display())
            }
            StoreConfig::Pgvector { .. } => "VectorStore(\"pgvector\")".into(),
            StoreConfig::Qdrant { url, .. } => format!("VectorStore(\"qdrant\", url={url:?})"),
        }
    }
}

/// Vectors from numpy (float32 or anything numpy converts) or nested lists.
#[derive(FromPyObject)]
enum Vectors<'py> {
    F32(PyReadonlyArray2<'py, f32>),
    F64(PyReadonlyArray2<'py, f64>),
    Lists(Vec<Vec<f32>>),
}

impl Vectors<'_> {
    fn rows(self) -> Vec<Vec<f32>> {
        match self {
            Vectors::F32(a) => a
                .as_array()
                .rows()
                .into_iter()
                .map(|r| r.to_vec())
                .collect(),
            Vectors::F64(a) => a
                .as_array()
                .rows()
                .into_iter()
                .map(|r| r.iter().map(|&x| x as f32).collect())
                .collect(),
            Vectors::Lists(v) => v,
        }
    }
}

/// One query vector: numpy 1-D or a list.
#[derive(FromPyObject)]
enum QueryVector<'py> {
    F32(numpy::PyReadonlyArray1<'py, f32>),
    F64(numpy::PyReadonlyArray1<'py, f64>),
    List(Vec<f32>),
}

impl QueryVector<'_> {
    fn into_vec(self) -> Vec<f32> {
        match self {
            QueryVector::F32(a) => a.as_array().to_vec(),
            QueryVector::F64(a) => a.as_array().iter().map(|&x| x as f32).collect(),
            QueryVector::List(v) => v,
        }
    }
}

fn to_json(py: Python<'_>, obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Value> {
    pythonize::depythonize::<Value>(obj)
        .map_err(|e| invalid(py, format!("{what} is not JSON-shaped: {e}")))
}

fn to_map(py: Python<'_>, obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Map<String, Value>> {
    match to_json(py, obj, what)? {
        Value::Object(m) => Ok(m),
        _ => Err(invalid(py, format!("{what} must be a dict"))),
    }
}

fn to_py_dict(py: Python<'_>, m: &Map<String, Value>) -> PyResult<Py<PyDict>> {
    Ok(pythonize::pythonize(py, m)?.cast_into::<PyDict>()?.unbind())
}

/// A collection of records (id, text, vector, metadata), shaped after Chroma's.
#[pyclass(module = "aistack._native", frozen)]
pub struct Collection {
    store: Py<VectorStore>,
    embedder: Option<Py<Embedder>>,
    spec: CollectionSpec,
    inner: ForkLocal<TextCollection>,
}

impl Collection {
    fn inner(&self, py: Python<'_>) -> PyResult<TextCollection> {
        self.inner.get(|| {
            let store = self.store.get().store(py)?;
            let model = match &self.embedder {
                Some(e) => Some(e.get().ready_model(py)?),
                None => None,
            };
            let name = self.spec.name.clone();
            run(py, async move {
                TextCollection::open(store, &name, model.map(|m| m as _)).await
            })
        })
    }
}

#[pymethods]
impl Collection {
    /// The collection's name.
    #[getter]
    fn name(&self) -> &str {
        &self.spec.name
    }

    /// Vector dimensions.
    #[getter]
    fn dim(&self) -> usize {
        self.spec.dims
    }

    /// `"cosine"`, `"dot"` or `"l2"`.
    #[getter]
    fn metric(&self) -> &'static str {
        self.spec.metric.as_str()
    }

    /// The model whose vectors fill the collection, where recorded: texts embedded by another
    /// model, or with other prompts, are refused (`aistack.Conflict`).
    #[getter]
    fn embedding_model(&self) -> Option<&str> {
        self.spec.embedding.as_ref().map(|o| o.model.as_str())
    }

    /// Inserts or replaces records by id: with `documents` (embedded as passages), with
    /// `embeddings`, or both. All rows are checked before any is written.
    #[pyo3(signature = (ids, *, documents=None, embeddings=None, metadatas=None))]
    fn upsert(
        &self,
        py: Python<'_>,
        ids: Vec<String>,
        documents: Option<Vec<String>>,
        embeddings: Option<Vectors<'_>>,
        metadatas: Option<Vec<Bound<'_, PyAny>>>,
    ) -> PyResult<()> {
        let vectors = embeddings.map(Vectors::rows);
        let metadatas = metadatas
            .map(|ms| {
                ms.iter()
                    .enumerate()
                    .map(|(i, m)| {
                        if m.is_none() {
                            Ok(Map::new())
                        } else {
                            to_map(py, m, &format!("metadata {i}"))
                        }
                    })
                    .collect::<PyResult<Vec<_>>>()
            })
            .transpose()?;
        let inner = self.inner(py)?;
        run(py, async move {
            inner.upsert(ids, documents, vectors, metadatas).await
        })
    }

    /// The `k` best records for a text or `embedding`, best first, filtered by `where`
    /// (Chroma's operators: `$eq $ne $gt $gte $lt $lte $in $nin $and $or`). `mode`: `vector`
    /// (nearest by meaning), `lexical` (BM25 over the text) or `hybrid` (both, fused by
    /// reciprocal rank; `fusion` sets `rrf_k`, `vector_weight`, `lexical_weight`,
    /// `vector_depth`, `lexical_depth`).
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (text=None, *, embedding=None, k=10, r#where=None, min_score=None, mode="vector", fusion=None),
           text_signature = "(self, text=None, *, embedding=None, k=10, where=None, min_score=None, mode='vector', fusion=None)")]
    fn query(
        &self,
        py: Python<'_>,
        text: Option<String>,
        embedding: Option<QueryVector<'_>>,
        k: usize,
        r#where: Option<Bound<'_, PyAny>>,
        min_score: Option<f32>,
        mode: &str,
        fusion: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Vec<Hit>> {
        let filter = r#where
            .filter(|w| !w.is_none())
            .map(|w| to_json(py, &w, "where"))
            .transpose()?;
        let mode = SearchMode::parse(mode).map_err(|e| error_to_py(py, e))?;
        let fusion: Fusion = match fusion.filter(|f| !f.is_none()) {
            None => Fusion::default(),
            Some(f) => serde_json::from_value(to_json(py, &f, "fusion")?)
                .map_err(|e| invalid(py, format!("fusion: {e}")))?,
        };
        let inner = self.inner(py)?;
        let hits = match (text, embedding) {
            (Some(t), None) => {
                let opts = SearchOptions {
                    mode,
                    filter,
                    min_score,
                    fusion,
                };
                run(py, async move { inner.query_with(&t, k, &opts).await })?
            }
            (None, Some(_)) if mode != SearchMode::Vector => {
                return Err(invalid(
                    py,
                    "lexical and hybrid search take a query text, not embedding=",
                ))
            }
            (None, Some(v)) => {
                let v = v.into_vec();
                run(py, async move {
                    inner.query_vector(v, k, filter.as_ref(), min_score).await
                })?
            }
            _ => return Err(invalid(py, "give a query text or embedding=, not both")),
        };
        hits.into_iter().map(|h| Hit::from_core(py, h)).collect()
    }

    /// The records with these ids, in the order asked; missing ids are left out.
    fn get(&self, py: Python<'_>, ids: Vec<String>) -> PyResult<Vec<Record>> {
        let inner = self.inner(py)?;
        let found = run(py, async move { inner.get(&ids).await })?;
        found
            .into_iter()
            .map(|r| Record::from_core(py, r))
            .collect()
    }

    /// Deletes records by id, or those matching `where`; returns how many there were.
    #[pyo3(signature = (ids=None, *, r#where=None), text_signature = "(self, ids=None, *, where=None)")]
    fn delete(
        &self,
        py: Python<'_>,
        ids: Option<Vec<String>>,
        r#where: Option<Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        let inner = self.inner(py)?;
        match (ids, r#where.filter(|w| !w.is_none())) {
            (Some(ids), None) => run(py, async move { inner.delete(&ids).await }),
            (None, Some(w)) => {
                let filter = to_json(py, &w, "where")?;
                run(py, async move { inner.delete_where(&filter).await })
            }
            _ => Err(invalid(py, "give ids or where=, not both")),
        }
    }

    /// Records held, or those matching `where`.
    #[pyo3(signature = (*, r#where=None), text_signature = "(self, *, where=None)")]
    fn count(&self, py: Python<'_>, r#where: Option<Bound<'_, PyAny>>) -> PyResult<u64> {
        let filter = r#where
            .filter(|w| !w.is_none())
            .map(|w| to_json(py, &w, "where"))
            .transpose()?;
        let inner = self.inner(py)?;
        run(py, async move { inner.count(filter.as_ref()).await })
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.count(py, None)? as usize)
    }

    fn __repr__(&self) -> String {
        format!(
            "Collection({:?}, dim={}, metric={:?})",
            self.spec.name,
            self.spec.dims,
            self.spec.metric.as_str()
        )
    }
}

/// One query result.
#[pyclass(module = "aistack._native", frozen, get_all)]
pub struct Hit {
    /// The record's id.
    id: String,
    /// Higher is better.
    score: f32,
    /// The record's text, if it has one.
    document: Option<String>,
    /// The record's metadata.
    metadata: Py<PyDict>,
    /// Rank (from 1) in the vector arm, where it found this hit.
    vector_rank: Option<u32>,
    /// Rank (from 1) in the lexical arm, where it found this hit.
    lexical_rank: Option<u32>,
}

impl Hit {
    fn from_core(py: Python<'_>, h: TextHit) -> PyResult<Self> {
        Ok(Self {
            metadata: to_py_dict(py, &h.metadata)?,
            id: h.id,
            score: h.score,
            document: h.document,
            vector_rank: h.vector_rank,
            lexical_rank: h.lexical_rank,
        })
    }
}

#[pymethods]
impl Hit {
    fn __repr__(&self) -> String {
        format!("Hit(id={:?}, score={:.4})", self.id, self.score)
    }
}

/// One stored record.
#[pyclass(module = "aistack._native", frozen, get_all)]
pub struct Record {
    /// The record's id.
    id: String,
    /// Its text, if it has one.
    document: Option<String>,
    /// Its metadata.
    metadata: Py<PyDict>,
    /// Its vector (float32; normalized in a cosine collection).
    embedding: Py<PyArray1<f32>>,
}

impl Record {
    fn from_core(py: Python<'_>, r: TextRecord) -> PyResult<Self> {
        Ok(Self {
            metadata: to_py_dict(py, &r.metadata)?,
            embedding: PyArray1::from_vec(py, r.vector).unbind(),
            id: r.id,
            document: r.document,
        })
    }
}

#[pymethods]
impl Record {
    fn __repr__(&self) -> String {
        format!("Record(id={:?})", self.id)
    }
}
