//! The one error type of aistack-core, with a stable [`ErrorKind`] that the server maps to HTTP
//! statuses and the Python bindings map to exception classes.

use std::time::Duration;

/// A boxed error kept as the source of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The result type used throughout aistack-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The one table of error kinds: each row is a kind with its stable code, the HTTP status the
/// server answers with, the `Retry-After` hint in seconds (`0`: none), the Python exception class
/// and whether the message may be shown to a caller. The server's HTTP mapping and the Python
/// bindings both read it; nothing else spells a code.
macro_rules! error_kinds {
    ($($(#[doc = $doc:literal])* $kind:ident => $code:literal, $status:literal, $retry:literal,
       $py:literal, $shown:literal;)*) => {
        /// The stable category of an [`Error`]: what callers branch on, and the `code` of every
        /// API error body. Rows after `Internal` are raised by the HTTP layer only.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize,
                 serde::Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorKind {
            $($(#[doc = $doc])* $kind,)*
        }

        impl ErrorKind {
            /// Every kind, in table order.
            pub const ALL: &'static [ErrorKind] = &[$(ErrorKind::$kind),*];

            /// A short snake_case code, stable across releases, for logs and API error bodies.
            pub fn code(self) -> &'static str {
                match self { $(ErrorKind::$kind => $code,)* }
            }

            /// The HTTP status an error of this kind answers with.
            pub fn http_status(self) -> u16 {
                match self { $(ErrorKind::$kind => $status,)* }
            }

            /// How long a client should wait before retrying, when it should retry at all.
            pub fn retry_hint(self) -> Option<Duration> {
                match self { $(ErrorKind::$kind => ($retry > 0).then(|| Duration::from_secs($retry)),)* }
            }

            /// The class in `aistack._errors` that Python callers catch.
            pub fn python_class(self) -> &'static str {
                match self { $(ErrorKind::$kind => $py,)* }
            }

            /// Whether the message may reach a caller; hidden ones answer as `internal`.
            pub fn shows_message(self) -> bool {
                match self { $(ErrorKind::$kind => $shown,)* }
            }
        }
    };
}

error_kinds! {
    /// The caller sent something that can never succeed as sent.
    InvalidInput => "invalid_input", 400, 0, "InvalidInput", true;
    /// A named thing (collection, document, model file) does not exist.
    NotFound => "not_found", 404, 0, "NotFound", true;
    /// The thing being created already exists with other settings.
    Conflict => "conflict", 409, 0, "Conflict", true;
    /// A dependency is not ready or not reachable (model loading, backend down, breaker open).
    Unavailable => "unavailable", 503, 1, "Unavailable", true;
    /// Admission is full; the caller should back off and retry.
    Overloaded => "overloaded", 429, 1, "Overloaded", true;
    /// The operation did not finish within its deadline.
    Timeout => "timeout", 504, 0, "Timeout", true;
    /// The store's disk is full or read-only: nothing of the write was kept; reads go on, and
    /// writes succeed again once space is freed.
    InsufficientStorage => "insufficient_storage", 507, 0, "InsufficientStorage", true;
    /// Every upstream model server of a chat route failed or answered with an error.
    UpstreamFailed => "upstream_failed", 502, 1, "Unavailable", true;
    /// The configuration is invalid (HTTP callers are told `internal`: the message is hidden).
    Config => "config", 500, 0, "ConfigError", false;
    /// A bug or an unexpected failure inside aistack or a backend.
    Internal => "internal", 500, 0, "AistackError", false;
    /// No valid API key came with the request (HTTP only).
    Unauthorized => "unauthorized", 401, 0, "AistackError", true;
    /// The request body is larger than the server accepts (HTTP only).
    PayloadTooLarge => "payload_too_large", 413, 0, "InvalidInput", true;
    /// The request body is not JSON (HTTP only).
    UnsupportedMediaType => "unsupported_media_type", 415, 0, "InvalidInput", true;
    /// The route does not accept the request's method (HTTP only).
    MethodNotAllowed => "method_not_allowed", 405, 0, "InvalidInput", true;
    /// The request names a host or comes from a browser origin the server does not accept
    /// (HTTP only: `/mcp`'s DNS-rebinding check).
    Forbidden => "forbidden", 403, 0, "AistackError", true;
    /// The client does not accept a content type the route answers with (HTTP only).
    NotAcceptable => "not_acceptable", 406, 0, "InvalidInput", true;
}

impl ErrorKind {
    /// The kind a caller is told: a kind whose message is hidden answers as `Internal`.
    pub fn public(self) -> ErrorKind {
        if self.shows_message() {
            self
        } else {
            ErrorKind::Internal
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// Every failure aistack-core reports. Sources are kept, never flattened into strings.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller's input was rejected; the message says which input and why.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// Something named does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `collection "docs"`.
        what: String,
    },

    /// Something being created already exists with other settings.
    #[error("conflict: {0}")]
    Conflict(String),

    /// A dependency is not ready or cannot be reached.
    #[error("unavailable: {reason}")]
    Unavailable {
        /// Why, in words safe to show a caller.
        reason: String,
        /// The underlying failure, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// A circuit breaker is open and rejected the call without trying it.
    #[error("circuit breaker '{name}' is open")]
    CircuitOpen {
        /// The breaker's registry name.
        name: String,
        /// How long until the breaker lets a trial call through, when it knows.
        retry_after: Option<Duration>,
    },

    /// Admission is full.
    #[error("overloaded: {0}")]
    Overloaded(String),

    /// A request queued now would wait longer than the bound: refused at once, to come back
    /// once the queue has drained.
    #[error("overloaded: the embedding queue holds about {} ms of work, more than the {} ms a request may wait (embed.max_queue_wait_ms)", wait.as_millis(), bound.as_millis())]
    QueueFull {
        /// The expected queueing time.
        wait: Duration,
        /// The configured bound.
        bound: Duration,
    },

    /// Bulk work (a large embeddings request, ingestion) that the queue could not finish before
    /// its deadline: refused at once rather than left to time out.
    #[error("overloaded: the embedding queue would finish this request in about {} ms, later than the {} ms it may take (80% of its deadline, embed.request_timeout_ms); retry in about {} ms", finish.as_millis(), deadline.as_millis(), retry.as_millis())]
    DeadlineFull {
        /// When the queue would have finished it, at the measured rate.
        finish: Duration,
        /// The longest a request of its kind may be queued and computed.
        deadline: Duration,
        /// When enough of the work ahead is done for it to fit, at the measured rate.
        retry: Duration,
    },

    /// The operation exceeded its deadline.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        what: String,
        /// The deadline that was exceeded.
        after: Duration,
    },

    /// An upstream model server failed (connection, 5xx, broken answer) or every upstream of a
    /// route did.
    #[error("upstream failed: {0}")]
    Upstream(String),

    /// A configuration key has a wrong value.
    #[error("invalid configuration: {key}: {reason}")]
    Config {
        /// The dotted key, e.g. `embed.max_batch_tokens`.
        key: String,
        /// Why the value is wrong.
        reason: String,
    },

    /// Loading or running a model failed.
    #[error("model error: {context}")]
    Model {
        /// What was being done.
        context: String,
        /// The underlying failure.
        #[source]
        source: Option<BoxError>,
    },

    /// A filesystem or OS operation failed.
    #[error("I/O error: {context}")]
    Io {
        /// What was being done, e.g. the path.
        context: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A bug or an unexpected failure.
    #[error("internal error: {context}")]
    Internal {
        /// What was being done.
        context: String,
        /// The underlying failure, if any.
        #[source]
        source: Option<BoxError>,
    },
}

impl Error {
    /// The stable category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidInput(_) => ErrorKind::InvalidInput,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::Unavailable { .. } | Error::CircuitOpen { .. } => ErrorKind::Unavailable,
            Error::Overloaded(_) | Error::QueueFull { .. } | Error::DeadlineFull { .. } => {
                ErrorKind::Overloaded
            }
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Upstream(_) => ErrorKind::UpstreamFailed,
            Error::Config { .. } => ErrorKind::Config,
            Error::Model { .. } | Error::Internal { .. } => ErrorKind::Internal,
            // A missing file is the server's problem, not a missing resource of the caller's:
            // never a 404 whose message names a server path.
            Error::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
                std::io::ErrorKind::StorageFull
                | std::io::ErrorKind::QuotaExceeded
                | std::io::ErrorKind::ReadOnlyFilesystem => ErrorKind::InsufficientStorage,
                std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::NotConnected
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::Interrupted => ErrorKind::Unavailable,
                _ => ErrorKind::Internal,
            },
        }
    }

    /// Whether trying the same call again later may succeed. An open breaker is not retried
    /// immediately: it would only be rejected again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::CircuitOpen { .. } => false,
            _ => matches!(
                self.kind(),
                ErrorKind::Unavailable
                    | ErrorKind::Overloaded
                    | ErrorKind::Timeout
                    | ErrorKind::UpstreamFailed
            ),
        }
    }

    /// How long a caller should wait before retrying: what an open breaker knows of its
    /// half-open time, the expected wait of a full queue, else the kind's hint from the table.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::CircuitOpen {
                retry_after: Some(d),
                ..
            } => Some(*d),
            // Under sustained overload admission keeps the queue near its bound, so the queue
            // a retry finds once the work ahead is done has refilled by about one bound: asking
            // for `wait + bound` halves the refusals that asking for `wait` gets.
            Error::QueueFull { wait, bound } => Some(*wait + *bound),
            Error::DeadlineFull { retry, .. } => Some(*retry),
            _ => self.kind().retry_hint(),
        }
    }

    /// Whether the error is the caller's fault; such errors never count against a backend's
    /// circuit breaker.
    pub fn is_caller_error(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::InvalidInput | ErrorKind::NotFound | ErrorKind::Conflict | ErrorKind::Config
        )
    }

    /// Builds an [`Error::InvalidInput`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidInput(msg.into())
    }

    /// Builds an [`Error::Unavailable`] without a source.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Error::Unavailable {
            reason: reason.into(),
            source: None,
        }
    }

    /// Builds an [`Error::Internal`] keeping `source`.
    pub fn internal(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Internal {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// Builds an [`Error::Model`] keeping `source`.
    pub fn model(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Model {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// Builds an [`Error::Io`] for `context` (usually a path) keeping `source`.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Builds an [`Error::Config`] for the dotted `key`.
    pub fn config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The message a caller of the HTTP API or an MCP tool may see: the error's own message,
    /// except a full or read-only disk, which says what happened without naming a server path.
    pub fn public_message(&self) -> String {
        match self {
            Error::Io { source, .. } if self.kind() == ErrorKind::InsufficientStorage => {
                let what = match source.kind() {
                    std::io::ErrorKind::ReadOnlyFilesystem => "the store's disk is read-only",
                    std::io::ErrorKind::QuotaExceeded => "the store's disk quota is exhausted",
                    _ => "the store's disk is full (no space left on device)",
                };
                format!(
                    "{what}: nothing of this write was kept; reads go on, and writes succeed again once space is freed"
                )
            }
            _ => self.to_string(),
        }
    }

    /// Whether the error says nothing about the backend being down: the caller's own errors,
    /// and a full disk (reads still work, so a breaker must not cut them off).
    pub fn spares_breaker(&self) -> bool {
        self.is_caller_error() || self.kind() == ErrorKind::InsufficientStorage
    }

    /// The message with every source appended (`a: b: c`), for logs. Never sent to API callers
    /// for internal errors.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut src = std::error::Error::source(self);
        while let Some(s) = src {
            out.push_str(": ");
            out.push_str(&s.to_string());
            src = s.source();
        }
        out
    }
}

/// Most characters of a caller's input an error message repeats.
pub const MAX_ECHO_CHARS: usize = 64;

/// `input` cut to [`MAX_ECHO_CHARS`] characters (with `…` when cut), for error messages.
pub fn clip(input: &str) -> String {
    let mut it = input.chars();
    let head: String = it.by_ref().take(MAX_ECHO_CHARS).collect();
    if it.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_retryability() {
        assert_eq!(Error::invalid("x").kind(), ErrorKind::InvalidInput);
        assert!(!Error::invalid("x").is_retryable());
        assert!(Error::invalid("x").is_caller_error());
        assert!(Error::unavailable("loading").is_retryable());
        assert!(Error::Overloaded("full".into()).is_retryable());
        let open = Error::CircuitOpen {
            name: "pg".into(),
            retry_after: Some(Duration::from_millis(2500)),
        };
        assert_eq!(open.kind(), ErrorKind::Unavailable);
        assert!(!open.is_retryable());
        assert_eq!(open.retry_after(), Some(Duration::from_millis(2500)));
        assert_eq!(
            Error::unavailable("loading").retry_after(),
            Some(Duration::from_secs(1))
        );
        assert_eq!(Error::invalid("x").retry_after(), None);
        let refused = Error::io(
            "connect",
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
        );
        assert_eq!(refused.kind(), ErrorKind::Unavailable);
        assert!(refused.is_retryable());
    }

    #[test]
    fn sources_are_kept() {
        let e = Error::io(
            "/data/x",
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied"),
        );
        let src = std::error::Error::source(&e).expect("source kept");
        assert_eq!(src.to_string(), "denied");
        assert_eq!(e.chain(), "I/O error: /data/x: denied");
        assert_eq!(e.kind().code(), "internal");
    }

    #[test]
    fn a_full_or_read_only_disk_is_507_and_names_no_path() {
        for (kind, words) in [
            (std::io::ErrorKind::StorageFull, "is full"),
            (std::io::ErrorKind::ReadOnlyFilesystem, "read-only"),
            (std::io::ErrorKind::QuotaExceeded, "quota"),
        ] {
            let e = Error::io(
                "appending to /srv/aistack/collections/x/log",
                std::io::Error::new(kind, "os error"),
            );
            assert_eq!(e.kind(), ErrorKind::InsufficientStorage);
            assert_eq!(e.kind().http_status(), 507);
            assert!(e.spares_breaker());
            assert!(!e.is_retryable());
            let m = e.public_message();
            assert!(m.contains(words) && !m.contains("/srv"), "{m}");
        }
        let other = Error::io("/srv/x", std::io::Error::other("boom"));
        assert_eq!(other.public_message(), other.to_string());
        assert!(!other.spares_breaker());
    }

    #[test]
    fn a_missing_file_is_internal_not_a_404() {
        let e = Error::io(
            "/srv/aistack/collections/x/log",
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        );
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert!(!e.kind().shows_message());
    }

    #[test]
    fn the_table_is_consistent() {
        let mut codes = std::collections::BTreeSet::new();
        for k in ErrorKind::ALL {
            assert!(codes.insert(k.code()), "duplicate code {}", k.code());
            // The serialized form (serde's and OpenAPI's snake_case of the name) is the code.
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::Value::from(k.code())
            );
            assert!((400..600).contains(&k.http_status()));
            if k.http_status() == 429 || k.http_status() == 503 {
                assert!(k.retry_hint().is_some(), "{k} answers without Retry-After");
            }
            if !k.shows_message() {
                assert_eq!(k.public(), ErrorKind::Internal);
            }
        }
        assert_eq!(ErrorKind::Config.public(), ErrorKind::Internal);
        assert_eq!(ErrorKind::NotFound.public(), ErrorKind::NotFound);
    }
}
