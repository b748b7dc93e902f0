//! The OpenAPI document: every route, the one error shape with every error code, the errors
//! every API route can answer, and a bearer scheme when API keys are configured.

use aistack_core::config::ServerSettings;
use aistack_core::ErrorKind;
use utoipa::OpenApi;

use super::error::{ErrorBody, ErrorDetail};
use super::routes::{chat, collections, openai, ops, tei};

/// The OpenAPI document of this server.
#[derive(OpenApi)]
#[openapi(
    info(title = "aistack", description = "Embeddings, documents and vector search."),
    paths(
        openai::embeddings, tei::tei_embed, tei::tei_root, chat::list_models,
        chat::chat_completions, chat::completions, collections::list_collections,
        collections::create_collection, collections::get_collection,
        collections::drop_collection, collections::ingest, collections::delete_document,
        collections::search, ops::health, ops::metrics, ops::openapi_json
    ),
    components(schemas(ErrorBody, ErrorDetail, ErrorKind)),
    modifiers(&ErrorResponses)
)]
pub struct ApiDoc;

/// Adds the errors every API route can answer under load: 429, 503 and 504.
struct ErrorResponses;

impl utoipa::Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") && path != "/embed" && path != "/" {
                continue;
            }
            for op in operations(item) {
                add_error(op, "429", "overloaded: retry after `Retry-After` seconds");
                add_error(
                    op,
                    "503",
                    "not ready: the model is loading or a backend is down",
                );
                add_error(
                    op,
                    "504",
                    "the request did not finish within the server's request timeout",
                );
            }
        }
    }
}

fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        item.get.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.put.as_mut(),
        item.patch.as_mut(),
    ]
    .into_iter()
    .flatten()
}

fn add_error(op: &mut utoipa::openapi::path::Operation, status: &str, description: &str) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let response = ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| response.into());
}

/// The chat gateway's routes: listed only when `[llm]` configures a chat route (without one they
/// answer 404).
const CHAT_PATHS: [&str; 2] = ["/v1/chat/completions", "/v1/completions"];

/// `POST /mcp`: MCP over streamable HTTP. Its body is a JSON-RPC message, described by the MCP
/// specification rather than here; the transport's refusals use the one error shape.
fn mcp_path() -> utoipa::openapi::PathItem {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItemBuilder};
    use utoipa::openapi::request_body::RequestBodyBuilder;
    use utoipa::openapi::{ContentBuilder, ObjectBuilder, ResponseBuilder};
    let json = || {
        ContentBuilder::new()
            .schema(Some(ObjectBuilder::new().build()))
            .build()
    };
    let mut op = OperationBuilder::new()
        .operation_id(Some("mcp"))
        .tag("mcp")
        .summary(Some(
            "MCP (Model Context Protocol) over streamable HTTP, stateless",
        ))
        .description(Some(
            "A JSON-RPC message of MCP 2025-06-18: the collections as tools and resources \
             (see docs/mcp.md). Send `Accept: application/json, text/event-stream`.",
        ))
        .request_body(Some(
            RequestBodyBuilder::new()
                .content("application/json", json())
                .required(Some(utoipa::openapi::Required::True))
                .build(),
        ))
        .response(
            "200",
            ResponseBuilder::new()
                .description("the JSON-RPC response, as JSON or as one server-sent event")
                .content("application/json", json())
                .content("text/event-stream", ContentBuilder::new().build())
                .build(),
        )
        .response(
            "202",
            ResponseBuilder::new()
                .description("a notification or a response was accepted")
                .build(),
        )
        .build();
    for (status, what) in [
        ("400", "not a JSON-RPC message (`invalid_input`)"),
        (
            "403",
            "a `Host` or `Origin` that is not allowed (`forbidden`)",
        ),
        (
            "406",
            "an `Accept` without both JSON and event streams (`not_acceptable`)",
        ),
        (
            "413",
            "a body over `server.max_body_bytes` (`payload_too_large`)",
        ),
        ("415", "a body that is not JSON (`unsupported_media_type`)"),
    ] {
        add_error(&mut op, status, what);
    }
    PathItemBuilder::new()
        .operation(HttpMethod::Post, op)
        .build()
}

/// The OpenAPI document as this server is configured: the chat routes only when some chat
/// route is configured (`chat`), and with API keys, a bearer scheme on every route that needs
/// one (documenting its 401) and none on the public ones.
pub fn openapi_document(settings: &ServerSettings, keys_required: bool, chat: bool) -> String {
    use utoipa::openapi::security::{
        HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };
    let mut doc = ApiDoc::openapi();
    if !chat {
        for path in CHAT_PATHS {
            doc.paths.paths.remove(path);
        }
    }
    doc.paths.paths.insert("/mcp".into(), mcp_path());
    if keys_required {
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "api_key",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        doc.security = Some(vec![SecurityRequirement::new(
            "api_key",
            Vec::<String>::new(),
        )]);
        for (path, item) in doc.paths.paths.iter_mut() {
            let public = (path == "/health" && settings.public_health)
                || (path == "/metrics" && settings.public_metrics);
            for op in operations(item) {
                if public {
                    op.security = Some(Vec::new());
                } else {
                    add_error(
                        op,
                        "401",
                        "no valid API key (`Authorization: Bearer <key>`)",
                    );
                }
            }
        }
    }
    doc.to_json().unwrap_or_else(|_| "{}".into())
}
