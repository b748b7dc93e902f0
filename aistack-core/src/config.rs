//! Typed settings: defaults, a TOML file, a per-environment overlay chosen by `AISTACK_ENV`, and
//! `AISTACK__SECTION__KEY` environment variables, validated once at start-up.
//!
//! Layering, later wins: built-in defaults → `aistack.toml` → `aistack.{env}.toml` (beside the base
//! file) → environment variables. Unknown keys are errors, so a typo never passes silently.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The deployment environment whose overlay file is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// Local development.
    Dev,
    /// Pre-production.
    Staging,
    /// Production.
    Prod,
}

impl Environment {
    /// Reads `AISTACK_ENV` (`dev`, `staging` or `prod`); unset means `dev`.
    pub fn from_env() -> Result<Self> {
        match std::env::var("AISTACK_ENV") {
            Err(std::env::VarError::NotPresent) => Ok(Environment::Dev),
            Ok(v) => Self::parse(&v),
            Err(e) => Err(Error::config("AISTACK_ENV", e.to_string())),
        }
    }

    /// Parses an environment name.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim() {
            "dev" | "development" => Ok(Environment::Dev),
            "staging" => Ok(Environment::Staging),
            "prod" | "production" => Ok(Environment::Prod),
            other => Err(Error::config(
                "AISTACK_ENV",
                format!("'{other}' is not one of dev, staging, prod"),
            )),
        }
    }

    /// The name used in overlay file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Dev => "dev",
            Environment::Staging => "staging",
            Environment::Prod => "prod",
        }
    }
}

/// All of aistack's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// HTTP server settings.
    pub server: ServerSettings,
    /// The embeddings engine.
    pub embed: EmbedSettings,
    /// Caches.
    pub cache: CacheSettings,
    /// Retry and circuit-breaker defaults.
    pub resilience: ResilienceSettings,
    /// Logging.
    pub log: LogSettings,
    /// The chat gateway.
    pub llm: crate::llm::LlmSettings,
}

/// HTTP server settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to listen on; loopback by default.
    pub bind: SocketAddr,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Deadline for a whole request, in milliseconds.
    pub request_timeout_ms: u64,
    /// How long a connection may go without a request in flight, in milliseconds: from being
    /// accepted to its first complete request headers, and from a response to the next request
    /// (against silent, idle and slowloris clients).
    pub header_read_timeout_ms: u64,
    /// Deadline for a TLS handshake, in milliseconds.
    pub tls_handshake_timeout_ms: u64,
    /// Requests handled at once; more get 429 with `Retry-After`.
    pub max_concurrent_requests: usize,
    /// Open connections at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Most documents in one ingest request.
    pub max_documents_per_request: usize,
    /// Most characters in one document of an ingest request.
    pub max_document_chars: usize,
    /// Largest `k` a search may ask for.
    pub max_search_k: usize,
    /// Entries of the search result cache; `0` disables it.
    pub search_cache_entries: u64,
    /// File of API keys, one per line; requests must send one as `Authorization: Bearer`.
    /// Unset means no authentication. The file must not be readable by group or others.
    pub api_key_file: Option<PathBuf>,
    /// Whether `/health` answers without an API key.
    pub public_health: bool,
    /// Whether `/metrics` answers without an API key.
    pub public_metrics: bool,
    /// PEM certificate chain; with `tls_key`, the server speaks HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key matching `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish, in milliseconds.
    pub shutdown_grace_ms: u64,
    /// The name clients send as `model` (e.g. `all-MiniLM-L6-v2` for a local directory); the
    /// model's id and its last path part are always accepted too.
    pub model_name: Option<String>,
    /// `Host` values `/mcp` accepts (a name, or `name:port`); the loopback names by default,
    /// against DNS rebinding. A deployment reached by another name lists it here.
    pub mcp_allowed_hosts: Vec<String>,
    /// Browser `Origin`s `/mcp` accepts (`scheme://host:port`, `:*` for any port); empty
    /// accepts requests with any or no `Origin` (the `Host` check still applies).
    pub mcp_allowed_origins: Vec<String>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 2 * 1024 * 1024,
            request_timeout_ms: 30_000,
            header_read_timeout_ms: 10_000,
            tls_handshake_timeout_ms: 10_000,
            max_concurrent_requests: 256,
            max_connections: 1024,
            max_documents_per_request: 256,
            max_document_chars: 1_000_000,
            max_search_k: 1_000,
            search_cache_entries: 10_000,
            api_key_file: None,
            public_health: true,
            public_metrics: false,
            tls_cert: None,
            tls_key: None,
            shutdown_grace_ms: 10_000,
            model_name: None,
            mcp_allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            mcp_allowed_origins: Vec::new(),
        }
    }
}

