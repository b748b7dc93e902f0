//! `aistack.Embedder`: a sentence-embedding model loaded in the background, encoding to numpy.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aistack_core::config::Settings;
use aistack_core::embed::{
    EmbedOptions, EmbeddingEngine, InputKind, ModelEmbedder, ModelState, Norm,
};
use numpy::{PyArray1, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::{error_to_py, run, runtime, ForkLocal};

/// One text or a list of texts.
#[derive(FromPyObject)]
pub enum Sentences {
    /// A single text: the result is one vector.
    One(String),
    /// Several texts: the result is a matrix, one row each.
    Many(Vec<String>),
}

impl Sentences {
    fn into_parts(self) -> (Vec<String>, bool) {
        match self {
            Sentences::One(s) => (vec![s], true),
            Sentences::Many(v) => (v, false),
        }
    }
}

/// A sentence-embedding model served in-process: batched, cached and validated by aistack-core.
#[pyclass(module = "aistack._native", frozen, subclass)]
pub struct Embedder {
    settings: Settings,
    engine: ForkLocal<Arc<EmbeddingEngine>>,
}

impl Embedder {
    /// This process's engine; a forked child starts its own (the model loads again).
    fn engine(&self) -> PyResult<Arc<EmbeddingEngine>> {
        self.engine.get(|| start(&self.settings))
    }

    /// The loaded model, waiting for it to load.
    pub fn ready_model(&self, py: Python<'_>) -> PyResult<Arc<ModelEmbedder>> {
        let engine = self.engine()?;
        run(py, async move { engine.wait_ready(None).await })
    }

    #[allow(clippy::too_many_arguments)]
    fn encode_kind(
        &self,
        py: Python<'_>,
        sentences: Sentences,
        kind: InputKind,
        batch_size: usize,
        normalize: bool,
        options: EmbedOptions,
    ) -> PyResult<Py<PyAny>> {
        let (texts, single) = sentences.into_parts();
        let engine = self.engine()?;
        let (flat, dims) = run(py, async move {
            let model = engine.wait_ready(None).await?;
            let dims = model.output_dims(&options)?;
            let flat = model
                .embed_all_flat(&texts, kind, norm(normalize), &options, batch_size)
                .await?;
            Ok((flat, dims))
        })?;
        to_array(py, flat, dims, single)
    }
}

fn norm(normalize: bool) -> Norm {
    // As sentence-transformers: `normalize=False` returns what the model's pipeline makes.
    if normalize {
        Norm::Unit
    } else {
        Norm::Model
    }
}

fn start(settings: &Settings) -> PyResult<Arc<EmbeddingEngine>> {
    let rt = runtime()?;
    let _entered = rt.enter();
    Ok(EmbeddingEngine::start(
        settings.embed.clone(),
        settings.cache.clone(),
    ))
}

/// A row-major buffer as a numpy array, without copying it: `(n, dims)`, or `(dims,)` for one
/// text.
fn to_array(py: Python<'_>, flat: Vec<f32>, dims: usize, single: bool) -> PyResult<Py<PyAny>> {
    let n = flat.len() / dims.max(1);
    let a = PyArray1::from_vec(py, flat);
    if single {
        Ok(a.into_any().unbind())
    } else {
        Ok(a.reshape([n, dims])?.into_any().unbind())
    }
}

static RESOLVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

#[pymethods]
impl Embedder {
    /// Starts loading `model` (a local directory or a Hugging Face id) in the background.
    #[new]
    #[pyo3(signature = (model, *, revision=None, config=None, query_prefix=None, passage_prefix=None, max_batch_tokens=None, threads=None))]
    fn new(
        model: String,
        revision: Option<String>,
        config: Option<PathBuf>,
        query_prefix: Option<String>,
        passage_prefix: Option<String>,
        max_batch_tokens: Option<usize>,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        let to_py = |e| Python::attach(|py| error_to_py(py, e));
        let mut settings = Settings::load(config.as_deref()).map_err(to_py)?;
        settings.embed.model = model;
        if let Some(r) = revision {
            settings.embed.revision = r;
        }
        if query_prefix.is_some() {
            settings.embed.query_prefix = query_prefix;
        }
        if passage_prefix.is_some() {
            settings.embed.passage_prefix = passage_prefix;
        }
        if let Some(t) = max_batch_tokens {
            settings.embed.max_batch_tokens = t;
        }
        if let Some(t) = threads {
            settings.embed.threads = t;
        }
        settings.validate().map_err(to_py)?;
        let engine = start(&settings)?;
        Ok(Self {
            settings,
            engine: ForkLocal::new(engine),
        })
    }

    /// Whether the model is loaded.
    #[getter]
    fn ready(&self) -> PyResult<bool> {
        Ok(self.engine()?.state() == ModelState::Ready)
    }

    /// `"loading"`, `"ready"`, or `"failed: <reason>"`.
    #[getter]
    fn state(&self) -> PyResult<String> {
        Ok(match self.engine()?.state() {
            ModelState::Loading => "loading".into(),
            ModelState::Ready => "ready".into(),
            ModelState::Failed(why) => format!("failed: {why}"),
        })
    }

    /// Waits until the model is loaded; raises `Timeout` after `timeout` seconds, or
    /// `Unavailable` if loading failed.
    #[pyo3(signature = (timeout=None))]
    fn wait_ready(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let timeout = match timeout {
            Some(t) if !(t.is_finite() && t >= 0.0) => {
                return Err(error_to_py(
                    py,
                    aistack_core::Error::invalid("timeout must be a number of seconds ≥ 0"),
                ))
            }
            Some(t) => Some(Duration::from_secs_f64(t)),
            None => None,
        };
        let engine = self.engine()?;
        run(
            py,
            async move { engine.wait_ready(timeout).await.map(|_| ()) },
        )
    }

    /// The model's id (as given until it has loaded).
    #[getter]
    fn model_id(&self) -> PyResult<String> {
        let engine = self.engine()?;
        Ok(match engine.embedder() {
            Ok(m) => m.info().model_id.clone(),
            Err(_) => engine.model_spec().to_string(),
        })
    }

    /// Vector dimensions (waits for the model).
    #[getter]
    fn dim(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.ready_model(py)?.info().dims)
    }

    /// Longest input in tokens; longer inputs are truncated (waits for the model).
    #[getter]
    fn max_seq_length(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.ready_model(py)?.info().max_input_tokens)
    }

    /// The transformer's architecture, as its `config.json` names it (waits for the model).
    #[getter]
    fn architecture(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.ready_model(py)?.info().architecture.clone())
    }

    /// Pooling modes, concatenated in this order (waits for the model).
    #[getter]
    fn pooling(&self, py: Python<'_>) -> PyResult<Vec<&'static str>> {
        Ok(self
            .ready_model(py)?
            .info()
            .pooling
            .iter()
            .map(|p| p.name())
            .collect())
    }

    /// Whether the model's own pipeline L2-normalizes its embeddings (waits for the model).
    #[getter]
    fn normalizes(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.ready_model(py)?.info().normalize)
    }

    /// The model's prompts by name, as `prompt_name` takes them (waits for the model).
    #[getter]
    fn prompts(&self, py: Python<'_>) -> PyResult<std::collections::BTreeMap<String, String>> {
        Ok(self.ready_model(py)?.info().prompts.clone())
    }

    /// Embeds a text (→ shape `(dim,)`) or a list of texts (→ `(n, dim)`), float32. Any number of
    /// texts; they go to the batcher in groups of `batch_size`. `prompt_name` picks one of the
    /// model's prompts; `truncate_dim` keeps the first dimensions (Matryoshka), as in
    /// sentence-transformers.
    #[pyo3(signature = (sentences, *, batch_size=32, normalize=true, prompt_name=None, truncate_dim=None))]
    fn encode(
        &self,
        py: Python<'_>,
        sentences: Sentences,
        batch_size: usize,
        normalize: bool,
        prompt_name: Option<String>,
        truncate_dim: Option<usize>,
    ) -> PyResult<Py<PyAny>> {
        let options = EmbedOptions {
            prompt_name,
            dimensions: truncate_dim,
        };
        self.encode_kind(
            py,
            sentences,
            InputKind::Plain,
            batch_size,
            normalize,
            options,
        )
    }

    /// Like `encode`, with the model's query prefix (if it has one) applied.
    #[pyo3(signature = (sentences, *, batch_size=32, normalize=true))]
    fn encode_query(
        &self,
        py: Python<'_>,
        sentences: Sentences,
        batch_size: usize,
        normalize: bool,
    ) -> PyResult<Py<PyAny>> {
        self.encode_kind(
            py,
            sentences,
            InputKind::Query,
            batch_size,
            normalize,
            EmbedOptions::default(),
        )
    }

    /// Like `encode`, with the model's passage (document) prefix (if it has one) applied.
    #[pyo3(signature = (sentences, *, batch_size=32, normalize=true))]
    fn encode_document(
        &self,
        py: Python<'_>,
        sentences: Sentences,
        batch_size: usize,
        normalize: bool,
    ) -> PyResult<Py<PyAny>> {
        self.encode_kind(
            py,
            sentences,
            InputKind::Passage,
            batch_size,
            normalize,
            EmbedOptions::default(),
        )
    }

    /// `encode` for asyncio: returns an awaitable; the work runs on aistack's own threads.
    #[pyo3(signature = (sentences, *, batch_size=32, normalize=true, prompt_name=None, truncate_dim=None))]
    fn aencode<'py>(
        &self,
        py: Python<'py>,
        sentences: Sentences,
        batch_size: usize,
        normalize: bool,
        prompt_name: Option<String>,
        truncate_dim: Option<usize>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let options = EmbedOptions {
            prompt_name,
            dimensions: truncate_dim,
        };
        let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
        let future = event_loop.call_method0("create_future")?;
        let resolve = RESOLVE
            .get_or_try_init(py, || {
                py.import("aistack._errors")?
                    .getattr("_resolve")
                    .map(Bound::unbind)
            })?
            .clone_ref(py);
        let (texts, single) = sentences.into_parts();
        let engine = self.engine()?;
        let (loop_ref, future_ref) = (event_loop.unbind(), future.clone().unbind());
        runtime()?.spawn(async move {
            let result = async {
                let model = engine.wait_ready(None).await?;
                let dims = model.output_dims(&options)?;
                let flat = model
                    .embed_all_flat(
                        &texts,
                        InputKind::Plain,
                        norm(normalize),
                        &options,
                        batch_size,
                    )
                    .await?;
                Ok((flat, dims))
            }
            .await;
            Python::attach(|py| {
                let (ok, value) = match result {
                    Ok((flat, dims)) => match to_array(py, flat, dims, single) {
                        Ok(a) => (true, a),
                        Err(e) => (false, e.into_value(py).into_any()),
                    },
                    Err(e) => (false, error_to_py(py, e).into_value(py).into_any()),
                };
                // A closed loop has nobody waiting: nothing to deliver.
                let _ = loop_ref.call_method1(
                    py,
                    "call_soon_threadsafe",
                    (resolve, future_ref, ok, value),
                );
            });
        });
        Ok(future)
    }

    fn __repr__(&self) -> PyResult<String> {
        Ok(format!(
            "Embedder({:?}, state={:?})",
            self.model_id()?,
            self.state()?
        ))
    }
}
