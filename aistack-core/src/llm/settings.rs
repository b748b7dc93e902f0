//! The `[llm]` section: upstream model servers, the chat routes over them, and the gateway's
//! limits. Validated at start like every other section.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::store::{validate_collection_name, Filter};

/// The chat gateway's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmSettings {
    /// Upstream OpenAI-compatible servers.
    pub upstreams: Vec<UpstreamSettings>,
    /// Chat routes: the model names clients send, each with its fallback chain.
    pub routes: Vec<RouteSettings>,
    /// Most messages one chat request may carry.
    pub max_messages: usize,
    /// Largest chat or completion request body, in bytes.
    pub max_body_bytes: usize,
    /// How often each upstream's health is probed in the background, in ms.
    pub probe_interval_ms: u64,
    /// How long a request waits, in all, for an upstream that is still loading its model, in ms,
    /// when no other upstream can take it.
    pub loading_wait_ms: u64,
    /// Longest `Retry-After` of an upstream's 429 that is waited out before trying it again, in
    /// ms; a longer one moves on to the next upstream at once.
    pub max_retry_after_ms: u64,
    /// The system-message template of grounded answers; `{sources}` is replaced by the numbered
    /// sources.
    pub grounding_template: String,
    /// Most characters of one source put into the prompt.
    pub max_source_chars: usize,
}

/// The default instructions of a grounded answer.
pub const DEFAULT_GROUNDING_TEMPLATE: &str = "Answer using the sources below. Cite a source by \
its id in brackets, like [1]. If the sources do not contain the answer, say so.\n\n{sources}";

impl Default for LlmSettings {
    fn default() -> Self {
        Self {
            upstreams: Vec::new(),
            routes: Vec::new(),
            max_messages: 256,
            max_body_bytes: 4 * 1024 * 1024,
            probe_interval_ms: 5_000,
            loading_wait_ms: 30_000,
            max_retry_after_ms: 5_000,
            grounding_template: DEFAULT_GROUNDING_TEMPLATE.into(),
            max_source_chars: 4_000,
        }
    }
}

/// One upstream model server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSettings {
    /// The name routes refer to; also its breaker's name (`llm.<name>`) and metric label.
    pub name: String,
    /// The OpenAI-compatible base URL, e.g. `http://127.0.0.1:8081/v1`.
    pub base_url: String,
    /// A file holding the bearer token sent upstream (mode 600, one line).
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// The model name sent upstream; by default the client's.
    #[serde(default)]
    pub model: Option<String>,
    /// Connection timeout, in ms.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Deadline for the first token (a streamed answer's first chunk, or a whole non-streamed
    /// answer), in ms.
    #[serde(default = "defaults::first_token_timeout_ms")]
    pub first_token_timeout_ms: u64,
    /// Longest gap between two chunks of a stream, in ms.
    #[serde(default = "defaults::idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Deadline for the whole answer, in ms.
    #[serde(default = "defaults::total_timeout_ms")]
    pub total_timeout_ms: u64,
    /// Most requests in flight to this upstream; more go to the next upstream of the route.
    #[serde(default = "defaults::max_concurrent")]
    pub max_concurrent: usize,
}

/// One chat route: the model name clients send, its fallback chain and its grounding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSettings {
    /// The model name clients send (and `/v1/models` lists).
    pub name: String,
    /// Upstream names, tried in this order.
    pub upstreams: Vec<String>,
    /// Collections searched to ground the answer; none: no grounding unless a request asks.
    #[serde(default)]
    pub collections: Vec<String>,
    /// Sources put into the prompt.
    #[serde(default = "defaults::k")]
    pub k: usize,
    /// A metadata filter applied to the search (the search API's filter language).
    #[serde(default)]
    pub filter: Option<Value>,
    /// Sources scoring below this are left out (vector score; vector and hybrid modes).
    #[serde(default)]
    pub min_score: Option<f32>,
    /// How sources are searched: `vector` (default), `lexical` or `hybrid`.
    #[serde(default)]
    pub mode: crate::store::SearchMode,
    /// Answer 503 instead of an ungrounded answer when the search fails.
    #[serde(default)]
    pub require_retrieval: bool,
    /// Most requests in flight on this route; more get 429.
    #[serde(default = "defaults::max_concurrent")]
    pub max_concurrent: usize,
}

