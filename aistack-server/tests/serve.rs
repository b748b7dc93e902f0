//! `aistack serve` (and `aistack mcp`) end to end: the real binary on loopback with the real model,
//! driven over HTTP (and stdio).
//! Only what needs the binary, real connections or the real model is here; the router's own
//! behaviour (auth, error bodies, request ids, limits, metrics) is tested in-process in
//! `router.rs`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use aistack_testing::{cosine, model_dir, reference};
use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{json, Value};

const KEY: &str = "test-key-0123456789abcdef";

/// A running server; killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    base: String,
    /// Every log line after "listening".
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `aistack serve` on a free port with `env` extra settings and `args` extra flags, and
/// waits for its "listening" log line.
fn start(model: &str, env: &[(&str, &str)], args: &[&str]) -> Server {
    start_on(model, None, env, args)
}

/// [`start`] with the data directory `data` (default: a new temporary one).
fn start_on(model: &str, data: Option<&Path>, env: &[(&str, &str)], args: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let data = data.map_or_else(|| dir.path().join("data"), Path::to_path_buf);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aistack"));
    cmd.arg("serve")
        .args(["--bind", "127.0.0.1:0", "--model", model])
        .arg("--data-dir")
        .arg(&data)
        .args(args)
        .env("AISTACK__LOG__LEVEL", "info")
        .env_remove("AISTACK_API_KEY_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("aistack serve starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("the server did not start: {:?}", child.try_wait()));
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if v["message"] == "listening" {
                break v["addr"].as_str().unwrap().parse().unwrap();
            }
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    let log = Arc::new(Mutex::new(Vec::new()));
    let kept = log.clone();
    std::thread::spawn(move || {
        while let Ok(line) = rx.recv() {
            kept.lock().unwrap().push(line);
        }
    });
    Server {
        child,
        addr,
        base: format!("http://{addr}"),
        log,
        _dir: dir,
    }
}

