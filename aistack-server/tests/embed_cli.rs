//! `aistack embed` as users and scripts run it: JSON lines in, JSON lines out, in order, and bad
//! input named by its line number.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use aistack_testing::{cosine, model_dir, reference};

fn run_embed(input: &[u8], extra: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aistack"))
        .arg("embed")
        .arg("--model")
        .arg(model_dir())
        .args(extra)
        .env("AISTACK__LOG__LEVEL", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("aistack starts");
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

#[test]
fn embeds_jsonl_in_input_order() {
    let refs = reference();
    let mut input = String::new();
    for (i, r) in refs.iter().take(70).enumerate() {
        let line = match i % 3 {
            0 => serde_json::to_string(&r.text).unwrap(),
            1 => serde_json::json!({"id": format!("doc-{i}"), "text": r.text}).to_string(),
            _ => serde_json::json!({"text": r.text}).to_string(),
        };
        input.push_str(&line);
        input.push('\n');
    }
    let out = run_embed(input.as_bytes(), &["--batch-size", "8"]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 70);
    for (i, l) in lines.iter().enumerate() {
        let want_id = if i % 3 == 1 {
            serde_json::json!(format!("doc-{i}"))
        } else {
            serde_json::json!(i + 1)
        };
        assert_eq!(l["id"], want_id, "line {i}");
        let v: Vec<f32> = l["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let c = cosine(&v, &refs[i].embedding);
        assert!(c >= 0.9999, "line {i}: cosine {c}");
    }
}

#[test]
fn reads_and_writes_files() {
    let dir = tempfile::tempdir().unwrap();
    let inp = dir.path().join("in.jsonl");
    let outp = dir.path().join("out.jsonl");
    std::fs::write(&inp, "\"alpha\"\n\n\"beta\"\n").unwrap();
    let out = run_embed(
        b"",
        &[
            "--input",
            inp.to_str().unwrap(),
            "--output",
            outp.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&outp).unwrap();
    let ids: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].clone())
        .collect();
    // Blank lines are skipped; ids are the line numbers.
    assert_eq!(ids, [serde_json::json!(1), serde_json::json!(3)]);
}

#[test]
fn a_bad_line_is_named_and_fails_the_run() {
    let cases: [(&[u8], &str); 4] = [
        (b"\"ok\"\n\"ok\"\n{broken\n", "line 3"),
        (b"\"ok\"\n\"\"\n", "line 2: text is empty"),
        (b"{\"id\": 1}\n", "line 1: the object has no \"text\""),
        (b"\"ok\"\n\"\xff\"\n", "line 2: not valid UTF-8"),
    ];
    for (input, want) in cases {
        let out = run_embed(input, &[]);
        assert_eq!(out.status.code(), Some(2), "{want}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "stderr {err:?} should name {want:?}");
    }
}

#[test]
fn a_missing_model_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_aistack"))
        .args(["embed", "--model", "/no/such/model/dir"])
        .env("AISTACK__LOG__LEVEL", "error")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/no/such/model/dir"), "{err}");
}
