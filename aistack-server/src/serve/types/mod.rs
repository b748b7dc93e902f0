//! The request and response shapes of every API family, apart from the handlers (as
//! text-embeddings-inference keeps `http/types.rs`): what the OpenAPI document describes.

pub mod chat;
pub mod collections;
pub mod openai;
pub mod ops;
pub mod tei;

use serde::Deserialize;
use utoipa::ToSchema;

use super::error::ApiError;

type Result<T> = std::result::Result<T, ApiError>;

/// One string, a list of strings, or (OpenAI only) token ids.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Inputs {
    /// A single text.
    One(String),
    /// Several texts, embedded in order.
    Many(Vec<String>),
    /// One text as `cl100k_base` token ids (what OpenAI clients such as LangChain send).
    Tokens(Vec<u32>),
    /// Several texts as `cl100k_base` token ids.
    TokenLists(Vec<Vec<u32>>),
    /// Anything else: refused with a clear 400.
    #[schema(value_type = Object)]
    Other(serde::de::IgnoredAny),
}

impl Inputs {
    /// The texts of a request; token ids are refused (TEI's `/embed` takes text only).
    pub fn into_texts(self, field: &str) -> Result<Vec<String>> {
        match self {
            Inputs::One(s) => Ok(vec![s]),
            Inputs::Many(v) => Ok(v),
            _ => Err(ApiError::invalid(format!(
                "`{field}` must be a string or an array of strings"
            ))),
        }
    }

    /// The texts of an OpenAI request: token ids are decoded with `cl100k_base`, the encoding
    /// OpenAI clients tokenize with for models tiktoken does not know.
    pub async fn into_openai_texts(self) -> Result<Vec<String>> {
        let lists =
            match self {
                Inputs::One(s) => return Ok(vec![s]),
                Inputs::Many(v) => return Ok(v),
                Inputs::Tokens(t) => vec![t],
                Inputs::TokenLists(l) => l,
                Inputs::Other(_) => return Err(ApiError::invalid(
                    "`input` must be a string, an array of strings, an array of token ids or an \
                     array of arrays of token ids",
                )),
            };
        // The first use builds the 100k-entry table: off the async workers.
        let decoded = tokio::task::spawn_blocking(move || {
            let bpe = tiktoken_rs::cl100k_base_singleton();
            lists
                .into_iter()
                .enumerate()
                .map(|(i, tokens)| {
                    bpe.decode(tokens).map_err(|_| {
                        format!(
                            "input {i}: the token ids are not valid `cl100k_base` tokens of UTF-8 text"
                        )
                    })
                })
                .collect::<std::result::Result<Vec<String>, String>>()
        })
        .await
        .map_err(|e| aistack_core::Error::internal("the token decoding task failed", e))?;
        decoded.map_err(ApiError::invalid)
    }
}
