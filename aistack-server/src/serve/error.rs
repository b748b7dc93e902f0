//! The one place where errors become HTTP responses. Status, code and `Retry-After` come from
//! the core's table ([`ErrorKind`]); every error body has the shape
//! `{"error": {"code", "message", "error_id"}}`.

use std::time::Duration;

use aistack_core::{Error, ErrorKind};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The JSON body of every error response.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error itself.
    pub error: ErrorDetail,
}

/// What went wrong, in a stable shape.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable snake_case code, one of the table's.
    pub code: ErrorKind,
    /// A human-readable explanation; never a stack trace or a backend's own message.
    pub message: String,
    /// A unique id of this error, also logged with its details.
    pub error_id: String,
}

/// An error on its way to becoming a response.
#[derive(Debug)]
pub struct ApiError {
    kind: ErrorKind,
    message: String,
    /// When the client may retry, if it should.
    retry_after: Option<Duration>,
    /// The full source chain, for the log only.
    detail: Option<String>,
    /// Whether the response must close the connection (the request's body may be unread).
    close: bool,
}

impl ApiError {
    /// An error of `kind` (HTTP-level failures) with the table's status and retry hint.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: bound_echoes(&message.into()),
            retry_after: kind.retry_hint(),
            detail: None,
            close: false,
        }
    }

    /// The same error, answered with `Connection: close`: for a request refused before (or
    /// while) its body was read, so a client never reuses a connection the server drops.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// A 400 `invalid_input`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    /// The 401 every authentication failure gets, whatever the reason.
    pub fn unauthorized() -> Self {
        Self::new(
            ErrorKind::Unauthorized,
            "a valid API key is required (Authorization: Bearer <key>)",
        )
    }

    /// A 404 for a path that no route serves.
    pub fn no_route() -> Self {
        Self::new(ErrorKind::NotFound, "no such route")
    }

    /// A 405 for a route that does not take the request's method.
    pub fn wrong_method() -> Self {
        Self::new(
            ErrorKind::MethodNotAllowed,
            "this route does not accept that method",
        )
    }

    /// A 429: too many requests at once.
    pub fn overloaded() -> Self {
        Self::new(
            ErrorKind::Overloaded,
            "the server is handling as many requests as it allows; retry shortly",
        )
    }

    /// A 504 for a request that ran past the server's request deadline.
    pub fn request_timeout() -> Self {
        Self::new(
            ErrorKind::Timeout,
            "the request did not finish within the server's request timeout",
        )
    }

    /// The 413 for a body over `server.max_body_bytes`.
    pub fn too_large() -> Self {
        Self::new(
            ErrorKind::PayloadTooLarge,
            "the request body is larger than the server accepts (server.max_body_bytes)",
        )
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The code the client sees.
    pub fn code(&self) -> ErrorKind {
        self.kind
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let kind = e.kind();
        let message = if kind.shows_message() {
            // The top-level message only: sources may carry backend text.
            bound_echoes(&e.public_message())
        } else {
            "internal error; the server log has the details under this error_id".to_string()
        };
        // Details (the whole source chain) go to the log, keyed by the error id the body carries.
        Self {
            kind: kind.public(),
            message,
            retry_after: e.retry_after(),
            detail: Some(e.chain()),
            close: false,
        }
    }
}

impl ApiError {
    /// Logs the error under a new error id and returns its body and retry hint: what an HTTP
    /// response and an MCP tool error both carry.
    pub fn into_body(self) -> (ErrorBody, Option<Duration>) {
        let error_id = uuid::Uuid::new_v4().simple().to_string();
        let status = self.status();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(
                error_id = %error_id,
                status = status.as_u16(),
                code = self.kind.code(),
                detail = self.detail.as_deref().unwrap_or(&self.message),
                "request failed"
            );
        } else if status.is_server_error() {
            // A dependency not ready, an upstream down, a deadline: expected states of a
            // server, worth a warning, not an error.
            tracing::warn!(
                error_id = %error_id,
                status = status.as_u16(),
                code = self.kind.code(),
                message = %self.message,
                detail = self.detail.as_deref().unwrap_or(&self.message),
                "request not served"
            );
        } else {
            tracing::info!(
                error_id = %error_id,
                status = status.as_u16(),
                code = self.kind.code(),
                message = %self.message,
                "request refused"
            );
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.kind,
                message: self.message,
                error_id,
            },
        };
        (body, self.retry_after)
    }
}

