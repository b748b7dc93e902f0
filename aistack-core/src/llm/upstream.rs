//! One upstream model server: its HTTP client, breaker, concurrency slots and readiness, and one
//! attempt at a request up to its first token (the point after which nothing is retried).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::observe::AttemptOutcome;
use super::settings::UpstreamSettings;
use super::sse::SseReader;
use super::stream::ByteStream;
use crate::error::{Error, Result};
use crate::resilience::{BreakerConfig, BreakerRegistry, BreakerState, CircuitBreaker};

/// Largest non-streamed answer or stream event read from an upstream.
pub(crate) const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// What the background probe last saw of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Readiness {
    /// Not probed yet.
    Unknown,
    /// Answering.
    Ready,
    /// Up, still loading its model.
    Loading,
    /// Not answering, or answering with errors.
    Down,
}

impl Readiness {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Readiness::Ready,
            2 => Readiness::Loading,
            3 => Readiness::Down,
            _ => Readiness::Unknown,
        }
    }
    fn as_u8(self) -> u8 {
        match self {
            Readiness::Unknown => 0,
            Readiness::Ready => 1,
            Readiness::Loading => 2,
            Readiness::Down => 3,
        }
    }
}

/// An upstream's health, as `/health` shows it: no URL, no key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpstreamHealth {
    /// The upstream's name.
    pub name: String,
    /// What the probe last saw.
    pub readiness: Readiness,
    /// Its breaker's state.
    pub breaker: BreakerState,
    /// Requests in flight.
    pub in_flight: usize,
    /// Why the last probe failed, if it did.
    pub last_error: Option<String>,
}

/// One OpenAI-compatible server the gateway sends requests to.
pub struct Upstream {
    pub(crate) settings: UpstreamSettings,
    client: reqwest::Client,
    api_key: Option<String>,
    pub(crate) breaker: Arc<CircuitBreaker>,
    slots: Arc<Semaphore>,
    readiness: AtomicU8,
    last_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.settings.name)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A request got to its first token: nothing more is retried from here.
pub(crate) struct Committed {
    pub response: Reply,
    pub first_token: Instant,
    pub slot: OwnedSemaphorePermit,
}

/// An upstream's answer once its first token came.
pub(crate) enum Reply {
    /// A whole JSON answer.
    Full { status: u16, body: Value },
    /// A stream: the events read so far, and the rest of the body.
    Stream {
        reader: SseReader,
        first: Vec<String>,
        rest: ByteStream,
    },
}

/// How one attempt ended.
pub(crate) enum Attempt {
    /// Committed: the answer goes to the client.
    Committed(Box<Committed>),
    /// The caller's mistake: goes back at once, no other upstream tried.
    Rejected(Error),
    /// Up but loading its model: try another, or wait.
    Loading,
    /// Failed or skipped; the next upstream is tried.
    Failed(Error, AttemptOutcome),
}

/// Reads a key file with the rules of the server's key file (mode 600), holding one key.
fn read_key(path: &std::path::Path, key: &str) -> Result<String> {
    let text = crate::config::read_secret_file(path, key)?;
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    match lines.as_slice() {
        [k] if k.bytes().all(|b| b.is_ascii_graphic()) => Ok(k.to_string()),
        [_] => Err(Error::config(
            key,
            "the key has characters a header cannot carry",
        )),
        [] => Err(Error::config(key, "the file holds no key")),
        _ => Err(Error::config(key, "the file must hold exactly one key")),
    }
}

/// The message of an OpenAI-style error body, cut to 200 characters; never the raw body.
pub(crate) fn error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let e = v.get("error")?;
    let m = e
        .get("message")
        .and_then(Value::as_str)
        .or_else(|| e.as_str())?;
    Some(m.chars().take(200).collect())
}

fn is_loading(status: u16, body: &[u8]) -> bool {
    status == 503
        && error_message(body)
            .map(|m| m.to_ascii_lowercase().contains("loading"))
            .unwrap_or(false)
}