/// The embeddings engine: which model, its limits and its batching.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbedSettings {
    /// A local model directory, a Hugging Face cache directory, or a Hub id (`owner/name`).
    pub model: String,
    /// Hub revision (branch, tag or commit) when `model` is a Hub id.
    pub revision: String,
    /// Prefix put before queries (e.g. `"query: "` for e5); overrides the model's own prompt.
    pub query_prefix: Option<String>,
    /// Prefix put before passages/documents (e.g. `"passage: "` for e5).
    pub passage_prefix: Option<String>,
    /// Most inputs in one request.
    pub max_inputs_per_request: usize,
    /// Most characters (Unicode scalar values) in one input.
    pub max_input_chars: usize,
    /// Token budget of one forward pass, counting padding (`longest × inputs`).
    pub max_batch_tokens: usize,
    /// Most sequences in one forward pass.
    pub max_batch_requests: usize,
    /// Requests admitted at once (queued or running); more fail at once with `Overloaded`.
    pub max_concurrent_requests: usize,
    /// Deadline for one embedding request, in milliseconds, queueing included.
    pub request_timeout_ms: u64,
    /// Admission by wait time: an interactive request (an embeddings request or a search that
    /// costs at most twice this bound to compute) is refused at once (429, `Retry-After` from the
    /// estimate) when the queue ahead of it would take longer than this to compute, in
    /// milliseconds. Larger requests and ingestion are bulk work: they queue, and are refused
    /// only when the queue could not finish them within 80% of `request_timeout_ms`. `0`
    /// admits by count only. Unset: calibrated at start in the servers (three times a
    /// measured forward pass of eight short sentences, see `docs/server.md`), off in-process
    /// (the library, the CLI and Python own their callers' concurrency).
    pub max_queue_wait_ms: Option<u64>,
    /// Whether an unset `max_queue_wait_ms` is calibrated at start ([`EmbedSettings::for_server`]
    /// sets it); not a setting of its own.
    #[serde(skip)]
    pub calibrate_queue_wait: bool,
    /// Attempts at loading (downloading) the model before the engine reports `Failed`.
    pub load_attempts: u32,
    /// Compute threads of the model; `0` means one per core.
    pub threads: usize,
}

impl Default for EmbedSettings {
    fn default() -> Self {
        Self {
            model: "sentence-transformers/all-MiniLM-L6-v2".into(),
            revision: "main".into(),
            query_prefix: None,
            passage_prefix: None,
            max_inputs_per_request: 32,
            max_input_chars: 10_000,
            max_batch_tokens: 16_384,
            max_batch_requests: 64,
            max_concurrent_requests: 512,
            request_timeout_ms: 30_000,
            max_queue_wait_ms: None,
            calibrate_queue_wait: false,
            load_attempts: 5,
            threads: 0,
        }
    }
}

impl EmbedSettings {
    /// The per-request deadline.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The queueing bound of latency-bound requests; `None` when `max_queue_wait_ms` is unset
    /// or 0.
    pub fn max_queue_wait(&self) -> Option<Duration> {
        self.max_queue_wait_ms
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis)
    }

    /// These settings as a server runs them: admission by wait time on, its bound calibrated
    /// at start unless `max_queue_wait_ms` is configured.
    pub fn for_server(&self) -> Self {
        let mut s = self.clone();
        s.calibrate_queue_wait = s.max_queue_wait_ms.is_none();
        s
    }
}

