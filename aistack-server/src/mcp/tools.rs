//! The tools: their arguments (the HTTP API's request types, with the collection as one more
//! argument), their schemas (derived from those types), and each call run through the same
//! handler as its HTTP route, so limits, checks and errors are the API's.

use std::sync::{Arc, LazyLock};

use axum::extract::State;
use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::schema::{arguments_of, property_names, schema_of};
use crate::serve::error::ApiError;
use crate::serve::routes::{collections, openai, ApiJson, ApiPath};
use crate::serve::state::AppState;
use crate::serve::types::collections::{
    CollectionList, CollectionView, Deleted, IngestRequest, IngestResult, SearchBody, SearchResult,
};
use crate::serve::types::openai::{Embedding, EmbeddingsExtension, EmbeddingsRequest};
use crate::serve::types::Inputs;

/// `search`: a collection and the body of `POST /v1/collections/{name}/search`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SearchArgs {
    /// The collection to search.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    pub collection: String,
    /// The search: the fields of the HTTP search body.
    #[serde(flatten)]
    pub search: SearchBody,
}

/// `add_documents`: a collection and the body of `POST /v1/collections/{name}/documents`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AddDocumentsArgs {
    /// The collection to store into; created (cosine, the model's dimensions) if missing.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    pub collection: String,
    /// The documents: the fields of the HTTP ingest body.
    #[serde(flatten)]
    pub body: IngestRequest,
}

/// `delete_document`: the path of `DELETE /v1/collections/{name}/documents/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DeleteDocumentArgs {
    /// The collection.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    pub collection: String,
    /// The document's id (all its chunks go).
    #[schema(min_length = 1, max_length = 400)]
    pub id: String,
}

/// `describe_collection`: the path of `GET /v1/collections/{name}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CollectionArgs {
    /// The collection.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    pub collection: String,
}

/// `list_collections`: no arguments.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NoArgs {}

/// `embed`: texts to embed with the served model (the limits of `POST /v1/embeddings`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct EmbedArgs {
    /// The texts, embedded in order.
    #[schema(min_items = 1)]
    pub texts: Vec<String>,
    /// One of the model's prompts by name (`query`, `document`, ...: see `GET /v1/models`);
    /// without it the model's default prompt, if it has one.
    pub prompt_name: Option<String>,
    /// Keep the first this many dimensions, normalized again (Matryoshka models).
    #[schema(minimum = 1)]
    pub dimensions: Option<u64>,
}

/// What `embed` returns.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EmbedResult {
    /// The model that computed them.
    pub model: String,
    /// Dimensions of each embedding.
    pub dimensions: usize,
    /// One embedding per text, in order.
    pub embeddings: Vec<Vec<f32>>,
}

/// The tools this server offers, in the order `tools/list` shows them.
pub const TOOL_NAMES: [&str; 6] = [
    "search",
    "add_documents",
    "delete_document",
    "list_collections",
    "describe_collection",
    "embed",
];

/// The tool name as a static label (`unknown` for a name this server does not offer).
pub fn label(name: &str) -> &'static str {
    TOOL_NAMES
        .iter()
        .find(|n| **n == name)
        .copied()
        .unwrap_or("unknown")
}

fn tool<A: ToSchema, R: ToSchema>(
    name: &'static str,
    description: &'static str,
    annotations: ToolAnnotations,
) -> Tool {
    let mut output = schema_of::<R>();
    output.insert("type".into(), Value::from("object"));
    Tool::new(name, description, Arc::new(arguments_of::<A>()))
        .with_raw_output_schema(Arc::new(output))
        .with_annotations(annotations)
}

/// Every tool with its schemas, built once.
pub static CATALOG: LazyLock<Vec<Tool>> = LazyLock::new(|| {
    let read = || ToolAnnotations::new().read_only(true).open_world(false);
    vec![
        tool::<SearchArgs, SearchResult>(
            "search",
            "Search a collection's document chunks by text: `mode` `vector` (by meaning, the \
             default), `lexical` (BM25: exact terms, identifiers, error codes) or `hybrid` (both, \
             fused by reciprocal rank). Optional metadata `filter` ($eq, $in, $and, ...) and `k`.",
            read(),
        ),
        tool::<AddDocumentsArgs, IngestResult>(
            "add_documents",
            "Chunk, embed and store documents ({id, text, metadata}) in a collection, creating \
             it if needed. Idempotent by id: re-sending an id replaces that document.",
            ToolAnnotations::new()
                .read_only(false)
                .destructive(false)
                .idempotent(true)
                .open_world(false),
        ),
        tool::<DeleteDocumentArgs, Deleted>(
            "delete_document",
            "Delete a document (all its chunks) from a collection by id.",
            ToolAnnotations::new()
                .read_only(false)
                .destructive(true)
                .idempotent(true)
                .open_world(false),
        ),
        tool::<NoArgs, CollectionList>(
            "list_collections",
            "List the collections with their record counts, dimensions and metrics.",
            read(),
        ),
        tool::<CollectionArgs, CollectionView>(
            "describe_collection",
            "Describe one collection: records held, vector dimensions, metric and analyzer.",
            read(),
        ),
        tool::<EmbedArgs, EmbedResult>(
            "embed",
            "Embed texts with the served embedding model; returns one vector per text.",
            read(),
        ),
    ]
});