/// `Retry-After` in seconds (the HTTP-date form is not used by model servers).
fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "the request failed"
    };
    // reqwest's own message can carry the URL; the cause below it does not.
    let mut cause = String::new();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        cause = s.to_string();
        src = s.source();
    }
    if cause.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {cause}")
    }
}

impl Upstream {
    /// An upstream from its settings, with its breaker `llm.<name>` in `breakers`.
    pub fn new(
        settings: UpstreamSettings,
        breakers: &BreakerRegistry,
        breaker: &BreakerConfig,
        index: usize,
    ) -> Result<Self> {
        let api_key = settings
            .api_key_file
            .as_deref()
            .map(|p| read_key(p, &format!("llm.upstreams[{index}].api_key_file")))
            .transpose()?;
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout())
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::internal("building an HTTP client", e))?;
        // Attempts go through `permit()`, so the breaker's call timeout never applies: the
        // upstream's own deadlines do.
        let breaker = breakers.get_or_create(&format!("llm.{}", settings.name), breaker)?;
        Ok(Self {
            slots: Arc::new(Semaphore::new(settings.max_concurrent)),
            settings,
            client,
            api_key,
            breaker,
            readiness: AtomicU8::new(Readiness::Unknown.as_u8()),
            last_error: Mutex::new(None),
        })
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.settings.base_url.trim_end_matches('/'))
    }

    fn post(&self, path: &str, body: &Map<String, Value>) -> reqwest::RequestBuilder {
        let mut rb = self.client.post(self.url(path)).json(body);
        if let Some(k) = &self.api_key {
            rb = rb.bearer_auth(k);
        }
        rb
    }

    /// Its health for `/health`.
    pub fn health(&self) -> UpstreamHealth {
        UpstreamHealth {
            name: self.settings.name.clone(),
            readiness: Readiness::from_u8(self.readiness.load(Ordering::Relaxed)),
            breaker: self.breaker.state(),
            in_flight: self.settings.max_concurrent - self.slots.available_permits(),
            last_error: self.last_error.lock().clone(),
        }
    }

    fn set_readiness(&self, r: Readiness, error: Option<String>) {
        self.readiness.store(r.as_u8(), Ordering::Relaxed);
        *self.last_error.lock() = error;
    }

    /// One probe of `GET {base_url}/models`, through the breaker so that an upstream that came
    /// back closes its breaker without waiting for client traffic. Skipped while it is open.
    pub async fn probe(&self) {
        let Ok(permit) = self.breaker.permit() else {
            return;
        };
        let mut rb = self.client.get(self.url("models"));
        if let Some(k) = &self.api_key {
            rb = rb.bearer_auth(k);
        }
        let result = tokio::time::timeout(self.settings.first_token_timeout(), async {
            let r = rb.send().await?;
            let status = r.status().as_u16();
            let body = r.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        })
        .await;
        match result {
            Ok(Ok((200..=299, _))) => {
                permit.success();
                self.set_readiness(Readiness::Ready, None);
            }
            Ok(Ok((status, body))) if is_loading(status, &body) => {
                permit.ignore();
                self.set_readiness(Readiness::Loading, None);
            }
            Ok(Ok((status, _))) => {
                let e = Error::Upstream(format!("{} answered {status}", self.name()));
                permit.failure(&e);
                self.set_readiness(Readiness::Down, Some(format!("answered {status}")));
            }
            Ok(Err(e)) => {
                let msg = describe(&e);
                permit.failure(&Error::Upstream(msg.clone()));
                self.set_readiness(Readiness::Down, Some(msg));
            }
            Err(_) => {
                permit.failure(&Error::Upstream("probe timed out".into()));
                self.set_readiness(Readiness::Down, Some("timed out".into()));
            }
        }
    }

    /// One attempt: sends `body` to `path` and waits for the first token, within the
    /// first-token deadline. A 429 with a short enough `Retry-After` is waited out once.
    pub(crate) async fn attempt(
        &self,
        path: &str,
        body: &Map<String, Value>,
        stream: bool,
        max_retry_after: Duration,
    ) -> Attempt {
        let permit = match self.breaker.permit() {
            Ok(p) => p,
            Err(e) => return Attempt::Failed(e, AttemptOutcome::BreakerOpen),
        };
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            permit.ignore();
            return Attempt::Failed(
                Error::Overloaded(format!(
                    "upstream {:?} has {} requests in flight",
                    self.name(),
                    self.settings.max_concurrent
                )),
                AttemptOutcome::Full,
            );
        };
        let name = self.name();
        let deadline = Instant::now() + self.settings.first_token_timeout();
        let timeout = || Error::Timeout {
            what: format!("the first token from upstream {name:?}"),
            after: self.settings.first_token_timeout(),
        };
        let mut waited_429 = false;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let sent = tokio::time::timeout(remaining, self.post(path, body).send()).await;
            let resp = match sent {
                Err(_) => {
                    let e = timeout();
                    permit.failure(&e);
                    return Attempt::Failed(e, AttemptOutcome::Timeout);
                }
                Ok(Err(e)) => {
                    let outcome = if e.is_connect() {
                        AttemptOutcome::ConnectError
                    } else {
                        AttemptOutcome::ServerError
                    };
                    let e = Error::Upstream(format!("{name}: {}", describe(&e)));
                    permit.failure(&e);
                    return Attempt::Failed(e, outcome);
                }
                Ok(Ok(r)) => r,
            };
            let status = resp.status().as_u16();
            if (200..300).contains(&status) {
                return match self.first_token(resp, stream, deadline).await {
                    Ok(response) => {
                        permit.success();
                        Attempt::Committed(Box::new(Committed {
                            response,
                            first_token: Instant::now(),
                            slot,
                        }))
                    }
                    Err((e, outcome)) => {
                        permit.failure(&e);
                        Attempt::Failed(e, outcome)
                    }
                };
            }
            let wait = retry_after(resp.headers());
            let remaining = deadline.saturating_duration_since(Instant::now());
            let body = match tokio::time::timeout(remaining, read_limited(resp)).await {
                Ok(Ok(b)) => b,
                Ok(Err(_)) | Err(_) => Vec::new(),
            };
            let message = error_message(&body);
            let said = message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            match status {
                429 => {
                    // No Retry-After: one short pause before the one retry.
                    let wait_for = wait.unwrap_or(Duration::from_millis(200));
                    if !waited_429
                        && wait_for <= max_retry_after
                        && Instant::now() + wait_for < deadline
                    {
                        waited_429 = true;
                        tokio::time::sleep(wait_for).await;
                        continue;
                    }
                    permit.ignore();
                    return Attempt::Failed(
                        Error::Overloaded(format!("upstream {name:?} is rate limited{said}")),
                        AttemptOutcome::RateLimited,
                    );
                }
                _ if is_loading(status, &body) => {
                    permit.ignore();
                    self.set_readiness(Readiness::Loading, None);
                    return Attempt::Loading;
                }
                400 | 413 | 422 => {
                    permit.ignore();
                    return Attempt::Rejected(Error::invalid(format!(
                        "the model server refused the request ({status}){said}"
                    )));
                }
                _ => {
                    let e = Error::Upstream(format!("{name} answered {status}{said}"));
                    permit.failure(&e);
                    return Attempt::Failed(e, AttemptOutcome::ServerError);
                }
            }
        }
    }

    /// Reads up to the first token: the whole body when not streaming, else the first event.
    async fn first_token(
        &self,
        resp: reqwest::Response,
        stream: bool,
        deadline: Instant,
    ) -> std::result::Result<Reply, (Error, AttemptOutcome)> {
        let name = self.name();
        let timeout = || {
            (
                Error::Timeout {
                    what: format!("the first token from upstream {name:?}"),
                    after: self.settings.first_token_timeout(),
                },
                AttemptOutcome::Timeout,
            )
        };
        let malformed = |what: &str| {
            (
                Error::Upstream(format!("{name}: {what}")),
                AttemptOutcome::Malformed,
            )
        };
        let status = resp.status().as_u16();
        let event_stream = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let remaining = deadline.saturating_duration_since(Instant::now());
        if !stream || !event_stream {
            let body = match tokio::time::timeout(remaining, read_limited(resp)).await {
                Err(_) => return Err(timeout()),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(b)) => b,
            };
            let body: Value =
                serde_json::from_slice(&body).map_err(|_| malformed("the answer is not JSON"))?;
            if !body.is_object() || body.get("error").is_some() {
                let m = error_message(&serde_json::to_vec(&body).unwrap_or_default())
                    .unwrap_or_else(|| "the answer is not a completion".into());
                return Err(malformed(&m));
            }
            if stream {
                return Err(malformed(
                    "asked to stream, the upstream answered with JSON",
                ));
            }
            return Ok(Reply::Full { status, body });
        }
        let mut reader = SseReader::new(MAX_ANSWER_BYTES);
        let mut rest: ByteStream = Box::pin(resp.bytes_stream());
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let chunk = match tokio::time::timeout(remaining, rest.next()).await {
                Err(_) => return Err(timeout()),
                Ok(None) => return Err(malformed("the stream ended before its first event")),
                Ok(Some(Err(e))) => {
                    return Err((
                        Error::Upstream(format!("{name}: {}", describe(&e))),
                        AttemptOutcome::ServerError,
                    ))
                }
                Ok(Some(Ok(c))) => c,
            };
            let events = reader.push(&chunk).map_err(|e| malformed(&e.to_string()))?;
            let Some(first) = events.first() else {
                continue;
            };
            if first != "[DONE]" {
                let v: Value = serde_json::from_str(first)
                    .map_err(|_| malformed("a stream event is not JSON"))?;
                if let Some(e) = v.get("error") {
                    let m = e
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("an error event");
                    return Err(malformed(&m.chars().take(200).collect::<String>()));
                }
            }
            return Ok(Reply::Stream {
                reader,
                first: events,
                rest,
            });
        }
    }
}