/// Cache sizes and lifetimes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// Memory budget of the embedding cache in bytes; `0` disables it.
    pub embeddings_max_bytes: u64,
    /// Time to live of a cached embedding, in seconds; `0` means no expiry.
    pub embeddings_ttl_secs: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            embeddings_max_bytes: 64 * 1024 * 1024,
            embeddings_ttl_secs: 3600,
        }
    }
}

/// Defaults for retry and circuit breakers around backends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResilienceSettings {
    /// Attempts per call, the first included.
    pub retry_max_attempts: u32,
    /// First backoff delay, in milliseconds.
    pub retry_initial_delay_ms: u64,
    /// Largest backoff delay, in milliseconds.
    pub retry_max_delay_ms: u64,
    /// Give up retrying after this long, in milliseconds.
    pub retry_max_elapsed_ms: u64,
    /// Consecutive failures that open a breaker.
    pub breaker_consecutive_failures: u32,
    /// First open interval of a breaker, in milliseconds (it grows while the backend stays down).
    pub breaker_open_ms: u64,
    /// Longest open interval, in milliseconds.
    pub breaker_max_open_ms: u64,
    /// Trial calls let through while half-open.
    pub breaker_half_open_calls: u32,
    /// Deadline of one call through a breaker, in milliseconds; exceeding it counts as a failure.
    pub breaker_call_timeout_ms: u64,
}

impl Default for ResilienceSettings {
    fn default() -> Self {
        Self {
            retry_max_attempts: 4,
            retry_initial_delay_ms: 100,
            retry_max_delay_ms: 5_000,
            retry_max_elapsed_ms: 30_000,
            breaker_consecutive_failures: 5,
            breaker_open_ms: 1_000,
            breaker_max_open_ms: 60_000,
            breaker_half_open_calls: 1,
            breaker_call_timeout_ms: 10_000,
        }
    }
}

/// Log output settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// A `tracing` filter such as `info` or `aistack_core=debug,info`.
    pub level: String,
    /// `json` (structured, the default) or `text`.
    pub format: LogFormat,
    /// OTLP/HTTP (protobuf) traces endpoint, e.g. `http://localhost:4318`; `/v1/traces` is
    /// added when the URL has no path. Unset means no traces are exported.
    pub otlp_endpoint: Option<String>,
    /// Share of new traces exported, 0.0 to 1.0; a sampled incoming `traceparent` is followed.
    pub otlp_sample_ratio: f64,
    /// The `service.name` traces carry.
    pub service_name: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Json,
            otlp_endpoint: None,
            otlp_sample_ratio: 1.0,
            service_name: "aistack".into(),
        }
    }
}

/// The shape of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