/// Most characters of a client's input an error message repeats.
pub const MAX_ECHO_CHARS: usize = 64;
/// Most characters of any error message.
pub const MAX_MESSAGE_CHARS: usize = 1024;

/// The message with every quoted part (`"..."` as `{:?}` writes it, or `` `...` `` as serde
/// writes it) and every unbroken run of other characters (a JSON path, say) cut to
/// [`MAX_ECHO_CHARS`], and the whole to [`MAX_MESSAGE_CHARS`]: an error names what was wrong
/// without sending a client's huge input back.
pub fn bound_echoes(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE_CHARS + 8));
    let mut chars = message.chars();
    // Characters in a row outside quotes without a space, and whether the run was cut.
    let mut run = 0;
    let mut cut = false;
    while let Some(c) = chars.next() {
        let quote = c == '"' || c == '`';
        if quote || c.is_whitespace() {
            if cut {
                out.push('…');
            }
            run = 0;
            cut = false;
            out.push(c);
            if quote {
                copy_quoted(&mut chars, c, &mut out);
            }
            continue;
        }
        run += 1;
        if run <= MAX_ECHO_CHARS {
            out.push(c);
        } else {
            cut = true;
        }
    }
    if cut {
        out.push('…');
    }
    if out.chars().count() > MAX_MESSAGE_CHARS {
        out = out.chars().take(MAX_MESSAGE_CHARS - 1).collect();
        out.push('…');
    }
    out
}

/// Copies a quoted part up to its closing `quote` (kept), cut to [`MAX_ECHO_CHARS`]; a `"`
/// escaped as `\"` inside a `{:?}` string does not close it.
fn copy_quoted(chars: &mut std::str::Chars<'_>, quote: char, out: &mut String) {
    let mut kept = 0;
    let mut cut = false;
    let mut escaped = false;
    for q in chars.by_ref() {
        if q == quote && !escaped {
            if cut {
                out.push('…');
            }
            out.push(q);
            return;
        }
        escaped = quote == '"' && q == '\\' && !escaped;
        if kept < MAX_ECHO_CHARS {
            out.push(q);
            kept += 1;
        } else {
            cut = true;
        }
    }
    if cut {
        out.push('…');
    }
}

/// `Retry-After` in milliseconds (`retry-after-ms`), beside the standard header in seconds.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

/// Whole seconds, rounded up, at least 1: a client must not come back before the time is up.
pub fn retry_after_secs(after: Duration) -> u64 {
    after.as_millis().div_ceil(1000).max(1) as u64
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let close = self.close;
        let (body, retry_after) = self.into_body();
        let mut resp = (status, axum::Json(body)).into_response();
        let h = resp.headers_mut();
        if let Some(after) = retry_after {
            h.insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(after)),
            );
            // The same in milliseconds, as OpenAI's and Azure's clients read it first: a full
            // queue that drains in 300 ms need not keep a client away for a whole second.
            h.insert(
                RETRY_AFTER_MS,
                HeaderValue::from(after.as_millis().max(1) as u64),
            );
        }
        if close {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"aistack\""),
            );
        }
        resp
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::MissingJsonContentType(_) => Self::new(
                ErrorKind::UnsupportedMediaType,
                "the body must be JSON, sent with Content-Type: application/json",
            ),
            JsonRejection::JsonSyntaxError(e) => {
                Self::invalid(format!("the body is not valid JSON: {}", inner_message(&e)))
            }
            JsonRejection::JsonDataError(e) => Self::invalid(format!(
                "the body does not have the expected shape: {}",
                inner_message(&e)
            )),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::too_large(),
            other => Self::invalid(format!("the body cannot be read: {}", other.body_text())),
        }
    }
}