mod defaults {
    pub fn connect_timeout_ms() -> u64 {
        2_000
    }
    pub fn first_token_timeout_ms() -> u64 {
        60_000
    }
    pub fn idle_timeout_ms() -> u64 {
        30_000
    }
    pub fn total_timeout_ms() -> u64 {
        600_000
    }
    pub fn max_concurrent() -> usize {
        64
    }
    pub fn k() -> usize {
        4
    }
}

impl UpstreamSettings {
    /// The connection timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    /// The first-token deadline.
    pub fn first_token_timeout(&self) -> Duration {
        Duration::from_millis(self.first_token_timeout_ms)
    }
    /// The idle-gap limit.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
    /// The whole-answer deadline.
    pub fn total_timeout(&self) -> Duration {
        Duration::from_millis(self.total_timeout_ms)
    }
}

/// Whether `name` is a usable upstream or route name: 1 to 64 of `A-Z a-z 0-9 - _ . : /`.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':' | b'/'))
}

impl LlmSettings {
    /// Checks every value; the error names the key and the reason.
    pub fn validate(&self) -> Result<()> {
        positive("llm.max_messages", self.max_messages as u64)?;
        positive("llm.max_body_bytes", self.max_body_bytes as u64)?;
        positive("llm.probe_interval_ms", self.probe_interval_ms)?;
        positive("llm.max_source_chars", self.max_source_chars as u64)?;
        if !self.grounding_template.contains("{sources}") {
            return Err(Error::config(
                "llm.grounding_template",
                "must contain {sources}, where the sources go",
            ));
        }
        let mut names = HashSet::new();
        for (i, u) in self.upstreams.iter().enumerate() {
            let key = |k: &str| format!("llm.upstreams[{i}].{k}");
            if !valid_name(&u.name) {
                return Err(Error::config(
                    key("name"),
                    "must be 1 to 64 characters of A-Z a-z 0-9 - _ . : /",
                ));
            }
            if !names.insert(u.name.as_str()) {
                return Err(Error::config(
                    key("name"),
                    format!("{:?} is defined twice", u.name),
                ));
            }
            let url = u.base_url.trim_end_matches('/');
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"));
            match rest {
                Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => {}
                _ => {
                    return Err(Error::config(
                        key("base_url"),
                        "must be an http:// or https:// URL such as http://127.0.0.1:8081/v1",
                    ))
                }
            }
            if u.base_url.contains('@') {
                return Err(Error::config(
                    key("base_url"),
                    "must not carry credentials; use api_key_file",
                ));
            }
            if let Some(m) = &u.model {
                if m.trim().is_empty() {
                    return Err(Error::config(key("model"), "must not be empty when set"));
                }
            }
            for (k, v) in [
                ("connect_timeout_ms", u.connect_timeout_ms),
                ("first_token_timeout_ms", u.first_token_timeout_ms),
                ("idle_timeout_ms", u.idle_timeout_ms),
                ("total_timeout_ms", u.total_timeout_ms),
            ] {
                positive(&key(k), v)?;
            }
            if u.first_token_timeout_ms > u.total_timeout_ms {
                return Err(Error::config(
                    key("first_token_timeout_ms"),
                    "must not exceed total_timeout_ms",
                ));
            }
            positive(&key("max_concurrent"), u.max_concurrent as u64)?;
        }
        let mut routes = HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            let key = |k: &str| format!("llm.routes[{i}].{k}");
            if !valid_name(&r.name) {
                return Err(Error::config(
                    key("name"),
                    "must be 1 to 64 characters of A-Z a-z 0-9 - _ . : /",
                ));
            }
            if !routes.insert(r.name.as_str()) {
                return Err(Error::config(
                    key("name"),
                    format!("{:?} is defined twice", r.name),
                ));
            }
            if r.upstreams.is_empty() {
                return Err(Error::config(
                    key("upstreams"),
                    "must name at least one upstream",
                ));
            }
            let mut seen = HashSet::new();
            for u in &r.upstreams {
                if !names.contains(u.as_str()) {
                    return Err(Error::config(
                        key("upstreams"),
                        format!("{u:?} is not defined in [[llm.upstreams]]"),
                    ));
                }
                if !seen.insert(u.as_str()) {
                    return Err(Error::config(
                        key("upstreams"),
                        format!("{u:?} is listed twice"),
                    ));
                }
            }
            for c in &r.collections {
                validate_collection_name(c)
                    .map_err(|e| Error::config(key("collections"), e.to_string()))?;
            }
            if r.k == 0 || r.k > 100 {
                return Err(Error::config(key("k"), "must be 1 to 100"));
            }
            if let Some(f) = &r.filter {
                Filter::from_json(f).map_err(|e| Error::config(key("filter"), e.to_string()))?;
            }
            if let Some(s) = r.min_score {
                if !s.is_finite() {
                    return Err(Error::config(key("min_score"), "must be a finite number"));
                }
            }
            if r.require_retrieval && r.collections.is_empty() {
                return Err(Error::config(
                    key("require_retrieval"),
                    "needs collections to search",
                ));
            }
            positive(&key("max_concurrent"), r.max_concurrent as u64)?;
        }
        Ok(())
    }
}