/// A tool's result: structured content and a short text an agent can read.
pub struct Output {
    /// The structured result (the HTTP API's response body).
    pub value: Value,
    /// A few lines summing it up.
    pub text: String,
}

/// Decodes arguments into `A`, refusing any the tool's schema does not name.
fn arguments<A: DeserializeOwned>(tool: &str, args: Option<JsonObject>) -> Result<A, ApiError> {
    let args = args.unwrap_or_default();
    if let Some(schema) = CATALOG.iter().find(|t| t.name == tool) {
        let known = property_names(&schema.input_schema);
        if let Some(k) = args.keys().find(|k| !known.contains(&k.as_str())) {
            let k: String = k.chars().take(64).collect();
            return Err(ApiError::invalid(format!(
                "unknown argument {k:?}; `{tool}` takes {}",
                known.join(", ")
            )));
        }
    }
    serde_json::from_value(Value::Object(args))
        .map_err(|e| ApiError::invalid(format!("bad arguments for `{tool}`: {e}")))
}

fn to_value<T: Serialize>(v: &T) -> Result<Value, ApiError> {
    serde_json::to_value(v)
        .map_err(|e| aistack_core::Error::internal("serializing a tool result", e).into())
}

/// Runs the tool `name` (one of [`TOOL_NAMES`]) with `args`.
pub async fn call(
    app: &Arc<AppState>,
    name: &str,
    args: Option<JsonObject>,
) -> Result<Output, ApiError> {
    match name {
        "search" => {
            let a: SearchArgs = arguments(name, args)?;
            let mode = a.search.mode.clone().unwrap_or_else(|| "vector".into());
            let collection = a.collection;
            let r = collections::search(
                State(app.clone()),
                ApiPath(collection.clone()),
                ApiJson(a.search),
            )
            .await?
            .0;
            Ok(Output {
                text: render_search(&collection, &mode, &r),
                value: to_value(&r)?,
            })
        }
        "add_documents" => {
            let a: AddDocumentsArgs = arguments(name, args)?;
            let r = collections::ingest(
                State(app.clone()),
                ApiPath(a.collection.clone()),
                ApiJson(a.body),
            )
            .await?
            .0;
            Ok(Output {
                text: format!(
                    "Stored {} document(s) as {} chunk(s) in collection {:?}; {} stale chunk(s) \
                     of replaced documents removed.",
                    r.documents, r.chunks, a.collection, r.removed
                ),
                value: to_value(&r)?,
            })
        }
        "delete_document" => {
            let a: DeleteDocumentArgs = arguments(name, args)?;
            let r = collections::delete_document(
                State(app.clone()),
                ApiPath((a.collection.clone(), a.id.clone())),
            )
            .await?
            .0;
            Ok(Output {
                text: format!(
                    "Deleted document {:?} ({} chunk(s)) from collection {:?}.",
                    a.id,
                    r.records.unwrap_or(0),
                    a.collection
                ),
                value: to_value(&r)?,
            })
        }
        "list_collections" => {
            let _: NoArgs = arguments(name, args)?;
            let r = collections::list_collections(State(app.clone())).await?.0;
            let text = if r.collections.is_empty() {
                "No collections yet.".to_string()
            } else {
                let lines: Vec<String> = r.collections.iter().map(describe).collect();
                format!("{} collection(s):\n{}", lines.len(), lines.join("\n"))
            };
            Ok(Output {
                text,
                value: to_value(&r)?,
            })
        }
        "describe_collection" => {
            let a: CollectionArgs = arguments(name, args)?;
            let r = collections::get_collection(State(app.clone()), ApiPath(a.collection))
                .await?
                .0;
            Ok(Output {
                text: describe(&r),
                value: to_value(&r)?,
            })
        }
        "embed" => {
            let a: EmbedArgs = arguments(name, args)?;
            let req = EmbeddingsRequest {
                input: Inputs::Many(a.texts),
                model: None,
                encoding_format: None,
                dimensions: a.dimensions,
                user: None,
                aistack: a.prompt_name.map(|p| EmbeddingsExtension {
                    prompt_name: Some(p),
                }),
            };
            let r = openai::embeddings(State(app.clone()), ApiJson(req))
                .await?
                .0;
            // The request asks for floats, so base64 never comes back.
            let embeddings = r
                .data
                .into_iter()
                .map(|d| match d.embedding {
                    Embedding::Float(v) => Ok(v),
                    Embedding::Base64(_) => Err(ApiError::from(aistack_core::Error::internal(
                        "the embeddings route answered base64 to a float request",
                        std::io::Error::other("unexpected encoding"),
                    ))),
                })
                .collect::<Result<Vec<Vec<f32>>, ApiError>>()?;
            let out = EmbedResult {
                dimensions: embeddings.first().map_or(0, Vec::len),
                model: r.model,
                embeddings,
            };
            Ok(Output {
                text: format!(
                    "Embedded {} text(s) with {}: {} dimensions each (in the structured result).",
                    out.embeddings.len(),
                    out.model,
                    out.dimensions
                ),
                value: to_value(&out)?,
            })
        }
        other => Err(ApiError::invalid(format!(
            "no tool named {:?}",
            other.chars().take(64).collect::<String>()
        ))),
    }
}

