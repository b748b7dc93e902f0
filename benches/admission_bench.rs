//! Admission under overload: closed-loop clients POST `/v1/embeddings` (8 sentences each, or
//! `--texts N`, the embedding cache off) to a real `aistack serve` with 16 request slots.
//!
//! A first server admits by count only (`embed.max_queue_wait_ms = 0`): one client (unloaded),
//! 16 clients (as many as there are slots: the goodput a full server keeps up), then 2, 3, 4 and
//! 8 clients (the latency and goodput the model's batch efficiency allows at each depth, with no
//! refusals; `--no-curve` leaves these out), then 64 clients (4× the slots). A second server
//! admits by wait time at the given bound (`auto`, the default: the server's own calibrated
//! bound, as a default server runs): after a warm-up with its slots full, 64 clients, then 64
//! that ignore the retry hints and come back after 10 ms. Its goals are held against the first
//! server's unloaded p99 and slots-full goodput. With `--bulk`, the second server then takes
//! bulk work: 1, 2, 4 and 8 clients each posting six requests of 32 texts of 120 words (about
//! 160 tokens each), as `embed_documents` does, which must all be answered 200.
//!
//! A refused client waits what the answer says (`retry-after-ms`, else `Retry-After`, plus up to
//! 50% jitter), as OpenAI's client does. Prints one JSON line per phase and a verdict against the
//! hardening issue's goals: admitted p99 ≤ 3× the unloaded p99, rejections answered in ≤ 10 ms
//! at p99, goodput ≥ 90% of the unloaded maximum.
//!
//! Usage: `admission-bench AISTACK_BINARY [SECONDS_PER_PHASE] [MAX_QUEUE_WAIT_MS|auto]
//! [--no-curve] [--texts N] [--bulk]`, e.g. `admission-bench target/release/aistack 15 auto`

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aistack_benches::{free_port, model_dir, sentences, ServerProcess};
use serde_json::{json, Value};
use tokio::sync::Mutex;

