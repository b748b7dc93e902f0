//! MCP: aistack's collections as tools and resources for agents, over stdio (`aistack mcp`) and
//! streamable HTTP (`/mcp` on `aistack serve`), built on the official SDK (`rmcp`). A thin layer
//! like the HTTP API: each tool runs the handler of its HTTP route.

pub mod schema;
pub mod stdio;
pub mod tools;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aistack_core::ErrorKind;
use axum::extract::State;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData,
    Implementation, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
    PaginatedRequestParams, ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse,
    ReadResourceResult, Resource, ResourceContents, ResourceTemplate, ServerCapabilities,
    ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{RoleServer, ServerHandler};
use serde_json::json;
use tracing::Instrument;

use crate::serve::error::{retry_after_secs, ApiError};
use crate::serve::router::REQUEST_ID;
use crate::serve::state::AppState;
use crate::serve::types::collections::CollectionView;

/// The protocol revisions served: the latest stable one and the one before it.
pub const PROTOCOL_VERSIONS: [ProtocolVersion; 2] =
    [ProtocolVersion::V_2025_11_25, ProtocolVersion::V_2026_07_28];

/// The URI of a collection's resource: `aistack://collections/{name}`.
pub const COLLECTION_URI_PREFIX: &str = "aistack://collections/";

/// The MCP server over one application state; `transport` (`http` or `stdio`) labels its
/// metrics and spans.
#[derive(Clone)]
pub struct McpServer {
    app: Arc<AppState>,
    transport: &'static str,
}

impl McpServer {
    /// A server over `app`, reached by `transport` (`http` or `stdio`).
    pub fn new(app: Arc<AppState>, transport: &'static str) -> Self {
        Self { app, transport }
    }

    /// Runs one tool call under the API's limits: a request slot (or `overloaded`), the request
    /// deadline (or `timeout`), and the handler of its HTTP route.
    async fn run_tool(
        &self,
        name: &str,
        args: Option<rmcp::model::JsonObject>,
    ) -> Result<tools::Output, ApiError> {
        let _slot = self
            .app
            .api_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::overloaded())?;
        let deadline = Duration::from_millis(self.app.settings.server.request_timeout_ms);
        match tokio::time::timeout(deadline, tools::call(&self.app, name, args)).await {
            Ok(r) => r,
            Err(_) => Err(ApiError::request_timeout()),
        }
    }
}

/// A tool error as the client sees it: the API's error body as structured content, and its
/// code and message as text.
fn tool_error(e: ApiError) -> (CallToolResult, &'static str) {
    let code = e.code().code();
    let (body, retry_after) = e.into_body();
    let text = match retry_after {
        Some(after) => format!(
            "error {code}: {} (retry after {} s; error_id {})",
            body.error.message,
            retry_after_secs(after),
            body.error.error_id
        ),
        None => format!(
            "error {code}: {} (error_id {})",
            body.error.message, body.error.error_id
        ),
    };
    let mut value = json!({ "error": body.error });
    if let Some(after) = retry_after {
        value["retry_after_seconds"] = json!(retry_after_secs(after));
    }
    let mut r = CallToolResult::structured_error(value);
    r.content = vec![ContentBlock::text(text)];
    (r, code)
}

/// A failure of a resource read as a protocol error carrying the API's code.
fn resource_error(e: ApiError) -> ErrorData {
    let kind = e.code();
    let (body, _) = e.into_body();
    let data = Some(json!({ "error": body.error }));
    match kind {
        ErrorKind::NotFound => ErrorData::resource_not_found(body.error.message, data),
        ErrorKind::InvalidInput => ErrorData::invalid_params(body.error.message, data),
        _ => ErrorData::internal_error(body.error.message, data),
    }
}

