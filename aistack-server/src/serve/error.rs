//! The one place where errors become HTTP responses: each core [`ErrorKind`] maps to a status,
//! and every error body has the shape `{"error": {"code", "message", "error_id"}}`.

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
    /// A stable snake_case code: `invalid_input`, `not_found`, `conflict`, `unauthorized`,
    /// `payload_too_large`, `unsupported_media_type`, `method_not_allowed`, `overloaded`,
    /// `unavailable`, `timeout` or `internal`.
    pub code: String,
    /// A human-readable explanation; never a stack trace or a backend's own message.
    pub message: String,
    /// A unique id of this error, also logged with its details.
    pub error_id: String,
}

/// An error on its way to becoming a response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// The full source chain, for the log only.
    detail: Option<String>,
}

/// Seconds a client is asked to wait after a 429 or a 503.
const RETRY_AFTER_SECS: &str = "1";

impl ApiError {
    /// An error with an explicit status, code and message (HTTP-level failures).
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            detail: None,
        }
    }

    /// A 400 `invalid_input`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    /// The 401 every authentication failure gets, whatever the reason.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required (Authorization: Bearer <key>)",
        )
    }

    /// A 404 for a path that no route serves.
    pub fn no_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    }

    /// A 429: too many requests at once.
    pub fn overloaded() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "overloaded",
            "the server is handling as many requests as it allows; retry shortly",
        )
    }

    /// A 503 for a request that ran past the server's request deadline.
    pub fn request_timeout() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request did not finish within the server's request timeout",
        )
    }
}

/// The table: core error kind → status, code, and whether the message may be shown.
fn classify(kind: ErrorKind) -> (StatusCode, &'static str, bool) {
    match kind {
        ErrorKind::InvalidInput => (StatusCode::BAD_REQUEST, "invalid_input", true),
        ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found", true),
        ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict", true),
        ErrorKind::Overloaded => (StatusCode::TOO_MANY_REQUESTS, "overloaded", true),
        ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", true),
        ErrorKind::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout", true),
        ErrorKind::Config | ErrorKind::Internal => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal", false)
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let (status, code, shown) = classify(e.kind());
        let message = if shown {
            // The top-level message only: sources may carry backend text.
            e.to_string()
        } else {
            "internal error; the server log has the details under this error_id".to_string()
        };
        // Details (the whole source chain) go to the log, keyed by the error id the body carries.
        Self {
            detail: Some(e.chain()),
            ..Self::new(status, code, message)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error_id = uuid::Uuid::new_v4().simple().to_string();
        let detail = self.detail;
        if self.status.is_server_error() {
            tracing::error!(
                error_id = %error_id,
                status = self.status.as_u16(),
                code = self.code,
                detail = detail.as_deref().unwrap_or(&self.message),
                "request failed"
            );
        } else {
            tracing::info!(
                error_id = %error_id,
                status = self.status.as_u16(),
                code = self.code,
                message = %self.message,
                "request refused"
            );
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                error_id,
            },
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        let h = resp.headers_mut();
        match self.status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                h.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECS),
                );
            }
            StatusCode::UNAUTHORIZED => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"aistack\""),
                );
            }
            _ => {}
        }
        resp
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON, sent with Content-Type: application/json",
            ),
            JsonRejection::JsonSyntaxError(e) => {
                Self::invalid(format!("the body is not valid JSON: {}", inner_message(&e)))
            }
            JsonRejection::JsonDataError(e) => Self::invalid(format!(
                "the body does not have the expected shape: {}",
                inner_message(&e)
            )),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => too_large(),
            other => Self::invalid(format!("the body cannot be read: {}", other.body_text())),
        }
    }
}

/// The 413 for a body over `server.max_body_bytes`.
pub fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the request body is larger than the server accepts (server.max_body_bytes)",
    )
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
        ];
        for (e, status, code) in cases {
            let api = ApiError::from(e);
            assert_eq!(api.status.as_u16(), status);
            assert_eq!(api.code, code);
            if status == 500 {
                assert!(!api.message.contains("secret"), "{}", api.message);
            }
        }
    }
}
