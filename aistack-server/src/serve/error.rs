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
}

impl ApiError {
    /// An error of `kind` (HTTP-level failures) with the table's status and retry hint.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after: kind.retry_hint(),
            detail: None,
        }
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
            e.to_string()
        } else {
            "internal error; the server log has the details under this error_id".to_string()
        };
        // Details (the whole source chain) go to the log, keyed by the error id the body carries.
        Self {
            kind: kind.public(),
            message,
            retry_after: e.retry_after(),
            detail: Some(e.chain()),
        }
    }
}

impl ApiError {
    /// Logs the error under a new error id and returns its body and retry hint: what an HTTP
    /// response and an MCP tool error both carry.
    pub fn into_body(self) -> (ErrorBody, Option<Duration>) {
        let error_id = uuid::Uuid::new_v4().simple().to_string();
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(
                error_id = %error_id,
                status = status.as_u16(),
                code = self.kind.code(),
                detail = self.detail.as_deref().unwrap_or(&self.message),
                "request failed"
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

/// Whole seconds, rounded up, at least 1: a client must not come back before the time is up.
pub fn retry_after_secs(after: Duration) -> u64 {
    after.as_millis().div_ceil(1000).max(1) as u64
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (body, retry_after) = self.into_body();
        let mut resp = (status, axum::Json(body)).into_response();
        let h = resp.headers_mut();
        if let Some(after) = retry_after {
            h.insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(after)),
            );
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
    fn retry_after_comes_from_the_breaker_when_it_knows() {
        let open = ApiError::from(Error::CircuitOpen {
            name: "store.pgvector".into(),
            retry_after: Some(Duration::from_millis(7_200)),
        });
        let resp = open.into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "8");
        let busy = ApiError::overloaded().into_response();
        assert_eq!(busy.headers()[header::RETRY_AFTER], "1");
        let bad = ApiError::invalid("x").into_response();
        assert!(bad.headers().get(header::RETRY_AFTER).is_none());
    }
}
