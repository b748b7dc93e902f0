//! `aistack._native`: the Python bindings of aistack-core. Each method converts Python values to
//! core types, calls the core with the GIL released, and converts the result back. Core errors
//! become Python exceptions in one place, [`error_to_py`].

mod embedder;
mod store;

use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Arc;

use aistack_core::Error;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use tokio::runtime::Runtime;

/// A value that belongs to one process. After `fork`, the child's first use makes its own with
/// `make`: the parent's threads (tokio workers, the batcher, compute threads) do not exist in
/// the child, so anything that relies on them would wait forever.
///
/// `T: Send + Sync` because the value is shared by every thread that calls [`ForkLocal::get`]
/// and may be dropped by another; the `PhantomData` makes the type's own `Send`/`Sync` follow `T`
/// (a bare `AtomicPtr` would claim both for any `T`).
pub struct ForkLocal<T: Send + Sync> {
    /// The current process's `(pid, value)`, or null. Entries replaced after a fork are leaked.
    slot: AtomicPtr<(u32, T)>,
    _owns: PhantomData<T>,
}

impl<T: Clone + Send + Sync> ForkLocal<T> {
    /// Empty until first used.
    pub const fn empty() -> Self {
        Self {
            slot: AtomicPtr::new(std::ptr::null_mut()),
            _owns: PhantomData,
        }
    }

    /// Holds `value` for the current process.
    pub fn new(value: T) -> Self {
        Self {
            slot: AtomicPtr::new(Box::into_raw(Box::new((std::process::id(), value)))),
            _owns: PhantomData,
        }
    }

    /// The value for this process, made with `make` if this process has none yet.
    pub fn get(&self, make: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
        let pid = std::process::id();
        let current = self.slot.load(Ordering::Acquire);
        // SAFETY: a non-null slot points to a live `Box<(u32, T)>`: entries are only freed in
        // `drop` (which has `&mut self`) and replaced entries are leaked, so the pointer loaded
        // here stays valid while `self` lives.
        if let Some((owner, value)) = unsafe { current.as_ref() } {
            if *owner == pid {
                return Ok(value.clone());
            }
        }
        let fresh = Box::into_raw(Box::new((pid, make()?)));
        match self
            .slot
            .compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire)
        {
            // The replaced entry (the parent's) is leaked: its threads are gone in this process.
            // SAFETY: `fresh` came from `Box::into_raw` above and is now the slot's entry, which
            // is never freed while `self` lives.
            Ok(_) => Ok(unsafe { &*fresh }.1.clone()),
            Err(winner) => {
                // SAFETY: the exchange failed, so `fresh` was never shared: this is its only
                // owner, and it came from `Box::into_raw`.
                drop(unsafe { Box::from_raw(fresh) });
                // SAFETY: `winner` is the non-null entry another thread stored; entries live as
                // long as `self`.
                Ok(unsafe { &*winner }.1.clone())
            }
        }
    }
}

impl<T: Send + Sync> Drop for ForkLocal<T> {
    fn drop(&mut self) {
        let p = *self.slot.get_mut();
        // SAFETY: `&mut self`: no other thread holds the entry, and a non-null slot points to a
        // live `Box` made by `Box::into_raw`. A parent's entry is leaked in a child.
        if let Some((owner, _)) = unsafe { p.as_ref() } {
            if *owner == std::process::id() {
                // SAFETY: as above; the entry is freed once, here.
                drop(unsafe { Box::from_raw(p) });
            }
        }
    }
}

static RUNTIME: ForkLocal<Arc<Runtime>> = ForkLocal::empty();

/// This process's tokio runtime, started on first use.
fn runtime() -> PyResult<Arc<Runtime>> {
    RUNTIME.get(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("aistack-io")
            .enable_all()
            .build()
            .map(Arc::new)
            .map_err(|e| error_to_py_nogil(Error::io("starting the aistack runtime", e)))
    })
}

/// Runs `work` on the runtime with the GIL released; a panic becomes an `AistackError`.
fn run<T, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    F: Future<Output = aistack_core::Result<T>> + Send,
    T: Send,
{
    let rt = runtime()?;
    let out = py.detach(|| std::panic::catch_unwind(AssertUnwindSafe(|| rt.block_on(work))));
    match out {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(error_to_py(py, e)),
        Err(_) => Err(error_to_py(
            py,
            Error::Internal {
                context: "aistack panicked; please report this".into(),
                source: None,
            },
        )),
    }
}

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// The one mapping from core errors to Python exceptions (`aistack._errors`): the class the
/// core's error table names for the `kind()`, the message with its causes, and the kind's code.
pub fn error_to_py(py: Python<'_>, e: Error) -> PyErr {
    let class = e.kind().python_class();
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    let build = || -> PyResult<PyErr> {
        let module =
            ERRORS.get_or_try_init(py, || py.import("aistack._errors").map(Bound::unbind))?;
        let exc = module.bind(py).getattr(class)?.call1((message.clone(),))?;
        exc.setattr("code", e.kind().code())?;
        Ok(PyErr::from_value(exc))
    };
    build().unwrap_or_else(|_| PyRuntimeError::new_err(message.clone()))
}

/// [`error_to_py`] from code that does not hold the GIL.
fn error_to_py_nogil(e: Error) -> PyErr {
    Python::attach(|py| error_to_py(py, e))
}

/// The native module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<embedder::Embedder>()?;
    m.add_class::<store::VectorStore>()?;
    m.add_class::<store::Collection>()?;
    m.add_class::<store::Hit>()?;
    m.add_class::<store::Record>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