fn describe(c: &CollectionView) -> String {
    format!(
        "- {}: {} record(s), {} dimensions, {} metric, {} analyzer",
        c.name, c.count, c.dims, c.metric, c.analyzer
    )
}

/// Hits best first, each with its score, id and the start of its text.
fn render_search(collection: &str, mode: &str, r: &SearchResult) -> String {
    if r.hits.is_empty() {
        return format!("No hits in collection {collection:?} ({mode} search).");
    }
    let mut out = format!(
        "{} hit(s) in collection {collection:?} ({mode} search), best first:",
        r.hits.len()
    );
    for (i, h) in r.hits.iter().enumerate() {
        let mut text: String = h.text.chars().take(200).collect();
        if text.len() < h.text.len() {
            text.push('…');
        }
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        out.push_str(&format!(
            "\n{}. [{:.4}] {} (document {}): {}",
            i + 1,
            h.score,
            h.id,
            h.document_id,
            text
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_a_closed_object_schema_with_its_arguments() {
        let names: Vec<&str> = CATALOG.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(names, TOOL_NAMES);
        let args = |n: &str| {
            let t = CATALOG.iter().find(|t| t.name == n).unwrap();
            let mut p: Vec<String> = property_names(&t.input_schema)
                .into_iter()
                .map(String::from)
                .collect();
            p.sort_unstable();
            assert_eq!(t.input_schema["additionalProperties"], false);
            assert!(t.output_schema.is_some());
            assert!(t.description.as_ref().is_some_and(|d| !d.is_empty()));
            p
        };
        let search = args("search");
        for want in ["collection", "query", "k", "filter", "mode", "fusion"] {
            assert!(search.iter().any(|p| p == want), "{search:?}");
        }
        assert_eq!(args("add_documents"), ["collection", "documents"]);
        assert_eq!(args("delete_document"), ["collection", "id"]);
        assert_eq!(args("describe_collection"), ["collection"]);
        assert!(args("list_collections").is_empty());
        assert_eq!(args("embed"), ["dimensions", "prompt_name", "texts"]);
        // A document's fields come from the HTTP type, inlined.
        let add = CATALOG.iter().find(|t| t.name == "add_documents").unwrap();
        let doc = &add.input_schema["properties"]["documents"]["items"];
        assert!(doc["properties"]["metadata"].is_object(), "{doc}");
        assert!(!serde_json::to_string(&add.input_schema)
            .unwrap()
            .contains("$ref"));
    }

    #[test]
    fn unknown_and_malformed_arguments_are_invalid_input() {
        let mut args = JsonObject::new();
        args.insert("collection".into(), Value::from("docs"));
        args.insert("colection".into(), Value::from("typo"));
        let e = arguments::<CollectionArgs>("describe_collection", Some(args)).unwrap_err();
        assert_eq!(e.code().code(), "invalid_input");
        let mut args = JsonObject::new();
        args.insert("texts".into(), Value::from("not a list"));
        let e = arguments::<EmbedArgs>("embed", Some(args)).unwrap_err();
        assert_eq!(e.code().code(), "invalid_input");
        let e = arguments::<CollectionArgs>("describe_collection", None).unwrap_err();
        assert_eq!(e.code().code(), "invalid_input");
    }
}