fn model() -> String {
    model_dir().display().to_string()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn wait_ready(s: &Server) {
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = c.get(format!("{}/health", s.base)).send().await {
            if r.status() == StatusCode::OK {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server never became ready");
}

/// Sends `req` and parses the JSON reply.
async fn json_of(req: reqwest::RequestBuilder) -> Value {
    req.send().await.unwrap().json().await.unwrap()
}

/// Checks the error shape and returns the code.
async fn error_code(r: reqwest::Response, status: u16) -> String {
    assert_eq!(r.status().as_u16(), status);
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let v: Value = r.json().await.unwrap();
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert_eq!(e["error_id"].as_str().unwrap().len(), 32, "{v}");
    e["code"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn health_is_503_while_the_model_cannot_load() {
    let s = start(
        "/nonexistent/model-dir",
        &[("AISTACK__EMBED__LOAD_ATTEMPTS", "1")],
        &[],
    );
    let c = client();
    let r = c.get(format!("{}/health", s.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = r.json().await.unwrap();
    assert!(
        ["loading", "failed"].contains(&v["model"]["state"].as_str().unwrap()),
        "{v}"
    );
    assert_eq!(v["store"]["status"], "ok");
    // Public, so it names the model and shows no server path.
    assert_eq!(v["model"]["id"], "unnamed", "{v}");
    assert!(!v.to_string().contains("/nonexistent"), "{v}");
    // Embedding before the model is ready: 503 JSON with Retry-After, not a hang.
    let r = c
        .post(format!("{}/v1/embeddings", s.base))
        .json(&json!({"input": "hi"}))
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(error_code(r, 503).await, "unavailable");
    // An expected state is not an error: no request here was logged at ERROR (the failed load
    // itself is).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = s.log.lock().unwrap();
    let errors: Vec<&String> = log
        .iter()
        .filter(|l| l.contains(r#""level":"ERROR""#) && l.contains(r#""name":"request""#))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(
        log.iter().any(|l| l.contains("request not served")),
        "the 503 is logged at WARN: {log:#?}"
    );
}

#[tokio::test]
async fn openai_and_tei_embeddings_match_the_reference() {
    let s = start(
        &model(),
        &[("AISTACK__SERVER__MODEL_NAME", "all-MiniLM-L6-v2")],
        &[],
    );
    wait_ready(&s).await;
    let c = client();
    let refs = reference();
    for chunk in refs.chunks(32).take(4) {
        let texts: Vec<&str> = chunk.iter().map(|r| r.text.as_str()).collect();
        for format in ["float", "base64"] {
            let r = c
                .post(format!("{}/v1/embeddings", s.base))
                .json(&json!({"input": texts, "model": "all-MiniLM-L6-v2", "encoding_format": format}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["object"], "list");
            assert_eq!(v["model"], "all-MiniLM-L6-v2");
            assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
            for (i, item) in v["data"].as_array().unwrap().iter().enumerate() {
                assert_eq!(item["index"], i);
                let got: Vec<f32> = if format == "float" {
                    serde_json::from_value(item["embedding"].clone()).unwrap()
                } else {
                    let b = base64::engine::general_purpose::STANDARD
                        .decode(item["embedding"].as_str().unwrap())
                        .unwrap();
                    b.chunks(4)
                        .map(|x| f32::from_le_bytes(x.try_into().unwrap()))
                        .collect()
                };
                let cos = cosine(&got, &chunk[i].embedding);
                assert!(cos >= 0.9999, "{}: {cos}", chunk[i].text);
            }
        }
    }
    // TEI shape: an array of arrays.
    let r = c
        .post(format!("{}/embed", s.base))
        .json(&json!({"inputs": refs[0].text, "truncate": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Vec<Vec<f32>> = r.json().await.unwrap();
    assert_eq!(v.len(), 1);
    assert!(cosine(&v[0], &refs[0].embedding) >= 0.9999);
    // normalize=false: the pooled vector before normalization, same direction.
    let r = c
        .post(format!("{}/embed", s.base))
        .json(&json!({"inputs": [refs[0].text], "normalize": false, "truncate": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let raw: Vec<Vec<f32>> = r.json().await.unwrap();
    let norm = raw[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!(
        (norm - 1.0).abs() > 0.05,
        "not the pooled vector: norm {norm}"
    );
    assert!(cosine(&raw[0], &refs[0].embedding) >= 0.9999);
    // Model and dimension checks.
    let r = c
        .post(format!("{}/v1/embeddings", s.base))
        .json(&json!({"input": "x", "model": "text-embedding-3-small"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 404).await, "not_found");
    let r = c
        .post(format!("{}/v1/embeddings", s.base))
        .json(&json!({"input": "x", "dimensions": 385}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "invalid_input");
    // Matryoshka: the first 128 dimensions, unit length again.
    let r: Value = c
        .post(format!("{}/v1/embeddings", s.base))
        .json(&json!({"input": "x", "dimensions": 128}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let v = r["data"][0]["embedding"].as_array().unwrap();
    assert_eq!(v.len(), 128);
    let norm: f64 = v.iter().map(|x| x.as_f64().unwrap().powi(2)).sum::<f64>();
    assert!((norm - 1.0).abs() < 1e-4, "{norm}");
}

#[tokio::test]
async fn ingest_search_delete_over_http() {
    let s = start(&model(), &[], &[]);
    wait_ready(&s).await;
    let c = client();
    let url = |p: &str| format!("{}{p}", s.base);
    let r = c
        .post(url("/v1/collections"))
        .json(&json!({"name": "kb"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["dims"].as_u64(), v["metric"].as_str()),
        (Some(384), Some("cosine"))
    );
    let r = c
        .post(url("/v1/collections"))
        .json(&json!({"name": "kb"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 409).await, "conflict");
    let docs = json!({"documents": [
        {"id": "rust", "text": "Rust is a systems programming language focused on safety.", "metadata": {"lang": "en", "year": 2015}},
        {"id": "cats", "text": "Cats are small carnivorous mammals that purr.", "metadata": {"lang": "en", "year": 2020}},
        {"id": "brot", "text": "Brot wird aus Mehl, Wasser und Hefe gebacken.", "metadata": {"lang": "de", "year": 2021}},
    ]});
    for _ in 0..2 {
        // Twice: idempotent by id.
        let v: Value = json_of(c.post(url("/v1/collections/kb/documents")).json(&docs)).await;
        assert_eq!(v["documents"], 3, "{v}");
    }
    let v: Value = json_of(c.get(url("/v1/collections/kb"))).await;
    assert_eq!(v["count"], 3);
    let search = |body: Value| {
        let c = c.clone();
        let u = url("/v1/collections/kb/search");
        async move {
            let r = c.post(u).json(&body).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.unwrap()
        }
    };
    let v = search(json!({"query": "which animal purrs?", "k": 2})).await;
    assert_eq!(v["hits"][0]["document_id"], "cats");
    assert_eq!(v["hits"][0]["metadata"]["year"], 2020);
    assert!(v["hits"][0]["score"].as_f64().unwrap() > v["hits"][1]["score"].as_f64().unwrap());
    let v = search(json!({"query": "programming", "filter": {"$and": [{"lang": "en"}, {"year": {"$gte": 2016}}]}})).await;
    let ids: Vec<&str> = v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["document_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["cats"]);
    // Vector search with a vector from the embeddings route.
    let e: Value = json_of(
        c.post(url("/v1/embeddings"))
            .json(&json!({"input": "baking bread"})),
    )
    .await;
    let v = search(json!({"vector": e["data"][0]["embedding"], "k": 1})).await;
    assert_eq!(v["hits"][0]["document_id"], "brot");
    // Delete a document: gone from search (no stale cached result).
    let r = c
        .delete(url("/v1/collections/kb/documents/cats"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v = search(json!({"query": "which animal purrs?", "k": 3})).await;
    assert!(
        v["hits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["document_id"] != "cats"),
        "{v}"
    );
    let v: Value = json_of(c.get(url("/v1/collections"))).await;
    assert_eq!(v["collections"][0]["name"], "kb");
    assert_eq!(
        c.delete(url("/v1/collections/kb"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let r = c.delete(url("/v1/collections/kb")).send().await.unwrap();
    assert_eq!(error_code(r, 404).await, "not_found");
}

fn key_file(dir: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("keys");
    std::fs::write(&p, format!("# keys\nanother-key-9876543210\n{KEY}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.display().to_string()
}

#[tokio::test]
async fn overload_gets_429_with_retry_after_and_never_a_dropped_connection() {
    // The request slots are what is under test: admission by wait is off.
    let s = start(
        &model(),
        &[
            ("AISTACK__SERVER__MAX_CONCURRENT_REQUESTS", "2"),
            ("AISTACK__EMBED__MAX_QUEUE_WAIT_MS", "0"),
        ],
        &[],
    );
    wait_ready(&s).await;
    let c = client();
    let texts: Vec<String> = (0..32)
        .map(|i| format!("sentence number {i} about overload and backpressure in servers"))
        .collect();
    let calls = (0..24).map(|j| {
        let c = c.clone();
        let u = format!("{}/v1/embeddings", s.base);
        // Unique texts, so the embedding cache cannot answer them.
        let t: Vec<String> = texts.iter().map(|x| format!("{j}: {x}")).collect();
        async move { c.post(u).json(&json!({"input": t})).send().await }
    });
    let results = futures::future::join_all(calls).await;
    let (mut ok, mut shed) = (0, 0);
    for r in results {
        let r = r.expect("no connection is dropped");
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {
                assert_eq!(r.headers()["retry-after"], "1");
                assert_eq!(error_code(r, 429).await, "overloaded");
                shed += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(ok >= 2 && shed >= 1, "ok {ok}, shed {shed}");
}

#[test]
fn a_trickling_client_is_cut_off_by_the_header_timeout() {
    let s = start(
        "/nonexistent",
        &[
            ("AISTACK__SERVER__HEADER_READ_TIMEOUT_MS", "500"),
            ("AISTACK__EMBED__LOAD_ATTEMPTS", "1"),
        ],
        &[],
    );
    let mut sock = TcpStream::connect(s.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    sock.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut closed = false;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(100));
        if sock.write_all(b"X-Slow: 1\r\n").is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 512];
        sock.set_nonblocking(true).unwrap();
        match sock.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {
                closed = true; // an error response, then the close
                break;
            }
            Err(_) => {}
        }
        sock.set_nonblocking(false).unwrap();
    }
    assert!(closed, "the connection stayed open while headers trickled");
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// Reads until the server closes the connection; returns what came and when the close came.
fn read_until_closed(sock: &mut TcpStream) -> (String, Instant) {
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server kept the connection open: {e}"),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), Instant::now())
}

#[test]
fn silent_and_idle_connections_are_closed_on_time_and_free_their_slots() {
    let s = start(
        "/nonexistent",
        &[
            ("AISTACK__SERVER__HEADER_READ_TIMEOUT_MS", "1000"),
            ("AISTACK__SERVER__MAX_CONNECTIONS", "2"),
            ("AISTACK__EMBED__LOAD_ATTEMPTS", "1"),
        ],
        &[],
    );
    // Two connections that never send a byte take both slots...
    let opened = Instant::now();
    let mut silent: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(s.addr).unwrap())
        .collect();
    // ...and a third client waits in the backlog until the server closes them.
    let waiting = std::thread::spawn({
        let addr = s.addr;
        move || {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            read_until_closed(&mut c).0
        }
    });
    for sock in &mut silent {
        let (got, closed) = read_until_closed(sock);
        assert!(got.is_empty(), "{got}");
        let after = closed - opened;
        assert!(
            after >= Duration::from_millis(950) && after < Duration::from_millis(2500),
            "a silent connection was closed after {after:?}, with the timeout at 1 s"
        );
    }
    let answer = waiting.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");

    // A keep-alive connection that goes quiet after a request is closed as long after it.
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 8192];
    let n = c.read(&mut buf).unwrap();
    let answered = Instant::now();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 503"));
    let (rest, closed) = read_until_closed(&mut c);
    let after = closed - answered;
    assert!(
        after >= Duration::from_millis(950) && after < Duration::from_millis(2500),
        "an idle connection was closed after {after:?} ({rest:?}), with the timeout at 1 s"
    );
}

#[test]
fn a_request_shed_while_its_body_arrives_is_answered_with_connection_close() {
    let s = start(
        "/nonexistent",
        &[
            ("AISTACK__SERVER__MAX_CONCURRENT_REQUESTS", "1"),
            ("AISTACK__SERVER__REQUEST_TIMEOUT_MS", "5000"),
            ("AISTACK__EMBED__LOAD_ATTEMPTS", "1"),
        ],
        &[],
    );
    let head = |len: usize| {
        format!(
            "POST /v1/collections HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {len}\r\n\r\n"
        )
    };
    // The only slot is held by a request whose body is still coming.
    let hold = || {
        let mut holder = TcpStream::connect(s.addr).unwrap();
        holder.write_all(head(100).as_bytes()).unwrap();
        holder.write_all(b"{\"name\"").unwrap();
        holder
    };
    let mut holder = hold();
    // Wait until it holds the slot: a bodiless API request is shed then.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut probe = TcpStream::connect(s.addr).unwrap();
        probe
            .write_all(b"GET /v1/collections HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let (answer, _) = read_until_closed(&mut probe);
        if answer.starts_with("HTTP/1.1 429") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slot was never taken: {answer}"
        );
        // A probe that held the slot when the holder's request came in got the holder shed:
        // it was answered (or closed), so it holds nothing; start it again.
        holder.set_nonblocking(true).unwrap();
        let answered = !matches!(holder.peek(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        holder.set_nonblocking(false).unwrap();
        if answered {
            holder = hold();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Another, shed with most of its body unsent: the answer says the connection closes, and
    // it does, so a client never writes the rest into a dead socket.
    let mut shed = TcpStream::connect(s.addr).unwrap();
    shed.write_all(head(60).as_bytes()).unwrap();
    shed.write_all(b"{\"name\": \"a\"").unwrap();
    let (answer, _) = read_until_closed(&mut shed);
    let lower = answer.to_ascii_lowercase();
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(lower.contains("\r\nconnection: close\r\n"), "{answer}");
    assert!(lower.contains("\r\nretry-after: 1\r\n"), "{answer}");
    assert!(answer.contains("\"overloaded\""), "{answer}");
    drop(holder);
}

#[tokio::test]
async fn tls_serves_https_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cp, kp) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cp, cert.cert.pem()).unwrap();
    std::fs::write(&kp, cert.signing_key.serialize_pem()).unwrap();
    let mut s = start(
        &model(),
        &[],
        &[
            "--tls-cert",
            cp.to_str().unwrap(),
            "--tls-key",
            kp.to_str().unwrap(),
        ],
    );
    let root = reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap();
    let c = reqwest::Client::builder()
        .add_root_certificate(root)
        .resolve("localhost", s.addr)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/health", s.addr.port());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = c.get(&url).send().await.expect("HTTPS works");
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "never ready over TLS");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Plain HTTP on the TLS port gets no answer.
    assert!(client()
        .get(format!("http://{}/health", s.addr))
        .send()
        .await
        .is_err());
    // SIGTERM: a clean exit.
    stop_with_sigterm(&mut s);
}

/// Sends SIGTERM and waits for a successful exit.
fn stop_with_sigterm(s: &mut Server) {
    let pid = s.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

/// A minimal OTLP/HTTP collector (the exporter's counterpart): it keeps every body POSTed to
/// `/v1/traces` and answers with an empty protobuf success.
async fn otlp_collector() -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                kept.lock().unwrap().push(body.to_vec());
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, bodies)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Sends an embeddings request with a request id and, optionally, a W3C `traceparent`.
async fn traced_request(s: &Server, request_id: &str, traceparent: Option<&str>) {
    let mut req = client()
        .post(format!("{}/v1/embeddings", s.base))
        .header("x-request-id", request_id)
        .json(&json!({"input": "traced"}));
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    assert_eq!(req.send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_traces_are_exported_with_the_sampling_ratio() {
    const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
    let trace_id: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&TRACE_ID[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let parent = format!("00-{TRACE_ID}-b7ad6b7169203331-01");

    // Ratio 1: every request's span is exported, in the caller's trace when it sends one.
    let (url, bodies) = otlp_collector().await;
    let mut s = start(
        &model(),
        &[
            ("AISTACK__LOG__OTLP_ENDPOINT", url.as_str()),
            ("AISTACK__LOG__SERVICE_NAME", "aistack-otel-test"),
        ],
        &[],
    );
    wait_ready(&s).await;
    traced_request(&s, "otel-sampled-1", Some(&parent)).await;
    traced_request(&s, "otel-sampled-2", None).await;
    stop_with_sigterm(&mut s); // the exporter flushes on exit
    let all: Vec<u8> = bodies.lock().unwrap().concat();
    assert!(contains(&all, b"aistack-otel-test"), "no service name");
    assert!(contains(&all, b"otel-sampled-1") && contains(&all, b"otel-sampled-2"));
    assert!(
        contains(&all, &trace_id),
        "the caller's trace id was not continued"
    );
    assert!(contains(&all, b"POST /v1/embeddings"));

    // Ratio 0: new traces are dropped; a caller's sampled trace is still followed.
    let (url, bodies) = otlp_collector().await;
    let mut s = start(
        &model(),
        &[
            ("AISTACK__LOG__OTLP_ENDPOINT", url.as_str()),
            ("AISTACK__LOG__OTLP_SAMPLE_RATIO", "0.0"),
        ],
        &[],
    );
    wait_ready(&s).await;
    traced_request(&s, "otel-dropped", None).await;
    traced_request(&s, "otel-followed", Some(&parent)).await;
    stop_with_sigterm(&mut s);
    let all: Vec<u8> = bodies.lock().unwrap().concat();
    assert!(!contains(&all, b"otel-dropped"));
    assert!(contains(&all, b"otel-followed"));
}

/// Runs `tests/<script>` with the server's base URL, the reference file and `extra` arguments;
/// returns its JSON summary line.
async fn run_python_client(s: &Server, script: &str, extra: &[&Path]) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(script);
    let reference = std::env::var("AISTACK_REFERENCE").unwrap_or_else(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/reference/minilm-public.jsonl")
            .display()
            .to_string()
    });
    let out = tokio::process::Command::new("python3")
        .arg(&path)
        .arg(&s.base)
        .arg(&reference)
        .args(extra)
        .output()
        .await
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{script} failed (scripts/test installs its Python packages):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn the_official_openai_python_client_works_unchanged() {
    let s = start(
        &model(),
        &[("AISTACK__SERVER__MODEL_NAME", "all-MiniLM-L6-v2")],
        &[],
    );
    wait_ready(&s).await;
    let v = run_python_client(&s, "openai_client.py", &[]).await;
    assert!(v["lines"].as_u64().unwrap() >= 100, "{v}");
}

/// Writes tiktoken's `cl100k_base.tiktoken` (base64 token bytes and rank, one per line) from the
/// table the server decodes with; tiktoken checks the file's SHA-256, so it must be exact.
fn write_cl100k_ranks(path: &Path) {
    let bpe = tiktoken_rs::cl100k_base_singleton();
    let mut out = String::new();
    for rank in 0..100_256u32 {
        let bytes = bpe._decode_native_and_split(vec![rank]).next().unwrap();
        out.push_str(&base64::engine::general_purpose::STANDARD.encode(bytes));
        out.push_str(&format!(" {rank}\n"));
    }
    std::fs::write(path, out).unwrap();
}

#[tokio::test]
async fn langchain_openai_embeddings_work_with_their_defaults() {
    let s = start(
        &model(),
        &[("AISTACK__SERVER__MODEL_NAME", "all-MiniLM-L6-v2")],
        &[],
    );
    let dir = tempfile::tempdir().unwrap();
    let ranks = dir.path().join("cl100k_base.tiktoken");
    write_cl100k_ranks(&ranks);
    wait_ready(&s).await;
    // Token ids are decoded with cl100k_base: the same text, the same vector.
    let c = client();
    let ids = tiktoken_rs::cl100k_base_singleton().encode_ordinary("The cat sat on the mat.");
    let by_ids = json_of(
        c.post(format!("{}/v1/embeddings", s.base))
            .json(&json!({"input": [ids], "model": "all-MiniLM-L6-v2"})),
    )
    .await;
    let by_text = json_of(
        c.post(format!("{}/v1/embeddings", s.base))
            .json(&json!({"input": "The cat sat on the mat.", "model": "all-MiniLM-L6-v2"})),
    )
    .await;
    assert_eq!(
        by_ids["data"][0]["embedding"],
        by_text["data"][0]["embedding"]
    );
    for bad in [
        json!([[1, 2], "text"]),
        json!([4_000_000_000u32]),
        json!([-1]),
    ] {
        let r = c
            .post(format!("{}/v1/embeddings", s.base))
            .json(&json!({"input": bad}))
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r, 400).await, "invalid_input", "{bad}");
    }
    let v = run_python_client(&s, "langchain_client.py", &[&ranks]).await;
    assert!(v["lines"].as_u64().unwrap() >= 97, "{v}");
}

/// The OpenAPI document against the running server: schemathesis generates requests from it
/// (valid and invalid) and checks every answer. Everything but `positive_data_acceptance` runs:
/// that check expects every schema-valid body to be accepted, and some rules (exactly one of
/// `query` and `vector`, reserved metadata keys, unique ids per request) are not expressible in
/// the schema, so they are refused with a 400 the check would count.
#[tokio::test]
async fn the_openapi_contract_holds_against_the_running_server() {
    let keys = tempfile::tempdir().unwrap();
    let kf = key_file(keys.path());
    let s = start(&model(), &[], &["--api-key-file", &kf]);
    wait_ready(&s).await;
    let spec: Value = json_of(
        client()
            .get(format!("{}/openapi.json", s.base))
            .bearer_auth(KEY),
    )
    .await;
    // The document says which routes need a key, as configured.
    assert!(spec["components"]["securitySchemes"]["api_key"].is_object());
    assert_eq!(spec["paths"]["/health"]["get"]["security"], json!([]));
    assert!(spec["paths"]["/v1/embeddings"]["post"]["responses"]["401"].is_object());
    assert!(
        spec["paths"]["/mcp"]["post"].is_object(),
        "{}",
        spec["paths"]
    );
    assert!(spec["paths"].get("/v1/chat/completions").is_none());
    let work = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new("schemathesis")
        .current_dir(work.path())
        .arg("run")
        .arg(format!("{}/openapi.json", s.base))
        .args(["-H", &format!("Authorization: Bearer {KEY}")])
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        // A fixed seed: the same 40 examples per operation on every run. Unseeded, schemathesis
        // 4.32 now and then reports a valid search body as "schema-violating request accepted".
        .args([
            "--max-examples",
            "40",
            "--workers",
            "1",
            "--seed",
            "20261202",
        ])
        .args(["--request-timeout", "60"])
        // /mcp carries JSON-RPC messages whose schema is MCP's: the conformance suite and the
        // Python SDK test it (the_mcp_* tests), not generated bodies.
        .args(["--exclude-path", "/mcp"])
        .output()
        .await
        .expect("schemathesis runs (scripts/test installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 13 operations: no chat route is configured here, so the chat routes are not listed.
    assert!(stdout.contains("Tested: 13"), "{stdout}");
}

/// A deterministic OpenAI-compatible chat server, for when no llama.cpp engine is installed: it
/// answers with the words of the last user message, whole or streamed one word per chunk.
async fn fake_chat_upstream() -> String {
    async fn chat(axum::Json(body): axum::Json<Value>) -> axum::response::Response {
        use axum::response::IntoResponse;
        let last = body["messages"]
            .as_array()
            .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
            .and_then(|m| m["content"].as_str())
            .unwrap_or("")
            .to_string();
        let words: Vec<String> = last.split(' ').map(|w| format!("{w} ")).collect();
        let text: String = words.concat();
        if body["stream"] != true {
            return axum::Json(json!({"id": "c1", "object": "chat.completion", "created": 1,
                "model": body["model"], "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 9, "completion_tokens": words.len(), "total_tokens": 9 + words.len()}}))
            .into_response();
        }
        let mut out = String::new();
        for w in &words {
            let c = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1,
                "model": body["model"], "choices": [{"index": 0, "delta": {"content": w},
                "finish_reason": null}]});
            out.push_str(&format!("data: {c}\n\n"));
        }
        out.push_str("data: [DONE]\n\n");
        ([("content-type", "text/event-stream")], out).into_response()
    }
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(chat))
        .route(
            "/v1/models",
            axum::routing::get(|| async { axum::Json(json!({"object": "list", "data": []})) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v1")
}

/// The chat upstream of the client tests: the real llama.cpp engine of `scripts/test` when
/// `AISTACK_TEST_LLAMA_URL` is set, else the deterministic stand-in above.
async fn chat_upstream() -> String {
    match std::env::var("AISTACK_TEST_LLAMA_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => fake_chat_upstream().await,
    }
}

/// A config file with the routes `chat` and `docs-chat` (grounded in `docs`) over `upstream`.
fn chat_config(dir: &Path, upstream: &str) -> String {
    let path = dir.join("chat.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[llm.upstreams]]
name = "local"
base_url = "{upstream}"

[[llm.routes]]
name = "chat"
upstreams = ["local"]

[[llm.routes]]
name = "docs-chat"
upstreams = ["local"]
collections = ["docs"]
k = 2
"#
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn chat_clients_work_unchanged_through_the_gateway() {
    let upstream = chat_upstream().await;
    let cfg_dir = tempfile::tempdir().unwrap();
    let config = chat_config(cfg_dir.path(), &upstream);
    // As a new user would: the model directory, no configured model name.
    let s = start(&model(), &[], &["--config", &config]);
    wait_ready(&s).await;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/chat_clients.py");
    let out = tokio::process::Command::new("python3")
        .arg(&path)
        .arg(&s.base)
        .output()
        .await
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "chat_clients.py failed against the aistack server at {} (upstream {upstream}):\n{}\n{}",
        s.base,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["citations"], 2, "{v}");
}

/// Joins a stream's content deltas; panics unless it ends with `[DONE]`.
async fn streamed_text(r: reqwest::Response) -> (String, Option<String>) {
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    let mut text = String::new();
    let mut finish = None;
    let mut done = false;
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        assert!(v.get("error").is_none(), "{v}");
        if let Some(c) = v["choices"].get(0) {
            text.push_str(c["delta"]["content"].as_str().unwrap_or(""));
            if let Some(f) = c["finish_reason"].as_str() {
                finish = Some(f.to_string());
            }
        }
    }
    assert!(done, "the stream ended with [DONE]: {body}");
    (text, finish)
}

/// Needs a real llama.cpp engine, so it is ignored in the main run (the runner counts it as
/// such) and scripts/test runs it with `--ignored` where llama-cpp-python is installed.
#[tokio::test]
#[ignore = "needs llama.cpp: AISTACK_TEST_LLAMA_URL (scripts/test runs it where llama-cpp-python is installed)"]
async fn the_gateway_answers_exactly_as_llama_cpp_does() {
    let llama = std::env::var("AISTACK_TEST_LLAMA_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .expect(
            "AISTACK_TEST_LLAMA_URL names a llama.cpp server (scripts/llama-test-server start)",
        );
    let cfg_dir = tempfile::tempdir().unwrap();
    let config = chat_config(cfg_dir.path(), &llama);
    let s = start(&model(), &[], &["--config", &config]);
    let c = client();
    let prompts = [
        "Hello, who are you?",
        "Name three colours.",
        "What is a write-ahead log?",
    ];
    for p in prompts {
        let body = |stream: bool| {
            json!({"model": "chat", "stream": stream, "temperature": 0, "seed": 42,
                "max_tokens": 16, "messages": [{"role": "user", "content": p}]})
        };
        let direct: Value = json_of(
            c.post(format!("{llama}/chat/completions"))
                .json(&body(false)),
        )
        .await;
        let via: Value = json_of(
            c.post(format!("{}/v1/chat/completions", s.base))
                .json(&body(false)),
        )
        .await;
        assert_eq!(
            via["choices"][0]["message"], direct["choices"][0]["message"],
            "{p}"
        );
        assert_eq!(
            via["choices"][0]["finish_reason"],
            direct["choices"][0]["finish_reason"]
        );
        assert_eq!(via["usage"], direct["usage"]);
        let direct_s = streamed_text(
            c.post(format!("{llama}/chat/completions"))
                .json(&body(true))
                .send()
                .await
                .unwrap(),
        )
        .await;
        let via_s = streamed_text(
            c.post(format!("{}/v1/chat/completions", s.base))
                .json(&body(true))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(via_s, direct_s, "{p}");
        assert_eq!(
            via_s.0,
            direct["choices"][0]["message"]["content"].as_str().unwrap(),
            "streamed and whole answers agree"
        );
    }
    // The legacy completions route passes through the same way.
    let body = json!({"model": "chat", "prompt": "The capital of France is", "temperature": 0,
        "seed": 42, "max_tokens": 8});
    let direct: Value = json_of(c.post(format!("{llama}/completions")).json(&body)).await;
    let via: Value = json_of(c.post(format!("{}/v1/completions", s.base)).json(&body)).await;
    assert_eq!(via["choices"][0]["text"], direct["choices"][0]["text"]);
    // A prompt longer than the context is the caller's error, passed straight back.
    let long = "word ".repeat(900);
    let r = c
        .post(format!("{}/v1/chat/completions", s.base))
        .json(&json!({"model": "chat", "messages": [{"role": "user", "content": long}]}))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(text.contains("context"), "{text}");
    let health: Value = json_of(c.get(format!("{}/health", s.base))).await;
    assert_eq!(health["upstreams"][0]["breaker"], "closed", "{health}");
}

/// The official MCP Python SDK over both transports with the real model: `/mcp` on this server
/// (behind an API key) and `aistack mcp` on stdio.
#[tokio::test]
async fn the_mcp_python_sdk_works_over_http_and_stdio() {
    let keys = tempfile::tempdir().unwrap();
    let s = start(&model(), &[], &["--api-key-file", &key_file(keys.path())]);
    let stdio_data = s._dir.path().join("stdio-data");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_client.py");
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(format!("{}/mcp", s.base))
        .arg(KEY)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_aistack"))
        .args(["mcp", "--model", &model(), "--data-dir"])
        .arg(&stdio_data)
        .output()
        .await
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "mcp_client.py failed (scripts/test installs the `mcp` package):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["no_key"], 401, "{v}");
    assert_eq!(v["stdio"]["errors"], 8, "{v}");
    // The stdio server wrote its collection to its own data directory and flushed it.
    assert!(stdio_data.join("collections").join("mcp-stdio").is_dir());
}

/// stdout of `aistack mcp` carries protocol messages only, whatever it logs.
#[test]
fn aistack_mcp_writes_only_protocol_messages_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_aistack"))
        .args(["mcp", "--model", &model(), "--data-dir"])
        .arg(dir.path().join("data"))
        .env("AISTACK__LOG__LEVEL", "debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let requests = [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
            "name": "describe_collection", "arguments": {"collection": "none"}}}),
    ];
    for r in &requests {
        writeln!(stdin, "{r}").unwrap();
    }
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut replies = Vec::new();
    while replies.len() < 3 {
        let line = lines.next().expect("a reply").unwrap();
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("stdout has a non-protocol line ({e}): {line}"));
        assert_eq!(v["jsonrpc"], "2.0", "{line}");
        replies.push(v);
    }
    // Requests are answered as they finish, not in order.
    replies.sort_by_key(|v| v["id"].as_u64());
    assert_eq!(replies[0]["result"]["serverInfo"]["name"], "aistack");
    assert_eq!(replies[1]["result"]["tools"].as_array().unwrap().len(), 6);
    assert_eq!(replies[2]["result"]["isError"], true);
    assert_eq!(
        replies[2]["result"]["structuredContent"]["error"]["code"],
        "not_found"
    );
    // Closing stdin ends the session and the process, cleanly.
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(log.contains("serving MCP on stdio"), "{log}");
}

/// The official MCP conformance suite (npm `@modelcontextprotocol/conformance`) against `/mcp`:
/// every scenario passes except those listed, with reasons, in the baseline file.
#[tokio::test]
async fn the_mcp_conformance_suite_passes_against_mcp() {
    let s = start(&model(), &[], &[]);
    wait_ready(&s).await;
    let ensure = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ensure-mcp-conformance");
    let out = Command::new(&ensure)
        .output()
        .expect("the install script runs");
    assert!(
        out.status.success(),
        "installing the conformance suite failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let baseline = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp-conformance-baseline.yml");
    let path = format!(
        "{dir}/node_modules/.bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    let out = tokio::process::Command::new(format!("{dir}/node_modules/.bin/conformance"))
        .current_dir(&dir)
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .args(["server", "--url", &format!("{}/mcp", s.base)])
        .arg("--expected-failures")
        .arg(&baseline)
        .output()
        .await
        .expect("the conformance suite runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the conformance suite found failures beyond the baseline (or baseline entries that now \
         pass):\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for generic in [
        "server-initialize",
        "ping",
        "tools-list",
        "resources-list",
        "dns-rebinding-protection",
    ] {
        assert!(
            report.contains(&format!("✓ {generic}:")),
            "{generic} did not pass:\n{report}"
        );
    }
}

/// A small tmpfs mounted for one test, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `mib` MiB, or `None` where this process may not mount (not root).
    fn mount(mib: u32) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file of zeros until the disk refuses more; returns its path.
    fn fill(&self) -> std::path::PathBuf {
        let p = self.path().join("filler");
        let mut f = std::fs::File::create(&p).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let mut small = [0u8; 512];
        while f.write_all(&small).is_ok() {}
        small[0] = 1;
        while f.write_all(&small[..1]).is_ok() {}
        p
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Defect 3 of the hardening issue: a full disk is a 507 with its own code and a message that
/// names no path; health says the store is degraded for writes while searches go on; the
/// refused request left nothing behind, also after a restart; writes resume once space returns.
/// It mounts a small tmpfs, which needs root: ignored in the main run, and run by scripts/test
/// with `--ignored` when it runs as root (as CI does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root to mount a tmpfs (scripts/test runs it as root)"]
async fn a_full_disk_is_507_health_degraded_reads_go_on_and_nothing_half_written() {
    let disk = SmallDisk::mount(48).expect("mounting a tmpfs (this test needs root)");
    let data = disk.path().join("data");
    let c = client();
    let docs = |prefix: &str, n: usize, word: &str| {
        let documents: Vec<Value> = (0..n)
            .map(|i| {
                json!({"id": format!("{prefix}{i}"),
                       "text": format!("{word} number {i}. ").repeat(40),
                       "metadata": {"batch": prefix}})
            })
            .collect();
        json!({ "documents": documents })
    };
    let lexical_hits = |s: &Server, word: &str| {
        let req = c
            .post(format!("{}/v1/collections/notes/search", s.base))
            .json(&json!({"query": word, "k": 100, "mode": "lexical"}));
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "searches go on");
            let v: Value = r.json().await.unwrap();
            v["hits"].as_array().map_or(0, Vec::len)
        }
    };
    let post_docs = |s: &Server, body: Value| {
        let req = c
            .post(format!("{}/v1/collections/notes/documents", s.base))
            .json(&body);
        async move { req.send().await.unwrap() }
    };
    let health = |s: &Server| {
        let req = c.get(format!("{}/health", s.base));
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };

    let s = start_on(&model(), Some(&data), &[], &[]);
    wait_ready(&s).await;
    let r = post_docs(&s, docs("kept", 4, "aardvark")).await;
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    let kept = lexical_hits(&s, "aardvark").await;
    assert!(kept >= 4, "{kept}");

    let filler = disk.fill();
    let r = post_docs(&s, docs("lost", 32, "zebra")).await;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_storage", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("disk is full"), "{message}");
    let mount = disk.path().display().to_string();
    assert!(
        !message.contains(&mount) && !message.contains('/'),
        "names no path: {message}"
    );

    let (code, h) = health(&s).await;
    assert_eq!(code, 200, "reads are served: {h}");
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["store"]["status"], "degraded", "{h}");
    assert_eq!(h["store"]["writable"], false, "{h}");
    assert_eq!(h["store"]["error"], "insufficient_storage", "{h}");
    assert_eq!(lexical_hits(&s, "aardvark").await, kept, "reads go on");
    assert_eq!(
        lexical_hits(&s, "zebra").await,
        0,
        "none of the refused request"
    );
    let log = s.log.lock().unwrap().join("\n");
    assert!(
        !log.contains("\"level\":\"ERROR\""),
        "a full disk is an expected state, not an error: {log}"
    );

    // A restart on the still-full disk: it opens, and the refused request is still absent.
    drop(s);
    let s = start_on(&model(), Some(&data), &[], &[]);
    wait_ready(&s).await;
    assert_eq!(lexical_hits(&s, "aardvark").await, kept);
    assert_eq!(lexical_hits(&s, "zebra").await, 0);

    // Space returns: writes succeed again, health is ok again, without a restart.
    std::fs::remove_file(filler).unwrap();
    let r = post_docs(&s, docs("lost", 32, "zebra")).await;
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    assert!(lexical_hits(&s, "zebra").await >= 32);
    let (code, h) = health(&s).await;
    assert_eq!((code, &h["status"]), (200, &json!("ok")), "{h}");
    assert_eq!(h["store"]["writable"], true, "{h}");
}

/// What `openssl s_client` says when it offers only `version` to `addr`.
fn openssl_handshake(addr: SocketAddr, version: &str) -> Option<String> {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), version])
        .args(["-cipher", "DEFAULT:@SECLEVEL=0", "-servername", "localhost"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    Some(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// TLS 1.0 and 1.1 offered by a real client are refused by the server itself (it answers
/// with an alert), while TLS 1.2 and 1.3 are accepted.
#[tokio::test]
async fn tls_1_0_and_1_1_are_refused_by_the_server() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("SKIPPED: no openssl binary; the TLS downgrade test did not run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cp, kp) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cp, cert.cert.pem()).unwrap();
    std::fs::write(&kp, cert.signing_key.serialize_pem()).unwrap();
    let s = start(
        &model(),
        &[],
        &[
            "--tls-cert",
            cp.to_str().unwrap(),
            "--tls-key",
            kp.to_str().unwrap(),
        ],
    );
    for good in ["-tls1_2", "-tls1_3"] {
        let out = openssl_handshake(s.addr, good).unwrap();
        assert!(
            out.contains("BEGIN CERTIFICATE") || out.contains("Server certificate"),
            "{good}: {out}"
        );
    }
    for old in ["-tls1", "-tls1_1"] {
        let out = openssl_handshake(s.addr, old).unwrap();
        if out.contains("no protocols available") || out.contains("unknown option") {
            eprintln!(
                "SKIPPED {old}: this openssl cannot offer it ({})",
                out.lines().next().unwrap_or("")
            );
            continue;
        }
        assert!(
            !out.contains("BEGIN CERTIFICATE"),
            "{old} was accepted: {out}"
        );
        // The refusal is the server's: an alert came back (rustls answers handshake_failure).
        assert!(
            out.contains("SSL alert number"),
            "{old}: refused by the server: {out}"
        );
    }
}

/// SIGTERM while requests are in flight: every one of them is answered in full, then the
/// process exits 0; a connection made after the signal is not served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_finishes_every_request_in_flight() {
    // Admission by count only: this is about shutdown, so every request that gets in is kept.
    let mut s = start(
        &model(),
        &[
            ("AISTACK__SERVER__SHUTDOWN_GRACE_MS", "30000"),
            ("AISTACK__EMBED__MAX_QUEUE_WAIT_MS", "0"),
        ],
        &[],
    );
    wait_ready(&s).await;
    let c = client();
    let calls: Vec<_> = (0..12)
        .map(|j| {
            let c = c.clone();
            let u = format!("{}/v1/embeddings", s.base);
            let t: Vec<String> = (0..32)
                .map(|i| format!("request {j} sentence {i}: shutting down while busy is routine"))
                .collect();
            tokio::spawn(async move { c.post(u).json(&json!({"input": t})).send().await })
        })
        .collect();
    // Let the requests reach the server, then stop it while they are being answered.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let pid = s.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut answered = 0;
    for call in calls {
        // A request that had not connected when the signal came was never in flight; every
        // one that had is answered in full.
        let r = match call.await.unwrap() {
            Err(e) if e.is_connect() => continue,
            r => r.expect("an in-flight request is answered"),
        };
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["data"].as_array().unwrap().len(), 32, "answered in full");
        answered += 1;
    }
    assert!(
        answered >= 6,
        "only {answered} of 12 were in flight at the signal"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    assert!(
        TcpStream::connect(s.addr).is_err(),
        "nothing listens after the exit"
    );
}

/// Requests with hundreds of distinct paths, methods and model names leave the number of
/// metric series as it was: labels come from fixed sets (route templates, known methods).
#[tokio::test]
async fn a_flood_of_distinct_labels_does_not_grow_the_metrics() {
    let s = start(
        &model(),
        &[("AISTACK__SERVER__PUBLIC_METRICS", "true")],
        &[],
    );
    wait_ready(&s).await;
    let c = client();
    let series = || {
        let c = c.clone();
        let u = format!("{}/metrics", s.base);
        async move {
            let text = c.get(u).send().await.unwrap().text().await.unwrap();
            text.lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .map(|l| l.split(' ').next().unwrap().to_string())
                .collect::<std::collections::BTreeSet<String>>()
        }
    };
    // One of each kind first, so the series the flood may touch exist.
    c.get(format!("{}/no/such/path", s.base))
        .send()
        .await
        .unwrap();
    c.post(format!("{}/v1/embeddings", s.base))
        .json(&json!({"input": "x", "model": "no-such-model"}))
        .send()
        .await
        .unwrap();
    let method = reqwest::Method::from_bytes(b"BREW").unwrap();
    c.request(method, format!("{}/v1/embeddings", s.base))
        .send()
        .await
        .unwrap();
    c.post(format!("{}/v1/collections/primed/search", s.base))
        .json(&json!({"query": "x"}))
        .send()
        .await
        .unwrap();
    // A first scrape adds /metrics' own series.
    series().await;
    let before = series().await;
    for i in 0..300 {
        c.get(format!("{}/flood/{i}/{}", s.base, "x".repeat(i % 50)))
            .send()
            .await
            .unwrap();
        c.post(format!("{}/v1/embeddings", s.base))
            .json(&json!({"input": "x", "model": format!("model-{i}")}))
            .send()
            .await
            .unwrap();
        let method = reqwest::Method::from_bytes(format!("M{i}").as_bytes()).unwrap();
        c.request(method, format!("{}/v1/embeddings", s.base))
            .send()
            .await
            .unwrap();
        c.post(format!("{}/v1/collections/c{i}/search", s.base))
            .json(&json!({"query": "x"}))
            .send()
            .await
            .unwrap();
    }
    let after = series().await;
    let new: Vec<&String> = after.difference(&before).collect();
    assert!(new.is_empty(), "{} new series: {new:?}", new.len());
    assert!(after.len() < 400, "{} series", after.len());
    assert!(!after
        .iter()
        .any(|l| l.contains("flood") || l.contains("model-1") || l.contains("M1")));
}

/// The texts the crash test's documents take: 240, 480 and 720 tokens, of different numbers of
/// chunks (1, 3 and 4 with the default chunking; the test reads them from the server).
fn crash_text(t: usize) -> String {
    (0..(t + 1) * 30)
        .map(|i| format!("Sentence {i} of text {t} says little. "))
        .collect()
}

/// The next value of a xorshift generator (`x` never 0).
fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Writer `w`'s request `j` in the crash test: (document index, text) pairs, 1 to 3 of the
/// writer's 5 documents, each with one of the three texts; the same for every run of a seed.
fn crash_request(seed: u64, w: usize, j: u64) -> Vec<(usize, usize)> {
    let mut x = seed
        ^ (w as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ j.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let mut next = move |below: u64| (xorshift(&mut x) % below) as usize;
    for _ in 0..4 {
        next(2);
    }
    let mut docs: Vec<(usize, usize)> = Vec::new();
    for _ in 0..1 + next(3) {
        let d = next(5);
        if !docs.iter().any(|&(e, _)| e == d) {
            docs.push((d, next(3)));
        }
    }
    docs
}

/// The body of writer `w`'s request `j` in the crash test.
fn crash_body(seed: u64, w: usize, j: u64) -> Value {
    let documents: Vec<Value> = crash_request(seed, w, j)
        .into_iter()
        .map(|(d, t)| {
            json!({"id": format!("w{w}d{d}"), "text": crash_text(t),
                   "metadata": {"w": w, "v": j, "t": t}})
        })
        .collect();
    json!({ "documents": documents })
}

/// Concurrent documents requests against the real server, killed with SIGKILL at random
/// moments over several rounds: after each kill the data directory holds, for every writer,
/// exactly its requests up to the last acknowledged one or the one in flight (each request
/// wholly or not at all, stale chunks of a replaced document gone in the same write), and the
/// server starts on it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_requests_are_all_or_nothing_when_the_server_is_killed() {
    use aistack_core::store::{EmbeddedStore, VectorStore};
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const WRITERS: usize = 3;
    const ROUNDS: usize = 8;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seeded with {seed}");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let c = client();

    // How many chunks each text makes, from the server itself.
    let mut chunks_of = Vec::new();
    {
        let s = start_on(&model(), Some(&data), &[], &[]);
        wait_ready(&s).await;
        for t in 0..3 {
            let r = c
                .post(format!("{}/v1/collections/calibration/documents", s.base))
                .json(&json!({"documents": [{"id": "x", "text": crash_text(t)}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let v: Value = r.json().await.unwrap();
            chunks_of.push(v["chunks"].as_u64().unwrap() as usize);
        }
    }
    assert!(
        chunks_of.windows(2).all(|p| p[0] < p[1]),
        "the texts make different numbers of chunks: {chunks_of:?}"
    );
    let most = *chunks_of.iter().max().unwrap();
    // What replaying writer w's requests from..=last leaves: per document, (version, text).
    let replay = |w: usize, last: Option<u64>| {
        let mut docs = BTreeMap::new();
        for j in 0..last.map_or(0, |l| l + 1) {
            for (d, t) in crash_request(seed, w, j) {
                docs.insert(d, (j, t));
            }
        }
        docs
    };

    let mut next = [0u64; WRITERS];
    let mut applied_unacknowledged = 0;
    let mut rng = seed;
    for round in 0..ROUNDS {
        let mut s = start_on(&model(), Some(&data), &[], &[]);
        wait_ready(&s).await;
        // Writers that have had a request acknowledged this round.
        let going = Arc::new(AtomicUsize::new(0));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (c, url, from, going) = (
                    c.clone(),
                    format!("{}/v1/collections/docs/documents", s.base),
                    next[w],
                    going.clone(),
                );
                tokio::spawn(async move {
                    // The last acknowledged request, if any this round.
                    let mut acked = None;
                    for j in from.. {
                        match c.post(&url).json(&crash_body(seed, w, j)).send().await {
                            Ok(r) if r.status() == StatusCode::OK => {
                                if r.bytes().await.is_err() {
                                    break;
                                }
                                if acked.is_none() {
                                    going.fetch_add(1, Ordering::SeqCst);
                                }
                                acked = Some(j)
                            }
                            Ok(r) => panic!("writer {w} request {j}: {}", r.status()),
                            Err(_) => break,
                        }
                    }
                    acked
                })
            })
            .collect();
        // Once every writer is under way (the texts' vectors cached, so requests are mostly
        // store writes), kill the server a random moment later.
        let deadline = Instant::now() + Duration::from_secs(300);
        while going.load(Ordering::SeqCst) < WRITERS {
            assert!(Instant::now() < deadline, "round {round}: writers stalled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_micros(xorshift(&mut rng) % 400_000)).await;
        s.child.kill().unwrap();
        s.child.wait().unwrap();
        let mut acked = [None; WRITERS];
        for (w, h) in writers.into_iter().enumerate() {
            acked[w] = h.await.unwrap();
        }
        drop(s);
        eprintln!("round {round}: acknowledged {acked:?}");

        let store = EmbeddedStore::open(&data).await.unwrap();
        let mut total = 0;
        for w in 0..WRITERS {
            let ids: Vec<String> = (0..5)
                .flat_map(|d| (0..most).map(move |c| format!("w{w}d{d}#{c}")))
                .collect();
            let mut got: BTreeMap<usize, (u64, usize, usize)> = BTreeMap::new();
            for r in store.get("docs", &ids).await.unwrap() {
                let d: usize = r.id[3..r.id.find('#').unwrap()].parse().unwrap();
                let (v, t) = (
                    r.metadata["v"].as_u64().unwrap(),
                    r.metadata["t"].as_u64().unwrap() as usize,
                );
                let e = got.entry(d).or_insert((v, t, 0));
                assert_eq!(
                    (e.0, e.1),
                    (v, t),
                    "round {round}: w{w}d{d} mixes versions (seed {seed})"
                );
                e.2 += 1;
            }
            total += got.values().map(|e| e.2).sum::<usize>();
            let got: BTreeMap<usize, (u64, usize)> = got
                .into_iter()
                .map(|(d, (v, t, n))| {
                    assert_eq!(
                        n, chunks_of[t],
                        "round {round}: w{w}d{d} v{v} has {n} chunks"
                    );
                    (d, (v, t))
                })
                .collect();
            // Every acknowledged request is there; the one in flight wholly or not at all.
            let last_acked = acked[w].or(next[w].checked_sub(1));
            let in_flight = last_acked.map_or(0, |l| l + 1);
            let last = if got == replay(w, last_acked) {
                last_acked
            } else if got == replay(w, Some(in_flight)) {
                applied_unacknowledged += 1;
                Some(in_flight)
            } else {
                panic!(
                    "round {round}: writer {w} is neither requests ..={last_acked:?} nor \
                     ..={in_flight} exactly: {got:?} (seed {seed})"
                );
            };
            next[w] = last.map_or(0, |l| l + 1);
        }
        assert_eq!(
            store.count("docs", None).await.unwrap() as usize,
            total,
            "round {round}: no chunk outside the writers' documents"
        );
        drop(store);
    }
    assert!(
        next.iter().all(|&n| n >= ROUNDS as u64),
        "every writer got requests through in every round: {next:?}"
    );
    // The server starts on what the last kill left and serves it.
    let s = start_on(&model(), Some(&data), &[], &[]);
    wait_ready(&s).await;
    let v = json_of(
        c.post(format!("{}/v1/collections/docs/search", s.base))
            .json(&json!({"query": "Sentence 3 of text 1", "k": 5})),
    )
    .await;
    assert!(!v["hits"].as_array().unwrap().is_empty(), "{v}");
    eprintln!(
        "{ROUNDS} kills; writers reached requests {next:?}; {applied_unacknowledged} requests \
         were applied but not acknowledged"
    );
}

/// A text of `words` words, different for every `seed` (so the embedding cache never answers).
fn bulk_text(seed: u64, words: usize) -> String {
    const VOCAB: [&str; 24] = [
        "river", "ledger", "quantum", "harbor", "violet", "engine", "meadow", "protocol", "amber",
        "lantern", "cipher", "orchard", "glacier", "compiler", "falcon", "mosaic", "tundra",
        "archive", "beacon", "canyon", "delta", "ember", "fjord", "granite",
    ];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..words)
        .map(|_| VOCAB[(xorshift(&mut x) % VOCAB.len() as u64) as usize])
        .collect::<Vec<_>>()
        .join(" ")
}

/// Ordinary concurrent bulk work with default settings (the defaults issue): clients each post
/// `/v1/embeddings` with 32 texts, as LangChain's `embed_documents` or an import script does,
/// 1, 2, 4 and 8 clients at once. Every request waits and is answered 200, none 429: each costs
/// many times the wait bound (so the old admission refused the later ones), but the queue can
/// finish it before its deadline. The texts are 40 words (about 45 tokens) so that the test's
/// unoptimized-profile build stays well inside the deadline on a slow machine; the same at 120
/// words and six requests a client, on the release build, is `admission-bench --bulk`
/// (`docs/benchmarks.md`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_bulk_embeddings_are_all_answered_with_default_settings() {
    let s = start(&model(), &[], &[]);
    wait_ready(&s).await;
    let health = json_of(client().get(format!("{}/health", s.base))).await;
    let q = &health["model"]["queue_wait"];
    assert_eq!(q["source"], "calibrated", "{health}");
    assert!(q["bound_ms"].as_u64().unwrap() >= 10, "{health}");
    assert!(q["calibration_pass_ms"].as_f64().unwrap() > 0.0, "{health}");
    let c = client();
    let mut seed = 0u64;
    // 8 clients send two requests each, so the queue stays eight deep for a while.
    for (clients, requests) in [(1usize, 1), (2, 1), (4, 1), (8, 2)] {
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (c, base) = (c.clone(), s.base.clone());
            let bodies: Vec<Value> = (0..requests)
                .map(|_| {
                    let input: Vec<String> = (0..32)
                        .map(|_| {
                            seed += 1;
                            bulk_text(seed, 40)
                        })
                        .collect();
                    json!({"model": "all-MiniLM-L6-v2", "input": input})
                })
                .collect();
            tasks.push(tokio::spawn(async move {
                let mut answers = Vec::new();
                for body in bodies {
                    let r = c
                        .post(format!("{base}/v1/embeddings"))
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    let status = r.status().as_u16();
                    let v: Value = r.json().await.unwrap();
                    answers.push((status, v));
                }
                answers
            }));
        }
        for t in tasks {
            for (status, v) in t.await.unwrap() {
                assert_eq!(status, 200, "{clients} clients: {v}");
                assert_eq!(v["data"].as_array().unwrap().len(), 32);
                assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 32 * 40);
            }
        }
    }
    let metrics = client()
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("aistack_embed_rejected_wait_total") && l.ends_with(" 0")),
        "no request was refused for its wait: {metrics}"
    );
}

/// A fake Hugging Face Hub serving the files of `dir` for any repository, the way `hf-hub`
/// downloads them (ranged GETs with `ETag`, `X-Repo-Commit` and `Content-Range`); requests for
/// `model.safetensors` are held until `release` is sent `true`: a slow model source.
async fn slow_hub(dir: std::path::PathBuf) -> (String, tokio::sync::watch::Sender<bool>) {
    use axum::extract::{Path as UrlPath, State};
    use axum::http::{HeaderMap, StatusCode as Code};
    use axum::response::{IntoResponse, Response};
    type Hub = (std::path::PathBuf, tokio::sync::watch::Receiver<bool>);
    async fn file(
        State((dir, mut released)): State<Hub>,
        UrlPath((_org, _name, _rev, name)): UrlPath<(String, String, String, String)>,
        headers: HeaderMap,
    ) -> Response {
        if name.contains("..") {
            return Code::BAD_REQUEST.into_response();
        }
        if name == "model.safetensors" {
            let _ = released.wait_for(|r| *r).await;
        }
        let Ok(bytes) = tokio::fs::read(dir.join(&name)).await else {
            return Code::NOT_FOUND.into_response();
        };
        let len = bytes.len();
        let (start, end) = headers
            .get("range")
            .and_then(|r| r.to_str().ok())
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.split_once('-'))
            .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)))
            .unwrap_or((0, len.saturating_sub(1)));
        let end = end.min(len.saturating_sub(1));
        let etag = format!("\"{}-{len}\"", name.replace('/', "-"));
        (
            Code::PARTIAL_CONTENT,
            [
                ("etag", etag),
                (
                    "x-repo-commit",
                    "0123456789abcdef0123456789abcdef01234567".to_string(),
                ),
                ("content-range", format!("bytes {start}-{end}/{len}")),
            ],
            bytes[start..=end].to_vec(),
        )
            .into_response()
    }
    let (tx, rx) = tokio::sync::watch::channel(false);
    let app = axum::Router::new()
        .route(
            "/{org}/{name}/resolve/{rev}/{*file}",
            axum::routing::get(file),
        )
        .with_state((dir, rx));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), tx)
}

/// A desktop client starts `aistack mcp` and calls a tool at once: while the model is still
/// loading (its weights held back by a slow model source), the call waits instead of failing,
/// and succeeds once the model has loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_tool_call_made_while_the_model_loads_waits_for_it() {
    let (hub, release) = slow_hub(model_dir()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_aistack"))
        .args(["mcp", "--model", "test-org/all-MiniLM-L6-v2", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("HF_ENDPOINT", &hub)
        .env("HF_HOME", dir.path().join("hf"))
        .env_remove("HF_HUB_OFFLINE")
        .env("AISTACK__EMBED__LOAD_ATTEMPTS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, replies) = mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("a non-protocol line on stdout ({e}): {line}"));
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let send = |stdin: &mut std::process::ChildStdin, v: Value| writeln!(stdin, "{v}").unwrap();
    send(
        &mut stdin,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}}),
    );
    let init = replies.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(init["result"]["serverInfo"]["name"], "aistack", "{init}");
    send(
        &mut stdin,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    );
    send(
        &mut stdin,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "add_documents", "arguments": {"collection": "notes", "documents": [
                {"id": "n1", "text": "Cats purr when they are content."}]}}}),
    );
    // The weights are held back: the call waits, no error comes back.
    let early = replies.recv_timeout(Duration::from_millis(1500));
    assert!(
        early.is_err(),
        "answered while the model was loading: {early:?}"
    );
    release.send(true).unwrap();
    let done = replies
        .recv_timeout(Duration::from_secs(120))
        .expect("the tool call was answered once the model loaded");
    assert_eq!(done["id"], 2, "{done}");
    assert_eq!(done["result"]["isError"], false, "{done}");
    assert_eq!(
        done["result"]["structuredContent"]["documents"], 1,
        "{done}"
    );
    // And the stored document is found.
    send(
        &mut stdin,
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
            "name": "search", "arguments": {"collection": "notes", "query": "what do cats do?", "k": 1}}}),
    );
    let found = replies.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(found["result"]["isError"], false, "{found}");
    assert!(found.to_string().contains("n1"), "{found}");
    drop(stdin);
    assert!(child.wait().unwrap().success());
    let log = log.join().unwrap();
    assert!(log.contains("embedding model ready"), "{log}");
}
