//! A committed stream, passed to the client event by event as the upstream sends it. What the
//! client must never see is a clean end of an incomplete answer: an upstream that breaks off,
//! stalls past the idle gap, sends a malformed chunk or ends without `[DONE]` ends the client's
//! stream with an OpenAI-style error event and then `[DONE]`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use serde_json::{json, Value};
use tokio::sync::OwnedSemaphorePermit;

use super::grounding::Citation;
use super::observe::{AnswerEnd, AnswerOutcome, LlmObserver, TokenUsage};
use super::sse::SseReader;
use crate::error::ErrorKind;
use crate::resilience::CircuitBreaker;

/// The body of an upstream response, as bytes arrive.
pub(crate) type ByteStream =
    Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send + 'static>>;

/// A stream of server-sent event text (`data: ...\n\n`) for the client.
pub type EventStream = Pin<Box<dyn Stream<Item = String> + Send + 'static>>;

/// The usage an OpenAI chunk or answer reports.
pub(crate) fn usage_of(v: &Value) -> Option<TokenUsage> {
    let u = v.get("usage")?;
    Some(TokenUsage {
        prompt_tokens: u.get("prompt_tokens")?.as_u64()?,
        completion_tokens: u
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    })
}

/// The error event that ends a broken stream, then `[DONE]`.
pub fn error_event(message: &str) -> String {
    let e = json!({"error": {
        "message": message,
        "type": "upstream_error",
        "code": ErrorKind::UpstreamFailed.code(),
    }});
    format!("data: {e}\n\ndata: [DONE]\n\n")
}

/// Who and what a stream reports to.
pub(crate) struct StreamContext {
    pub route: String,
    pub upstream: String,
    pub request_id: String,
    pub observer: Arc<dyn LlmObserver>,
    pub breaker: Arc<CircuitBreaker>,
    pub citations: Vec<Citation>,
    /// Whether the client asked for the usage chunk (the gateway always asks upstream).
    pub client_wants_usage: bool,
    pub started: Instant,
    pub idle: Duration,
    pub deadline: Instant,
    /// The model name the client sent, put back where an upstream names its own.
    pub model: Option<String>,
}

struct State {
    ctx: StreamContext,
    reader: SseReader,
    queue: VecDeque<String>,
    rest: ByteStream,
    last_chunk: Instant,
    usage: Option<TokenUsage>,
    id: Option<String>,
    ended: bool,
    _slots: Vec<OwnedSemaphorePermit>,
}

impl State {
    fn end(&mut self, outcome: AnswerOutcome, error: Option<&str>) {
        self.ended = true;
        if let Some(e) = error {
            tracing::warn!(route = %self.ctx.route, upstream = %self.ctx.upstream,
                request_id = %self.ctx.request_id, error = %e, "stream from upstream failed");
            self.ctx
                .breaker
                .record_failure(&crate::Error::Upstream(e.to_string()));
        }
        self.ctx.observer.answer(
            &self.ctx.route,
            &self.ctx.upstream,
            &AnswerEnd {
                outcome,
                total: self.ctx.started.elapsed(),
                usage: self.usage,
            },
        );
    }

    fn citations_event(&self) -> String {
        if self.ctx.citations.is_empty() {
            return String::new();
        }
        let chunk = json!({
            "id": self.id.clone().unwrap_or_default(),
            "object": "chat.completion.chunk",
            "created": 0,
            "model": self.ctx.model.clone().unwrap_or_default(),
            "choices": [],
            "aistack": {"citations": self.ctx.citations},
        });
        format!("data: {chunk}\n\n")
    }

    /// Turns the queued events into client text; `true` once the stream is over.
    fn drain(&mut self, out: &mut String) -> bool {
        while let Some(data) = self.queue.pop_front() {
            if data == "[DONE]" {
                out.push_str(&self.citations_event());
                out.push_str("data: [DONE]\n\n");
                self.end(AnswerOutcome::Complete, None);
                return true;
            }
            let Ok(mut v) = serde_json::from_str::<Value>(&data) else {
                out.push_str(&error_event("the model server sent a malformed chunk"));
                self.end(AnswerOutcome::Failed, Some("malformed chunk"));
                return true;
            };
            if v.get("error").is_some() {
                // The upstream's own error event goes through as it is, then the end.
                out.push_str(&format!("data: {data}\n\ndata: [DONE]\n\n"));
                self.end(
                    AnswerOutcome::Failed,
                    Some("the upstream sent an error event"),
                );
                return true;
            }
            if self.id.is_none() {
                self.id = v.get("id").and_then(Value::as_str).map(str::to_string);
            }
            let usage = usage_of(&v);
            if usage.is_some() {
                self.usage = usage;
            }
            let usage_only = v
                .get("choices")
                .and_then(Value::as_array)
                .is_some_and(|c| c.is_empty());
            if usage.is_some() && !self.ctx.client_wants_usage {
                if usage_only {
                    continue;
                }
                if let Some(o) = v.as_object_mut() {
                    o.remove("usage");
                }
                out.push_str(&format!("data: {v}\n\n"));
                continue;
            }
            out.push_str("data: ");
            out.push_str(&data);
            out.push_str("\n\n");
        }
        false
    }
}