/// Starts `aistack serve` with 16 request slots, no embedding cache, and `max_queue_wait_ms`
/// (`None`: unset, so the server calibrates it); returns it and its base URL once it is ready.
async fn start(
    bin: &str,
    max_queue_wait_ms: Option<u64>,
    client: &reqwest::Client,
) -> (ServerProcess, String) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = Command::new(bin);
    if let Some(ms) = max_queue_wait_ms {
        cmd.env("AISTACK__EMBED__MAX_QUEUE_WAIT_MS", ms.to_string());
    }
    let child = cmd
        .arg("serve")
        .args([
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--model",
            &model_dir(),
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("AISTACK__SERVER__MAX_CONCURRENT_REQUESTS", "16")
        .env("AISTACK__CACHE__EMBEDDINGS_MAX_BYTES", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("aistack serve starts");
    let server = ServerProcess(child);
    let base = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{base}/health")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the server never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The temporary directory must outlive the server: leak it for the process's lifetime.
    std::mem::forget(dir);
    (server, base)
}

/// What one phase saw.
#[derive(Default)]
struct Tally {
    ok: Vec<Duration>,
    refused: Vec<Duration>,
    retry_after_s: Vec<u64>,
    failed: u64,
}

/// Texts in one request of the closed-loop phases (`--texts`).
static TEXTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(8);

fn ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// Runs `clients` closed-loop clients for `secs` against `base`; each request is `texts`
/// sentences picked from the corpus in a client's own order.
async fn phase(
    client: &reqwest::Client,
    base: &str,
    clients: usize,
    secs: u64,
    corpus: &Arc<Vec<String>>,
    honour: bool,
) -> Tally {
    let texts = TEXTS.load(std::sync::atomic::Ordering::Relaxed);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let end = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (client, tally, corpus) = (client.clone(), tally.clone(), corpus.clone());
            let url = format!("{base}/v1/embeddings");
            tokio::spawn(async move {
                let mut i = c * 7919;
                while Instant::now() < end {
                    let input: Vec<&str> = (0..texts)
                        .map(|k| corpus[(i + k * 211) % corpus.len()].as_str())
                        .collect();
                    i += texts;
                    let t = Instant::now();
                    let r = client
                        .post(&url)
                        .json(&json!({"input": input, "model": "all-MiniLM-L6-v2"}))
                        .send()
                        .await;
                    let status = r.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
                    let header = |name: &str| {
                        r.as_ref().ok().and_then(|r| {
                            r.headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.parse::<u64>().ok())
                        })
                    };
                    let retry = header("retry-after");
                    let retry_ms = header("retry-after-ms");
                    let body_ok = match r {
                        Ok(r) if status == 200 => r
                            .json::<Value>()
                            .await
                            .is_ok_and(|v| v["data"].as_array().is_some_and(|d| d.len() == texts)),
                        Ok(r) => r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    let took = t.elapsed();
                    let mut tally = tally.lock().await;
                    match (status, body_ok) {
                        (200, true) => tally.ok.push(took),
                        (429, true) => {
                            tally.refused.push(took);
                            tally.retry_after_s.extend(retry);
                        }
                        _ => tally.failed += 1,
                    }
                    drop(tally);
                    if status == 429 {
                        // As OpenAI's client does: `retry-after-ms` first, then `Retry-After`;
                        // plus up to 50% jitter so refused clients do not return in step. A
                        // client that ignores both comes back after 10 ms.
                        let base = match (retry_ms, retry, honour) {
                            (Some(ms), _, true) => ms,
                            (None, Some(s), true) => s * 1000,
                            _ => 10,
                        };
                        i = i
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let jitter = (i as u64 >> 33) % (base / 2 + 1);
                        tokio::time::sleep(Duration::from_millis(base + jitter)).await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut tally = Arc::try_unwrap(tally).ok().unwrap().into_inner();
    tally.ok.sort();
    tally.refused.sort();
    tally
}

fn report(name: &str, clients: usize, secs: u64, t: &Tally) -> (f64, f64, f64) {
    let goodput = t.ok.len() as f64 / secs as f64;
    let line = json!({
        "phase": name,
        "clients": clients,
        "goodput_rps": (goodput * 10.0).round() / 10.0,
        "admitted": t.ok.len(),
        "admitted_p50_ms": ms(&t.ok, 0.5),
        "admitted_p99_ms": ms(&t.ok, 0.99),
        "refused": t.refused.len(),
        "refused_p50_ms": ms(&t.refused, 0.5),
        "refused_p99_ms": ms(&t.refused, 0.99),
        "retry_after_s_max": t.retry_after_s.iter().max(),
        "failed": t.failed,
    });
    println!("{line}");
    (goodput, ms(&t.ok, 0.99), ms(&t.refused, 0.99))
}

/// A text of `words` words, different for every `seed` (so no cache could answer it).
fn bulk_text(corpus: &[String], seed: usize, words: usize) -> String {
    let mut out = Vec::with_capacity(words);
    let mut i = seed.wrapping_mul(2_654_435_761);
    while out.len() < words {
        i = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let sentence = &corpus[(i >> 33) % corpus.len()];
        out.extend(sentence.split_whitespace().take(words - out.len()));
    }
    out.join(" ")
}

/// `clients` clients each posting six requests of 32 texts of 120 words; prints the answers'
/// statuses and latency.
async fn bulk(client: &reqwest::Client, base: &str, clients: usize, corpus: &Arc<Vec<String>>) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (client, corpus) = (client.clone(), corpus.clone());
            let url = format!("{base}/v1/embeddings");
            tokio::spawn(async move {
                let mut out = Vec::new();
                for r in 0..6 {
                    let input: Vec<String> = (0..32)
                        .map(|k| bulk_text(&corpus, (clients * 1000 + c * 100 + r) * 32 + k, 120))
                        .collect();
                    let t = Instant::now();
                    let resp = client
                        .post(&url)
                        .json(&json!({"input": input, "model": "all-MiniLM-L6-v2"}))
                        .send()
                        .await;
                    let status = resp.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
                    if let Ok(r) = resp {
                        let _ = r.bytes().await;
                    }
                    out.push((status, t.elapsed()));
                }
                out
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.extend(t.await.unwrap());
    }
    let mut took: Vec<Duration> = answers.iter().map(|a| a.1).collect();
    took.sort();
    let count = |s: u16| answers.iter().filter(|a| a.0 == s).count();
    println!(
        "{}",
        json!({
            "phase": "bulk",
            "clients": clients,
            "requests": answers.len(),
            "ok": count(200),
            "refused": count(429),
            "other": answers.len() - count(200) - count(429),
            "p50_ms": ms(&took, 0.5),
            "max_ms": ms(&took, 1.0),
            "texts_per_s": ((count(200) * 32) as f64 / started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        })
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: admission-bench AISTACK_BINARY [SECONDS_PER_PHASE] [MAX_QUEUE_WAIT_MS|auto] [--no-curve] [--texts N] [--bulk]";
    let flags: Vec<&String> = args
        .iter()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let bin = flags.first().expect(usage);
    let secs: u64 = flags.get(1).map_or(20, |s| s.parse().expect(usage));
    let bound: Option<u64> = match flags.get(2).map(|s| s.as_str()) {
        None | Some("auto") => None,
        Some(s) => Some(s.parse().expect(usage)),
    };
    let curve = !args.iter().any(|a| a == "--no-curve");
    let bulk_phase = args.iter().any(|a| a == "--bulk");
    if let Some(i) = args.iter().position(|a| a == "--texts") {
        let n: usize = args.get(i + 1).and_then(|s| s.parse().ok()).expect(usage);
        TEXTS.store(n, std::sync::atomic::Ordering::Relaxed);
    }
    let corpus = Arc::new(sentences());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();

    // Admission by count only: its own server.
    let (server, base) = start(bin, Some(0), &client).await;
    // Warm up (first passes allocate), then the phases.
    phase(&client, &base, 2, 2, &corpus, true).await;
    let one = phase(&client, &base, 1, secs, &corpus, true).await;
    let (_, unloaded_p99, _) = report("unloaded", 1, secs, &one);
    let full = phase(&client, &base, 16, secs, &corpus, true).await;
    let (max_goodput, _, _) = report("slots_full", 16, secs, &full);
    if curve {
        for c in [2usize, 3, 4, 8] {
            let t = phase(&client, &base, c, secs, &corpus, true).await;
            report("closed_loop", c, secs, &t);
        }
    }
    let by_count = phase(&client, &base, 64, secs, &corpus, true).await;
    report("overload_by_count", 64, secs, &by_count);
    drop(server);

    // Admission by wait: a second server, warmed with its slots full, measured against the
    // first's unloaded p99 and slots-full goodput.
    let (_server, base) = start(bin, bound, &client).await;
    let health: Value = client
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let queue_wait = health["model"]["queue_wait"].clone();
    println!(
        "{}",
        json!({"phase": "bounded_server", "queue_wait": queue_wait})
    );
    phase(&client, &base, 2, 2, &corpus, true).await;
    phase(&client, &base, 16, secs, &corpus, true).await;
    let by_wait = phase(&client, &base, 64, secs, &corpus, true).await;
    let (goodput, p99, refused_p99) = report("overload_by_wait", 64, secs, &by_wait);
    // Clients that ignore the retry hints and come back after 10 ms.
    let hammer = phase(&client, &base, 64, secs, &corpus, false).await;
    let (_, _, hammered_p99) = report("overload_by_wait_ignoring_retry_after", 64, secs, &hammer);
    let refused_p99 = refused_p99.max(hammered_p99);
    println!(
        "{}",
        json!({
            "max_queue_wait_ms": queue_wait["bound_ms"],
            "queue_wait_source": queue_wait["source"],
            "texts_per_request": TEXTS.load(std::sync::atomic::Ordering::Relaxed),
            "admitted_p99_over_unloaded_p99": (p99 / unloaded_p99 * 100.0).round() / 100.0,
            "goal_admitted_p99": p99 <= 3.0 * unloaded_p99,
            "refused_p99_ms": refused_p99,
            "goal_refused_p99": refused_p99.is_nan() || refused_p99 <= 10.0,
            "goodput_over_max": (goodput / max_goodput * 1000.0).round() / 1000.0,
            "goal_goodput": goodput >= 0.9 * max_goodput,
        })
    );
    if bulk_phase {
        // Let the overload drain before the bulk clients come.
        tokio::time::sleep(Duration::from_secs(2)).await;
        for clients in [1usize, 2, 4, 8] {
            bulk(&client, &base, clients, &corpus).await;
        }
    }
}
