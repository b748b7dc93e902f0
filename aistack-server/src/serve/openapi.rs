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

/// The OpenAPI document as this server is configured: with API keys, a bearer scheme on every
/// route that needs one (documenting its 401) and none on the public ones.
pub fn openapi_document(settings: &ServerSettings, keys_required: bool) -> String {
    use utoipa::openapi::security::{
        HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };
    let mut doc = ApiDoc::openapi();
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