impl Settings {
    /// Loads settings: defaults, then `file` (if given), then its overlay for the environment in
    /// `AISTACK_ENV`, then `AISTACK__*` environment variables; then validates them.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let env = Environment::from_env()?;
        Self::load_with(file, env, Env::prefixed("AISTACK__").split("__"))
    }

    /// Like [`Settings::load`] with an explicit environment and variable provider (for tests).
    pub fn load_with(file: Option<&Path>, env: Environment, vars: Env) -> Result<Self> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(Error::config(
                    "config file",
                    format!("{} does not exist or is not a file", path.display()),
                ));
            }
            fig = fig.merge(Toml::file_exact(path));
            let overlay = overlay_path(path, env);
            if overlay.is_file() {
                fig = fig.merge(Toml::file_exact(overlay));
            }
        }
        fig = fig.merge(vars);
        let settings: Settings = fig.extract().map_err(figment_error)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every value; the error names the key and the reason.
    pub fn validate(&self) -> Result<()> {
        let e = &self.embed;
        if e.model.trim().is_empty() {
            return Err(Error::config("embed.model", "must not be empty"));
        }
        positive("embed.max_inputs_per_request", e.max_inputs_per_request)?;
        positive("embed.max_input_chars", e.max_input_chars)?;
        positive("embed.max_batch_requests", e.max_batch_requests)?;
        positive("embed.max_concurrent_requests", e.max_concurrent_requests)?;
        positive("embed.load_attempts", e.load_attempts as usize)?;
        if e.threads > 1024 {
            return Err(Error::config(
                "embed.threads",
                format!("{} is more threads than any machine has cores", e.threads),
            ));
        }
        if e.max_batch_tokens < 512 {
            return Err(Error::config(
                "embed.max_batch_tokens",
                format!(
                    "{} is too small: one full-length sequence needs up to 512 tokens",
                    e.max_batch_tokens
                ),
            ));
        }
        if e.request_timeout_ms == 0 {
            return Err(Error::config("embed.request_timeout_ms", "must be > 0"));
        }
        let s = &self.server;
        positive("server.max_body_bytes", s.max_body_bytes)?;
        for (key, ms) in [
            ("server.request_timeout_ms", s.request_timeout_ms),
            ("server.header_read_timeout_ms", s.header_read_timeout_ms),
            (
                "server.tls_handshake_timeout_ms",
                s.tls_handshake_timeout_ms,
            ),
            ("server.shutdown_grace_ms", s.shutdown_grace_ms),
        ] {
            if ms == 0 {
                return Err(Error::config(key, "must be > 0"));
            }
        }
        positive("server.max_concurrent_requests", s.max_concurrent_requests)?;
        positive("server.max_connections", s.max_connections)?;
        positive(
            "server.max_documents_per_request",
            s.max_documents_per_request,
        )?;
        positive("server.max_document_chars", s.max_document_chars)?;
        positive("server.max_search_k", s.max_search_k)?;
        if s.tls_cert.is_some() != s.tls_key.is_some() {
            return Err(Error::config(
                "server.tls_cert",
                "tls_cert and tls_key must be set together",
            ));
        }
        let r = &self.resilience;
        positive(
            "resilience.retry_max_attempts",
            r.retry_max_attempts as usize,
        )?;
        if r.retry_initial_delay_ms > r.retry_max_delay_ms {
            return Err(Error::config(
                "resilience.retry_initial_delay_ms",
                "must not exceed resilience.retry_max_delay_ms",
            ));
        }
        positive(
            "resilience.breaker_consecutive_failures",
            r.breaker_consecutive_failures as usize,
        )?;
        positive("resilience.breaker_open_ms", r.breaker_open_ms as usize)?;
        if r.breaker_open_ms > r.breaker_max_open_ms {
            return Err(Error::config(
                "resilience.breaker_open_ms",
                "must not exceed resilience.breaker_max_open_ms",
            ));
        }
        positive(
            "resilience.breaker_half_open_calls",
            r.breaker_half_open_calls as usize,
        )?;
        positive(
            "resilience.breaker_call_timeout_ms",
            r.breaker_call_timeout_ms as usize,
        )?;
        self.llm.validate()?;
        if self.log.level.trim().is_empty() {
            return Err(Error::config("log.level", "must not be empty"));
        }
        if let Some(url) = &self.log.otlp_endpoint {
            let ok = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
            if !ok {
                return Err(Error::config(
                    "log.otlp_endpoint",
                    "must be an http:// or https:// URL",
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.log.otlp_sample_ratio) {
            return Err(Error::config(
                "log.otlp_sample_ratio",
                "must be a number from 0.0 to 1.0",
            ));
        }
        if self.log.service_name.trim().is_empty() {
            return Err(Error::config("log.service_name", "must not be empty"));
        }
        Ok(())
    }
}

/// Reads a file holding secrets (API keys): refused when group or others may read it, when it
/// is not a regular file, or cannot be read; `key` is the setting named in the error.
pub fn read_secret_file(path: &Path, key: &str) -> Result<String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::config(key, format!("cannot read {}: {e}", path.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(Error::config(
                key,
                format!(
                    "{} is accessible by group or others (mode {:o}); run chmod 600 on it",
                    path.display(),
                    mode & 0o777
                ),
            ));
        }
    }
    if !meta.is_file() {
        return Err(Error::config(
            key,
            format!("{} is not a file", path.display()),
        ));
    }
    std::fs::read_to_string(path)
        .map_err(|e| Error::config(key, format!("cannot read {}: {e}", path.display())))
}

fn positive(key: &str, v: usize) -> Result<()> {
    if v == 0 {
        return Err(Error::config(key, "must be greater than 0"));
    }
    Ok(())
}

/// `dir/aistack.toml` with env `prod` → `dir/aistack.prod.toml`.
fn overlay_path(base: &Path, env: Environment) -> PathBuf {
    let stem = base
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "aistack".into());
    base.with_file_name(format!("{stem}.{}.toml", env.as_str()))
}