fn positive(key: &str, v: u64) -> Result<()> {
    if v == 0 {
        return Err(Error::config(key, "must be greater than 0"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(name: &str) -> UpstreamSettings {
        toml_like(&format!(
            r#"{{"name": "{name}", "base_url": "http://127.0.0.1:9/v1"}}"#
        ))
    }

    fn toml_like<T: serde::de::DeserializeOwned>(json: &str) -> T {
        serde_json::from_str(json).unwrap()
    }

    fn settings() -> LlmSettings {
        LlmSettings {
            upstreams: vec![upstream("local"), upstream("remote")],
            routes: vec![toml_like(
                r#"{"name": "docs-chat", "upstreams": ["local", "remote"], "collections": ["docs"]}"#,
            )],
            ..LlmSettings::default()
        }
    }

    #[test]
    fn defaults_and_a_worked_example_validate() {
        LlmSettings::default().validate().unwrap();
        let s = settings();
        s.validate().unwrap();
        assert_eq!(s.routes[0].k, 4);
        assert_eq!(
            s.upstreams[0].first_token_timeout(),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn mistakes_are_named_by_key() {
        let bad = |f: &dyn Fn(&mut LlmSettings), key: &str| {
            let mut s = settings();
            f(&mut s);
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{e} should name {key}");
        };
        bad(
            &|s| s.routes[0].upstreams.push("nowhere".into()),
            "llm.routes[0].upstreams",
        );
        bad(
            &|s| s.routes[0].upstreams.clear(),
            "llm.routes[0].upstreams",
        );
        bad(
            &|s| s.upstreams[1].name = "local".into(),
            "llm.upstreams[1].name",
        );
        bad(
            &|s| s.upstreams[0].base_url = "ftp://x".into(),
            "llm.upstreams[0].base_url",
        );
        bad(
            &|s| s.upstreams[0].base_url = "http://user:pw@host/v1".into(),
            "llm.upstreams[0].base_url",
        );
        bad(
            &|s| s.upstreams[0].idle_timeout_ms = 0,
            "llm.upstreams[0].idle_timeout_ms",
        );
        bad(
            &|s| s.upstreams[0].first_token_timeout_ms = s.upstreams[0].total_timeout_ms + 1,
            "first_token_timeout_ms",
        );
        bad(&|s| s.routes[0].k = 0, "llm.routes[0].k");
        bad(
            &|s| s.routes[0].filter = Some(serde_json::json!({"year": {"$bogus": 1}})),
            "llm.routes[0].filter",
        );
        bad(
            &|s| s.routes[0].collections = vec!["bad name".into()],
            "llm.routes[0].collections",
        );
        bad(
            &|s| s.grounding_template = "no placeholder".into(),
            "llm.grounding_template",
        );
        bad(&|s| s.routes[0].name = String::new(), "llm.routes[0].name");
    }
}
