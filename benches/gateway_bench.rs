//! What the chat gateway adds over calling a fast local upstream directly: latency percentiles
//! of non-streamed chats at increasing open-loop request rates (direct and through
//! `aistack serve`, interleaved: each path gets `rate` per second at once), time to first token of streams, and the server's memory with many streams
//! open. The upstream is an OpenAI-shaped server in this process answering at once; client,
//! upstream and gateway share the machine. Prints one JSON line per measurement.
//!
//! Usage: `gateway-bench AISTACK_BINARY [SECONDS_PER_RATE] [RATES] [OPEN_STREAMS]`
//! e.g. `gateway-bench target/release/aistack 10 100,250,500,1000,2000 1000`

use std::convert::Infallible;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aistack_benches::{free_port, model_dir, ServerProcess};
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use futures::StreamExt;
use serde_json::{json, Value};

fn chunk(text: &str) -> String {
    let c = json!({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1,
        "model": "bench", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
    format!("data: {c}\n\n")
}

/// The upstream: a whole answer at once, or 8 chunks and `[DONE]`; with `"hold": true` one
/// chunk and then silence, to keep a stream open.
async fn answer(Json(body): Json<Value>) -> Response {
    if body["stream"] != true {
        return Json(json!({"id": "chatcmpl-bench", "object": "chat.completion", "created": 1,
            "model": "bench", "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "A short answer of about ten tokens, as a test."}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 10, "total_tokens": 22}}))
        .into_response();
    }
    let hold = body["hold"] == true;
    let events: Vec<String> = if hold {
        vec![chunk("first")]
    } else {
        (0..8)
            .map(|i| chunk(&format!("t{i} ")))
            .chain(["data: [DONE]\n\n".to_string()])
            .collect()
    };
    let s = futures::stream::iter(events.into_iter().map(Ok::<_, Infallible>));
    let s: futures::stream::BoxStream<'static, Result<String, Infallible>> = if hold {
        Box::pin(s.chain(futures::stream::pending()))
    } else {
        Box::pin(s)
    };
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(s))
        .unwrap()
}

/// Starts the upstream on its own one-thread runtime (as a separate server process would be).
fn start_upstream() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new()
                .route("/v1/chat/completions", post(answer))
                .route(
                    "/v1/models",
                    get(|| async { Json(json!({"object": "list", "data": []})) }),
                );
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    format!("http://{}/v1", rx.recv().unwrap())
}

fn rss_mib(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib / 1024.0
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn request(stream: bool) -> Value {
    json!({"model": "bench", "stream": stream, "max_tokens": 16,
        "messages": [{"role": "user", "content": "Say something short."}]})
}

/// Open loop at `rate` per second to each of `urls` for `secs`, their requests interleaved so
/// that both paths see the same machine at the same moments. Each request is timed from when it
/// was due, so a slow server cannot hide its queueing. Returns, per URL, sorted latencies, the
/// failures and the achieved rate.
async fn open_loop(
    client: &reqwest::Client,
    urls: &[&str],
    rate: u64,
    secs: u64,
) -> Vec<(Vec<Duration>, usize, f64)> {
    let k = urls.len() as u64;
    let n = rate * secs * k;
    let start = Instant::now() + Duration::from_millis(50);
    let body = Arc::new(request(false).to_string());
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / (rate * k) as f64);
        tokio::time::sleep_until(due.into()).await;
        let which = (i % k) as usize;
        let (c, u, b) = (client.clone(), urls[which].to_string(), body.clone());
        tasks.push(tokio::spawn(async move {
            let r = c
                .post(u)
                .header("content-type", "application/json")
                .body(b.as_ref().clone())
                .send()
                .await;
            let ok = match r {
                Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                _ => false,
            };
            (which, ok, due.elapsed())
        }));
    }
    let mut out: Vec<(Vec<Duration>, usize, f64)> =
        urls.iter().map(|_| (Vec::new(), 0, 0.0)).collect();
    for t in tasks {
        let (which, ok, d) = t.await.unwrap();
        if ok {
            out[which].0.push(d);
        } else {
            out[which].1 += 1;
        }
    }
    let took = start.elapsed().as_secs_f64();
    for o in &mut out {
        o.0.sort();
        o.2 = (rate * secs) as f64 / took;
    }
    out
}

/// Time to the first chunk of `n` streams, one after another.
async fn first_tokens(client: &reqwest::Client, url: &str, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = client.post(url).json(&request(true)).send().await.unwrap();
        let mut s = r.bytes_stream();
        s.next().await.unwrap().unwrap();
        out.push(t.elapsed());
        while s.next().await.is_some() {}
    }
    out.sort();
    out
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bin = args
        .get(1)
        .expect("usage: gateway-bench AISTACK_BINARY [SECONDS] [RATES] [STREAMS]");
    let secs: u64 = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(10);
    let rates: Vec<u64> = args
        .get(3)
        .map(|s| s.split(',').map(|r| r.parse().unwrap()).collect())
        .unwrap_or_else(|| vec![100, 250, 500, 1000, 2000]);
    let streams: usize = args.get(4).map(|s| s.parse().unwrap()).unwrap_or(1000);

    let upstream = start_upstream();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
max_connections = 8192

[[llm.upstreams]]
name = "local"
base_url = "{upstream}"
max_concurrent = 8192

[[llm.routes]]
name = "bench"
upstreams = ["local"]
max_concurrent = 8192
"#
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new(bin)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .args([
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--model",
            &model_dir(),
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("aistack serve starts");
    let pid = child.id();
    let _server = ServerProcess(child);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let gateway = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let direct = format!("{upstream}/chat/completions");
    let t = Instant::now();
    while client
        .get(format!("http://127.0.0.1:{port}/v1/models"))
        .send()
        .await
        .map(|r| !r.status().is_success())
        .unwrap_or(true)
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Warm both paths' connection pools and caches.
    open_loop(&client, &[&direct, &gateway], 200, 1).await;
    for &rate in &rates {
        let mut r = open_loop(&client, &[&direct, &gateway], rate, secs).await;
        let (g, g_failed, g_rate) = r.pop().unwrap();
        let (d, d_failed, d_rate) = r.pop().unwrap();
        let (d50, d99, g50, g99) = (
            percentile(&d, 0.5),
            percentile(&d, 0.99),
            percentile(&g, 0.5),
            percentile(&g, 0.99),
        );
        println!(
            "{}",
            json!({"measure": "non_streaming", "rate": rate, "seconds": secs,
                "direct_ms": {"p50": d50, "p99": d99, "failed": d_failed, "achieved_rate": d_rate},
                "gateway_ms": {"p50": g50, "p99": g99, "failed": g_failed, "achieved_rate": g_rate},
                "added_ms": {"p50": g50 - d50, "p99": g99 - d99}})
        );
    }
    let d = first_tokens(&client, &direct, 300).await;
    let g = first_tokens(&client, &gateway, 300).await;
    println!(
        "{}",
        json!({"measure": "time_to_first_token", "streams": 300,
            "direct_ms": {"p50": percentile(&d, 0.5), "p99": percentile(&d, 0.99)},
            "gateway_ms": {"p50": percentile(&g, 0.5), "p99": percentile(&g, 0.99)},
            "added_ms": {"p50": percentile(&g, 0.5) - percentile(&d, 0.5),
                         "p99": percentile(&g, 0.99) - percentile(&d, 0.99)}})
    );
    // Memory with `streams` streams open at once, each past its first chunk.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_mib(pid);
    let mut held = Vec::with_capacity(streams);
    let mut body = request(true);
    body["hold"] = json!(true);
    let opened = futures::stream::iter(0..streams)
        .map(|_| {
            let (c, u, b) = (client.clone(), gateway.clone(), body.clone());
            async move {
                let r = c.post(u).json(&b).send().await.unwrap();
                assert!(r.status().is_success(), "{}", r.status());
                let mut s = r.bytes_stream();
                s.next().await.unwrap().unwrap();
                s
            }
        })
        .buffer_unordered(64);
    futures::pin_mut!(opened);
    while let Some(s) = opened.next().await {
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = rss_mib(pid);
    println!(
        "{}",
        json!({"measure": "open_streams", "streams": held.len(), "rss_before_mib": before,
            "rss_with_streams_mib": during, "added_mib": during - before,
            "added_kib_per_stream": (during - before) * 1024.0 / held.len() as f64})
    );
    drop(held);
}