fn figment_error(err: figment::Error) -> Error {
    // Report the first problem with its dotted key; figment keeps the path of the failing value.
    let first = err.into_iter().next();
    match first {
        Some(e) => {
            let key = if e.path.is_empty() {
                "config".to_string()
            } else {
                e.path.join(".")
            };
            let origin = e
                .metadata
                .as_ref()
                .and_then(|m| m.source.as_ref().map(|s| format!(" (from {s})")))
                .unwrap_or_default();
            Error::config(key, format!("{}{origin}", e.kind))
        }
        None => Error::config("config", "unknown configuration error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn no_vars() -> Env {
        Env::prefixed("AISTACK_TEST_NO_SUCH_PREFIX__").split("__")
    }

    #[test]
    fn defaults_are_safe() {
        let s = Settings::load_with(None, Environment::Dev, no_vars()).unwrap();
        assert!(s.server.bind.ip().is_loopback());
        assert_eq!(s.embed.max_inputs_per_request, 32);
        assert_eq!(s.embed.max_input_chars, 10_000);
    }

    #[test]
    fn admission_by_wait_is_on_in_servers_and_off_in_process_unless_set() {
        let s = Settings::load_with(None, Environment::Dev, no_vars()).unwrap();
        assert_eq!(s.embed.max_queue_wait(), None);
        assert!(!s.embed.calibrate_queue_wait);
        // Unset in a server: calibrated at start.
        let served = s.embed.for_server();
        assert_eq!(served.max_queue_wait(), None);
        assert!(served.calibrate_queue_wait);
        let mut off = s.embed.clone();
        off.max_queue_wait_ms = Some(0);
        assert_eq!(off.for_server().max_queue_wait(), None);
        assert!(!off.for_server().calibrate_queue_wait);
        let mut set = s.embed;
        set.max_queue_wait_ms = Some(80);
        assert_eq!(
            set.for_server().max_queue_wait(),
            Some(Duration::from_millis(80))
        );
        assert!(!set.for_server().calibrate_queue_wait);
    }

    #[test]
    fn file_overlay_and_env_layer_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("aistack.toml");
        std::fs::write(
            &base,
            "[embed]\nmax_batch_tokens = 4096\nmax_input_chars = 500\n[log]\nlevel = \"debug\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("aistack.prod.toml"),
            "[embed]\nmax_input_chars = 700\n",
        )
        .unwrap();
        let s = Settings::load_with(Some(&base), Environment::Prod, no_vars()).unwrap();
        assert_eq!(s.embed.max_batch_tokens, 4096);
        assert_eq!(s.embed.max_input_chars, 700);
        assert_eq!(s.log.level, "debug");
        // The staging overlay does not exist: the base file alone applies.
        let s = Settings::load_with(Some(&base), Environment::Staging, no_vars()).unwrap();
        assert_eq!(s.embed.max_input_chars, 500);

        // A variable prefix of this test's own, so no other test sees it.
        std::env::set_var("AISTACK_CFGTEST__EMBED__MAX_BATCH_TOKENS", "2048");
        let s = Settings::load_with(
            Some(&base),
            Environment::Prod,
            Env::prefixed("AISTACK_CFGTEST__").split("__"),
        )
        .unwrap();
        assert_eq!(s.embed.max_batch_tokens, 2048);
        assert_eq!(s.embed.max_input_chars, 700);
    }

    #[test]
    fn wrong_values_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("aistack.toml");
        let mut f = std::fs::File::create(&base).unwrap();
        writeln!(f, "[embed]\nmax_batch_tokens = \"lots\"").unwrap();
        let err = Settings::load_with(Some(&base), Environment::Dev, no_vars()).unwrap_err();
        assert!(
            matches!(&err, Error::Config { key, .. } if key == "embed.max_batch_tokens"),
            "{err}"
        );

        std::fs::write(&base, "[embed]\nmax_batch_tokens = 0\n").unwrap();
        let err = Settings::load_with(Some(&base), Environment::Dev, no_vars()).unwrap_err();
        assert!(
            matches!(&err, Error::Config { key, .. } if key == "embed.max_batch_tokens"),
            "{err}"
        );

        std::fs::write(&base, "[embed]\nmax_batch_tokenz = 4096\n").unwrap();
        let err = Settings::load_with(Some(&base), Environment::Dev, no_vars()).unwrap_err();
        assert!(err.to_string().contains("max_batch_tokenz"), "{err}");

        for (toml, key) in [
            (
                "[log]\notlp_endpoint = \"localhost:4318\"\n",
                "log.otlp_endpoint",
            ),
            ("[log]\notlp_endpoint = \"http://\"\n", "log.otlp_endpoint"),
            ("[log]\notlp_sample_ratio = 1.5\n", "log.otlp_sample_ratio"),
            ("[log]\notlp_sample_ratio = nan\n", "log.otlp_sample_ratio"),
            ("[embed]\nthreads = 5000\n", "embed.threads"),
        ] {
            std::fs::write(&base, toml).unwrap();
            let err = Settings::load_with(Some(&base), Environment::Dev, no_vars()).unwrap_err();
            assert!(
                matches!(&err, Error::Config { key: k, .. } if k == key),
                "{toml}: {err}"
            );
        }

        std::fs::write(&base, "[server]\nbind = \"not-an-address\"\n").unwrap();
        let err = Settings::load_with(Some(&base), Environment::Dev, no_vars()).unwrap_err();
        assert!(
            matches!(&err, Error::Config { key, .. } if key == "server.bind"),
            "{err}"
        );
    }

    #[test]
    fn the_llm_section_loads_from_toml_and_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aistack.toml");
        std::fs::write(
            &path,
            r#"
[[llm.upstreams]]
name = "local"
base_url = "http://127.0.0.1:8081/v1"

[[llm.upstreams]]
name = "remote"
base_url = "https://api.example.com/v1"
first_token_timeout_ms = 20000

[[llm.routes]]
name = "docs-chat"
upstreams = ["local", "remote"]
collections = ["docs"]
k = 4
filter = { lang = "en" }
"#,
        )
        .unwrap();
        let s = Settings::load_with(Some(&path), Environment::Dev, no_vars()).unwrap();
        assert_eq!(s.llm.upstreams.len(), 2);
        assert_eq!(s.llm.upstreams[1].first_token_timeout_ms, 20_000);
        assert_eq!(
            s.llm.routes[0].filter,
            Some(serde_json::json!({"lang": "en"}))
        );
        std::fs::write(
            &path,
            "[[llm.routes]]\nname = \"r\"\nupstreams = [\"nowhere\"]\n",
        )
        .unwrap();
        let err = Settings::load_with(Some(&path), Environment::Dev, no_vars()).unwrap_err();
        assert!(err.to_string().contains("llm.routes[0].upstreams"), "{err}");
        std::fs::write(
            &path,
            "[[llm.upstreams]]\nname = \"a\"\nbase_url = \"http://x/v1\"\ntypo = 1\n",
        )
        .unwrap();
        let err = Settings::load_with(Some(&path), Environment::Dev, no_vars()).unwrap_err();
        assert!(err.to_string().contains("typo"), "{err}");
    }

    #[test]
    fn environment_names() {
        assert_eq!(Environment::parse("prod").unwrap(), Environment::Prod);
        assert_eq!(Environment::parse("staging").unwrap(), Environment::Staging);
        let err = Environment::parse("qa").unwrap_err();
        assert!(matches!(&err, Error::Config { key, .. } if key == "AISTACK_ENV"));
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = Settings::load_with(
            Some(Path::new("/no/such/aistack.toml")),
            Environment::Dev,
            no_vars(),
        )
        .unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Config);
    }
}