impl Drop for State {
    fn drop(&mut self) {
        if !self.ended {
            // The client went away: dropping `rest` closes the upstream connection, which stops
            // the generation there.
            tracing::info!(route = %self.ctx.route, upstream = %self.ctx.upstream,
                request_id = %self.ctx.request_id, "client disconnected; upstream request cancelled");
            self.ended = true;
            self.ctx.observer.answer(
                &self.ctx.route,
                &self.ctx.upstream,
                &AnswerEnd {
                    outcome: AnswerOutcome::Cancelled,
                    total: self.ctx.started.elapsed(),
                    usage: self.usage,
                },
            );
        }
    }
}

/// The client's stream over a committed upstream stream whose first events are `first`.
pub(crate) fn pass_through(
    ctx: StreamContext,
    reader: SseReader,
    first: Vec<String>,
    rest: ByteStream,
    slots: Vec<OwnedSemaphorePermit>,
) -> EventStream {
    let state = State {
        ctx,
        reader,
        queue: first.into(),
        rest,
        last_chunk: Instant::now(),
        usage: None,
        id: None,
        ended: false,
        _slots: slots,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        if st.ended {
            return None;
        }
        loop {
            let mut out = String::new();
            if st.drain(&mut out) || !out.is_empty() {
                return Some((out, st));
            }
            let now = Instant::now();
            if now >= st.ctx.deadline {
                st.end(AnswerOutcome::Failed, Some("total deadline passed"));
                return Some((
                    error_event("the answer took longer than the upstream's total_timeout_ms"),
                    st,
                ));
            }
            let wait = st.ctx.idle.min(st.ctx.deadline - now);
            match tokio::time::timeout(wait, st.rest.next()).await {
                Err(_) => {
                    let total = Instant::now() >= st.ctx.deadline;
                    let (msg, log) = if total {
                        (
                            "the answer took longer than the upstream's total_timeout_ms",
                            "total deadline passed",
                        )
                    } else {
                        (
                            "the model server sent nothing for longer than idle_timeout_ms",
                            "idle gap exceeded",
                        )
                    };
                    st.end(AnswerOutcome::Failed, Some(log));
                    return Some((error_event(msg), st));
                }
                Ok(None) => {
                    st.end(AnswerOutcome::Failed, Some("ended without [DONE]"));
                    return Some((
                        error_event("the model server ended the stream before it was complete"),
                        st,
                    ));
                }
                Ok(Some(Err(_))) => {
                    st.end(AnswerOutcome::Failed, Some("connection broke mid-stream"));
                    return Some((
                        error_event("the connection to the model server broke mid-answer"),
                        st,
                    ));
                }
                Ok(Some(Ok(bytes))) => {
                    let now = Instant::now();
                    st.ctx
                        .observer
                        .chunk_gap(&st.ctx.route, &st.ctx.upstream, now - st.last_chunk);
                    st.last_chunk = now;
                    match st.reader.push(&bytes) {
                        Ok(events) => st.queue.extend(events),
                        Err(_) => {
                            st.end(AnswerOutcome::Failed, Some("oversized or invalid event"));
                            return Some((
                                error_event("the model server sent a malformed chunk"),
                                st,
                            ));
                        }
                    }
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_events_end_with_done() {
        let e = error_event("broke");
        let mut r = SseReader::new(1024);
        let events = r.push(e.as_bytes()).unwrap();
        assert_eq!(events.len(), 2);
        let v: Value = serde_json::from_str(&events[0]).unwrap();
        assert_eq!(v["error"]["message"], "broke");
        assert_eq!(v["error"]["code"], "upstream_failed");
        assert_eq!(events[1], "[DONE]");
    }

    #[test]
    fn usage_is_read_from_chunks() {
        let v = json!({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}});
        assert_eq!(
            usage_of(&v),
            Some(TokenUsage {
                prompt_tokens: 7,
                completion_tokens: 3
            })
        );
        assert_eq!(usage_of(&json!({"usage": null})), None);
    }
}
