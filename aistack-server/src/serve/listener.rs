//! The accept loop: hyper-util connections with a tokio timer (so the header read timeout
//! works), optional TLS with a handshake deadline, a connection cap, a watchdog that closes
//! connections that stay silent or idle, and graceful shutdown.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use aistack_core::config::ServerSettings;
use aistack_core::{Error, Result};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Loads a rustls server config from PEM certificate-chain and key files.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let read = |p: &Path, what: &str| {
        std::fs::read(p).map_err(|e| {
            Error::config(
                format!("server.tls_{what}"),
                format!("cannot read {}: {e}", p.display()),
            )
        })
    };
    let cert_pem = read(cert, "cert")?;
    let key_pem = read(key, "key")?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::config("server.tls_cert", format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::config(
            "server.tls_cert",
            format!("{} holds no certificate", cert.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => Error::config(
            "server.tls_key",
            format!("{} holds no private key", key.display()),
        ),
        e => Error::config("server.tls_key", format!("bad PEM: {e}")),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config("server.tls_cert", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            Error::config(
                "server.tls_key",
                format!("does not match the certificate: {e}"),
            )
        })?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// What one connection is doing, for its watchdog: requests in flight (until their response
/// body has been sent) and when it last had none.
struct Activity {
    accepted: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `accepted` when the last request finished.
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            accepted: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        })
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    /// Starts the quiet time again now (after a TLS handshake, which has its own deadline).
    fn restart(&self) {
        let now = self.accepted.elapsed().as_millis() as u64;
        self.idle_since_ms.store(now, Ordering::SeqCst);
    }

    /// How long the connection has had no request in flight (`None` while it has one).
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::SeqCst));
        Some(self.accepted.elapsed().saturating_sub(since))
    }
}

/// A request in flight; dropped when its response body has been sent (or the request failed).
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        let now = a.accepted.elapsed().as_millis() as u64;
        a.idle_since_ms.store(now, Ordering::SeqCst);
        a.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Resolves once the connection has had no request in flight for `limit`: none since it was
/// accepted (headers that never come, or trickle), or none since its last response.
async fn watchdog(a: &Activity, limit: Duration) {
    loop {
        match a.idle_for() {
            Some(d) if d >= limit => return,
            Some(d) => tokio::time::sleep(limit - d).await,
            None => tokio::time::sleep(limit).await,
        }
    }
}

/// The service of one connection: each request marks the connection busy until its response
/// body is done.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, B> hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Tracked<S>
where
    S: hyper::service::Service<
        hyper::Request<hyper::body::Incoming>,
        Response = hyper::Response<B>,
    >,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: hyper::body::Body + Unpin + Send + 'static,
{
    type Response = hyper::Response<Guarded<B>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = std::result::Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        let busy = self.activity.begin();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(resp.map(|inner| Guarded { inner, _busy: busy }))
        })
    }
}

/// A response body that keeps its connection marked busy until it is dropped (sent or abandoned).
struct Guarded<B> {
    inner: B,
    _busy: Busy,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and waits up to
/// `shutdown_grace_ms` for in-flight connections.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: &ServerSettings,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(settings.header_read_timeout_ms))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .max_concurrent_streams(256);
    let builder = Arc::new(builder);
    let tls = tls.map(TlsAcceptor::from);
    let handshake = Duration::from_millis(settings.tls_handshake_timeout_ms);
    let quiet = Duration::from_millis(settings.header_read_timeout_ms);
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = GracefulShutdown::new();
    let service = TowerToHyperService::new(app);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.map_err(|e| Error::internal("connection slots", e))?,
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let activity = Activity::new();
        let service = Tracked {
            inner: service.clone(),
            activity: activity.clone(),
        };
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let tls_activity = activity.clone();
            let serve = async move {
                match tls {
                    None => {
                        let conn = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .into_owned();
                        watcher.watch(conn).await
                    }
                    Some(acceptor) => {
                        let stream =
                            match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    return Ok(());
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    return Ok(());
                                }
                            };
                        tls_activity.restart();
                        let conn = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .into_owned();
                        watcher.watch(conn).await
                    }
                }
            };
            // hyper's own header timeout starts at a request's first byte (and, on HTTP/1.1,
            // after each response); the watchdog also closes a connection that sends nothing at
            // all, and an HTTP/2 one with no stream open.
            // Biased: a request that arrives as the deadline passes is served, not dropped.
            let result = tokio::select! {
                biased;
                r = serve => r,
                () = watchdog(&activity, quiet) => {
                    tracing::debug!(%peer, "closing a silent or idle connection");
                    Ok(())
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let grace = Duration::from_millis(settings.shutdown_grace_ms);
    tracing::info!(
        grace_ms = settings.shutdown_grace_ms,
        "shutting down: finishing in-flight requests"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within the shutdown grace period");
    }
    Ok(())
}
