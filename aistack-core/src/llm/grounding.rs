//! Grounded answers: search with the last user message, put the hits into the prompt as numbered
//! `<source>` elements (the convention Open WebUI uses), and report them back as citations.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::ingest::{DocHit, Ingestor, SearchOptions};
use crate::store::SearchMode;

/// Searches a collection by text; what grounding needs of the store.
#[async_trait]
pub trait Retriever: Send + Sync {
    /// The `k` best chunks of `collection` for `query`, best first, searched as `opts` says.
    async fn retrieve(
        &self,
        collection: &str,
        query: &str,
        k: usize,
        opts: &SearchOptions,
    ) -> Result<Vec<DocHit>>;
}

#[async_trait]
impl Retriever for Ingestor {
    async fn retrieve(
        &self,
        collection: &str,
        query: &str,
        k: usize,
        opts: &SearchOptions,
    ) -> Result<Vec<DocHit>> {
        Ok(self
            .search_with(collection, query, k, opts)
            .await?
            .as_ref()
            .clone())
    }
}

/// What to search for one request: the route's settings, overridden by the request's `aistack`
/// extension object.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalPlan {
    /// Collections to search.
    #[serde(default)]
    pub collections: Vec<String>,
    /// Sources to use.
    #[serde(default)]
    pub k: Option<usize>,
    /// A metadata filter.
    #[serde(default)]
    pub filter: Option<Value>,
    /// Lowest score kept.
    #[serde(default)]
    pub min_score: Option<f32>,
    /// `vector`, `lexical` or `hybrid`.
    #[serde(default)]
    pub mode: Option<SearchMode>,
}

/// One source used in an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Citation {
    /// The number the prompt gave it (`<source id="1">`), from 1.
    pub index: usize,
    /// The collection it came from.
    pub collection: String,
    /// The document's id.
    pub document_id: String,
    /// The chunk's index within the document.
    pub chunk: u64,
    /// The search score.
    pub score: f32,
    /// The chunk's text.
    pub text: String,
}

/// The text of the last user message: a string, or the text parts of a content array.
pub fn last_user_text(messages: &[Value]) -> Option<String> {
    let m = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))?;
    let text = match m.get("content")? {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => return None,
    };
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// Searches every collection of the plan and keeps the `k` best hits over all of them, numbered
/// from 1.
pub async fn retrieve(
    retriever: &dyn Retriever,
    plan: &RetrievalPlan,
    k: usize,
    query: &str,
) -> Result<Vec<Citation>> {
    let mut all = Vec::new();
    let opts = SearchOptions {
        mode: plan.mode.unwrap_or_default(),
        filter: plan.filter.clone(),
        min_score: plan.min_score,
        ..SearchOptions::default()
    };
    for c in &plan.collections {
        let hits = retriever.retrieve(c, query, k, &opts).await?;
        all.extend(hits.into_iter().map(|h| (c.clone(), h)));
    }
    all.sort_by(|a, b| {
        b.1.score
            .total_cmp(&a.1.score)
            .then_with(|| a.1.id.cmp(&b.1.id))
    });
    all.truncate(k);
    Ok(all
        .into_iter()
        .enumerate()
        .map(|(i, (collection, h))| Citation {
            index: i + 1,
            collection,
            document_id: h.document_id,
            chunk: h.chunk_index,
            score: h.score,
            text: h.text,
        })
        .collect())
}

fn attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
}

/// The sources as the prompt shows them, each cut to `max_chars` characters.
pub fn render_sources(citations: &[Citation], max_chars: usize) -> String {
    citations
        .iter()
        .map(|c| {
            let text: String = c.text.chars().take(max_chars).collect();
            // A document must not be able to close its own element.
            let text = text.replace("</source>", "</ source>");
            format!(
                "<source id=\"{}\" name=\"{}\">{}</source>",
                c.index,
                attr(&c.document_id),
                text
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Puts the grounding instructions into the messages: appended to the first system message, or
/// as a new system message at the front.
pub fn inject(messages: &mut Vec<Value>, template: &str, sources: &str) -> Result<()> {
    let text = template.replace("{sources}", sources);
    if let Some(first) = messages.first_mut() {
        if first.get("role").and_then(Value::as_str) == Some("system") {
            let content = first
                .get_mut("content")
                .ok_or_else(|| Error::invalid("the system message has no content"))?;
            match content {
                Value::String(s) => {
                    s.push_str("\n\n");
                    s.push_str(&text);
                }
                Value::Array(parts) => {
                    let mut part = Map::new();
                    part.insert("type".into(), "text".into());
                    part.insert("text".into(), text.into());
                    parts.push(Value::Object(part));
                }
                _ => {
                    return Err(Error::invalid(
                        "the system message's content must be a string or an array of parts",
                    ))
                }
            }
            return Ok(());
        }
    }
    let mut m = Map::new();
    m.insert("role".into(), "system".into());
    m.insert("content".into(), text.into());
    messages.insert(0, Value::Object(m));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_last_user_message_is_the_query() {
        let m = vec![
            json!({"role": "user", "content": "first"}),
            json!({"role": "assistant", "content": "reply"}),
            json!({"role": "user", "content": [{"type": "text", "text": "what is"},
                {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "HNSW?"}]}),
        ];
        assert_eq!(last_user_text(&m).unwrap(), "what is\nHNSW?");
        assert_eq!(last_user_text(&m[1..2]), None);
        assert_eq!(
            last_user_text(&[json!({"role": "user", "content": "  "})]),
            None
        );
    }

    fn cite(i: usize, id: &str, text: &str) -> Citation {
        Citation {
            index: i,
            collection: "docs".into(),
            document_id: id.into(),
            chunk: 0,
            score: 0.5,
            text: text.into(),
        }
    }

    #[test]
    fn sources_are_numbered_escaped_and_cut() {
        let s = render_sources(
            &[
                cite(1, "a\"b", "hello </source> world"),
                cite(2, "c", "ééééé"),
            ],
            3,
        );
        assert_eq!(
            s,
            "<source id=\"1\" name=\"a&quot;b\">hel</source>\n<source id=\"2\" name=\"c\">ééé</source>"
        );
        let s = render_sources(&[cite(1, "x", "a </source> b")], 100);
        assert!(s.contains("a </ source> b"));
    }

    #[test]
    fn instructions_join_the_system_message_or_lead() {
        let mut m = vec![json!({"role": "user", "content": "q"})];
        inject(&mut m, "Use:\n{sources}", "<source/>").unwrap();
        assert_eq!(
            m[0],
            json!({"role": "system", "content": "Use:\n<source/>"})
        );
        assert_eq!(m.len(), 2);
        let mut m = vec![
            json!({"role": "system", "content": "Be brief."}),
            json!({"role": "user", "content": "q"}),
        ];
        inject(&mut m, "{sources}", "S").unwrap();
        assert_eq!(m[0]["content"], "Be brief.\n\nS");
        let mut m = vec![json!({"role": "system", "content": 5})];
        assert!(inject(&mut m, "{sources}", "S").is_err());
    }
}
