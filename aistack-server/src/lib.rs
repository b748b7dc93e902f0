//! The `aistack` binary as a library: the HTTP server ([`serve`]), the MCP server ([`mcp`]), the
//! commands and their
//! arguments ([`cli`]), logging, and the JSON-lines format of `aistack embed`. Routing,
//! transport and I/O only; the logic lives in aistack-core.
#![warn(missing_docs)]

pub mod cli;
pub mod embed_cmd;
pub mod ingest_cmd;
pub mod jsonl;
pub mod logging;
pub mod mcp;
pub mod serve;
pub mod store_args;