fn request_id(ctx: &RequestContext<RoleServer>) -> String {
    ctx.extensions
        .get::<axum::http::request::Parts>()
        .and_then(|p| p.headers.get(&REQUEST_ID))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_protocol_version(ProtocolVersion::V_2025_11_25)
        .with_server_info(
            Implementation::new("aistack", env!("CARGO_PKG_VERSION"))
                .with_title("aistack: documents, embeddings and search"),
        )
        .with_instructions(
            "aistack stores documents in collections and searches them. Use `list_collections` \
             to see what exists, `search` (mode `hybrid` for exact terms plus meaning) to find \
             passages, `add_documents` to store text and `delete_document` to remove it.",
        )
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(&PROTOCOL_VERSIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools::CATALOG.clone()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools::CATALOG.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let tool = tools::label(&request.name);
        if tool == "unknown" {
            let name: String = request.name.chars().take(64).collect();
            self.app
                .metrics
                .observe_tool(tool, self.transport, "unknown_tool", 0.0);
            return Err(ErrorData::invalid_params(
                format!(
                    "no tool named {name:?}; this server offers {}",
                    tools::TOOL_NAMES.join(", ")
                ),
                None,
            ));
        }
        let span = tracing::info_span!(
            "mcp.tool",
            otel.name = %format_args!("tools/call {tool}"),
            tool,
            transport = self.transport,
            request_id = %request_id(&context),
            outcome = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = self
            .run_tool(tool, request.arguments)
            .instrument(span.clone())
            .await;
        let (result, outcome) = match result {
            Ok(out) => {
                let mut r = CallToolResult::structured(out.value);
                r.content = vec![ContentBlock::text(out.text)];
                (r, "ok")
            }
            Err(e) => span.in_scope(|| tool_error(e)),
        };
        span.record("outcome", outcome);
        self.app.metrics.observe_tool(
            tool,
            self.transport,
            outcome,
            started.elapsed().as_secs_f64(),
        );
        Ok(result.into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let list = self
            .app
            .store
            .list_collections()
            .await
            .map_err(|e| resource_error(e.into()))?;
        let resources = list
            .into_iter()
            .map(|c| {
                let v = CollectionView::from(c);
                Resource::new(format!("{COLLECTION_URI_PREFIX}{}", v.name), v.name.clone())
                    .with_title(format!("collection {}", v.name))
                    .with_description(format!(
                        "{} records, {} dimensions, {} metric, {} analyzer",
                        v.count, v.dims, v.metric, v.analyzer
                    ))
                    .with_mime_type("application/json")
            })
            .collect();
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new(format!("{COLLECTION_URI_PREFIX}{{name}}"), "collection")
                .with_title("A collection's description")
                .with_description("Records held, dimensions, metric and analyzer, as JSON.")
                .with_mime_type("application/json"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri;
        let Some(name) = uri.strip_prefix(COLLECTION_URI_PREFIX) else {
            let shown: String = uri.chars().take(64).collect();
            return Err(ErrorData::resource_not_found(
                format!("no resource {shown:?}: resources are {COLLECTION_URI_PREFIX}{{name}}"),
                None,
            ));
        };
        aistack_core::store::validate_collection_name(name)
            .map_err(|e| resource_error(e.into()))?;
        let info = self
            .app
            .store
            .collection(name)
            .await
            .map_err(|e| resource_error(e.into()))?;
        let text = serde_json::to_string(&CollectionView::from(info))
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        Ok(ReadResourceResult::new(vec![
            ResourceContents::text(text, uri).with_mime_type("application/json")
        ])
        .into())
    }
}

/// Middleware of `/mcp`: a body declared larger than `server.max_body_bytes` gets the API's 413
/// before the MCP service reads it, and the service's own plain-text refusals (a foreign `Host`,
/// a wrong `Accept`, a body that is not a JSON-RPC message, a chunked body over the limit) become
/// the API's one JSON error shape. JSON-RPC answers, errors included, pass unchanged.
pub async fn json_errors(
    State(max_body): State<usize>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::header;
    use axum::response::IntoResponse;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body as u64) {
        return ApiError::too_large().into_response();
    }
    let sent_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let allow = resp.headers().get(header::ALLOW).cloned();
    // The MCP service's own explanation, bounded (it may quote a header).
    let body = axum::body::to_bytes(resp.into_body(), 4096)
        .await
        .unwrap_or_default();
    let text: String = String::from_utf8_lossy(&body).chars().take(200).collect();
    let text = text.trim().to_string();
    if status.is_server_error() {
        let cause = std::io::Error::other(text);
        return ApiError::from(aistack_core::Error::internal(
            "the MCP service failed",
            cause,
        ))
        .into_response();
    }
    let kind = match status.as_u16() {
        403 => ErrorKind::Forbidden,
        404 => ErrorKind::NotFound,
        405 => ErrorKind::MethodNotAllowed,
        406 => ErrorKind::NotAcceptable,
        413 => return ApiError::too_large().into_response(),
        // A JSON body that is no JSON-RPC message is bad input, not a wrong media type.
        415 if !sent_json => ErrorKind::UnsupportedMediaType,
        _ => ErrorKind::InvalidInput,
    };
    let message = if text.is_empty() {
        format!("the MCP endpoint refused the request ({status})")
    } else {
        format!("the MCP endpoint refused the request: {text}")
    };
    let mut resp = ApiError::new(kind, message).into_response();
    if let Some(allow) = allow {
        resp.headers_mut().insert(header::ALLOW, allow);
    }
    resp
}

/// The `/mcp` service of `aistack serve`: streamable HTTP, stateless (any instance behind a load
/// balancer answers any request), JSON responses, the `Host` and `Origin` checks of the settings.
pub fn http_service(app: Arc<AppState>) -> StreamableHttpService<McpServer, LocalSessionManager> {
    let s = &app.settings.server;
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_allowed_hosts(s.mcp_allowed_hosts.clone())
        .with_allowed_origins(s.mcp_allowed_origins.clone())
        .with_max_request_body_bytes(s.max_body_bytes);
    let server = McpServer::new(app, "http");
    StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}
