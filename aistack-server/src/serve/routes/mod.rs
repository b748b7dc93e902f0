//! The API's handlers, one module per API family; a new family (chat, MCP) is one more module.
//! The extractors here turn every rejection into the one JSON error shape.

pub mod chat;
pub mod collections;
pub mod openai;
pub mod ops;
pub mod tei;

use axum::extract::{FromRequest, FromRequestParts};

use super::error::ApiError;

/// A JSON body whose every rejection (syntax, shape, size, content type) is a JSON error.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// A path parameter whose rejection is a JSON error.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// What a handler returns: its response or an [`ApiError`].
pub type ApiResult<T> = std::result::Result<T, ApiError>;