/// serde's own message (which names the field and position), without axum's prefix.
fn inner_message(e: &dyn std::error::Error) -> String {
    let mut cur: &dyn std::error::Error = e;
    while let Some(s) = cur.source() {
        cur = s;
    }
    cur.to_string()
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::invalid(format!("bad path parameter: {}", r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::invalid(format!("bad query string: {}", r.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_status_and_internal_details_stay_hidden() {
        let cases = [
            (Error::invalid("x"), 400, "invalid_input"),
            (
                Error::NotFound {
                    what: "collection \"a\"".into(),
                },
                404,
                "not_found",
            ),
            (Error::Conflict("c".into()), 409, "conflict"),
            (Error::Overloaded("busy".into()), 429, "overloaded"),
            (Error::unavailable("model loading"), 503, "unavailable"),
            (
                Error::CircuitOpen {
                    name: "store".into(),
                    retry_after: None,
                },
                503,
                "unavailable",
            ),
            (
                Error::Timeout {
                    what: "embedding".into(),
                    after: std::time::Duration::from_secs(1),
                },
                504,
                "timeout",
            ),
            (
                Error::internal("secret backend text", std::io::Error::other("boom")),
                500,
                "internal",
            ),
            (Error::config("k", "secret"), 500, "internal"),
            (
                Error::io(
                    "/secret/path/log",
                    std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
                ),
                500,
                "internal",
            ),
        ];
        for (e, status, code) in cases {
            let api = ApiError::from(e);
            assert_eq!(api.status().as_u16(), status);
            assert_eq!(api.code().code(), code);
            if status == 500 {
                assert!(!api.message.contains("secret"), "{}", api.message);
            }
        }
    }

    #[test]
    fn errors_echo_at_most_64_characters_of_any_input() {
        let huge = "m".repeat(65_536);
        let e = ApiError::new(
            ErrorKind::NotFound,
            format!("model {huge:?} is not served here; this server serves \"mini\""),
        );
        assert!(e.message.len() < 200, "{}", e.message.len());
        assert!(e.message.contains(&"m".repeat(64)));
        assert!(!e.message.contains(&"m".repeat(65)));
        assert!(e.message.ends_with("serves \"mini\""), "{}", e.message);
        let name = "n".repeat(300);
        let e = ApiError::from(Error::invalid(format!(
            "unknown variant `{name}`, expected one of `vector`, `lexical`"
        )));
        assert!(!e.message.contains(&"n".repeat(65)), "{}", e.message);
        assert!(
            e.message.contains("`, expected one of `vector`"),
            "{}",
            e.message
        );
        // Escaped quotes inside a quoted part do not end it.
        let tricky = format!("{:?}", format!("a\"b{}", "x".repeat(100)));
        let e = ApiError::invalid(format!("bad id {tricky}; fix it"));
        assert!(e.message.ends_with("…\"; fix it"), "{}", e.message);
        // Unquoted and unterminated input is bounded as a whole.
        let e = ApiError::invalid(format!("bad \"{}", "y".repeat(5000)));
        assert!(e.message.chars().count() <= 80, "{}", e.message);
        let e = ApiError::invalid(format!("shape: {}: unknown field", "z".repeat(5000)));
        assert_eq!(
            e.message,
            format!("shape: {}… unknown field", "z".repeat(64))
        );
        let words = "word ".repeat(1000);
        let e = ApiError::invalid(words);
        assert_eq!(e.message.chars().count(), MAX_MESSAGE_CHARS);
        // Short messages are unchanged.
        assert_eq!(
            ApiError::invalid("k must be 1 to 1000, got \"0\"").message,
            "k must be 1 to 1000, got \"0\""
        );
    }

    #[test]
    fn retry_after_comes_from_the_breaker_when_it_knows() {
        let open = ApiError::from(Error::CircuitOpen {
            name: "store.pgvector".into(),
            retry_after: Some(Duration::from_millis(7_200)),
        });
        let resp = open.into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "8");
        assert_eq!(resp.headers()[RETRY_AFTER_MS], "7200");
        let busy = ApiError::overloaded().into_response();
        assert_eq!(busy.headers()[header::RETRY_AFTER], "1");
        let full = ApiError::from(Error::QueueFull {
            wait: Duration::from_millis(340),
            bound: Duration::from_millis(250),
        })
        .into_response();
        assert_eq!(full.status(), StatusCode::TOO_MANY_REQUESTS);
        // The expected wait plus the bound: when the queue a retry finds has room again.
        assert_eq!(full.headers()[header::RETRY_AFTER], "1");
        assert_eq!(full.headers()[RETRY_AFTER_MS], "590");
        let bad = ApiError::invalid("x").into_response();
        assert!(bad.headers().get(header::RETRY_AFTER).is_none());
    }
}