/// Reads a body of at most [`MAX_ANSWER_BYTES`].
async fn read_limited(
    resp: reqwest::Response,
) -> std::result::Result<Vec<u8>, (Error, AttemptOutcome)> {
    let mut out = Vec::new();
    let mut s = resp.bytes_stream();
    while let Some(c) = s.next().await {
        let c = c.map_err(|e| (Error::Upstream(describe(&e)), AttemptOutcome::ServerError))?;
        if out.len() + c.len() > MAX_ANSWER_BYTES {
            return Err((
                Error::Upstream(format!(
                    "the answer is larger than {MAX_ANSWER_BYTES} bytes"
                )),
                AttemptOutcome::Malformed,
            ));
        }
        out.extend_from_slice(&c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_read_and_cut() {
        assert_eq!(
            error_message(br#"{"error": {"message": "Loading model", "code": 503}}"#).unwrap(),
            "Loading model"
        );
        assert_eq!(error_message(br#"{"error": "plain"}"#).unwrap(), "plain");
        assert_eq!(error_message(b"<html>"), None);
        let long = format!(r#"{{"error": {{"message": "{}"}}}}"#, "x".repeat(500));
        assert_eq!(error_message(long.as_bytes()).unwrap().len(), 200);
        assert!(is_loading(
            503,
            br#"{"error": {"message": "Loading model"}}"#
        ));
        assert!(!is_loading(
            500,
            br#"{"error": {"message": "Loading model"}}"#
        ));
        assert!(!is_loading(503, b"busy"));
    }

    #[test]
    fn key_files_follow_the_server_rules() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, "# remote\nsk-0123456789\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_key(&p, "k")
            .unwrap_err()
            .to_string()
            .contains("chmod 600"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_key(&p, "k").unwrap(), "sk-0123456789");
        std::fs::write(&p, "a\nb\n").unwrap();
        assert!(read_key(&p, "k").is_err());
    }
}
