//! Every fuzz target over its kept corpus (`fuzz/corpus/TARGET/`), and over mutations of a
//! spread of its files (bytes flipped, cut, repeated, spliced), in the ordinary test suite: a short run of each
//! target on every CI build, without libFuzzer. The long coverage-guided runs are `cargo fuzz`
//! (see `fuzz/README.md`).

use std::path::PathBuf;

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("request_embeddings", aistack_fuzz::request_embeddings),
    ("request_tei", aistack_fuzz::request_tei),
    ("request_search", aistack_fuzz::request_search),
    ("request_documents", aistack_fuzz::request_documents),
    ("filter", aistack_fuzz::filter),
    ("chunker", aistack_fuzz::chunker),
    ("log_frames", aistack_fuzz::log_frames),
    ("checkpoint", aistack_fuzz::checkpoint),
    ("config", aistack_fuzz::config),
];

/// Mutations run of each of up to [`MUTATED_FILES`] corpus files per target (every file runs
/// once as it is).
const MUTATIONS: usize = 40;
const MUTATED_FILES: usize = 25;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

/// A deterministic mutation of `input` (and of `other`, for splices).
fn mutate(input: &[u8], other: &[u8], mut x: u64) -> Vec<u8> {
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = input.to_vec();
    for _ in 0..1 + next() % 4 {
        let at = |n: u64, len: usize| {
            if len == 0 {
                0
            } else {
                (n % len as u64) as usize
            }
        };
        match next() % 6 {
            0 if !out.is_empty() => {
                let i = at(next(), out.len());
                out[i] ^= 1 << (next() % 8);
            }
            1 => {
                let i = at(next(), out.len() + 1);
                out.truncate(i);
            }
            2 if !out.is_empty() => {
                let i = at(next(), out.len());
                let b = [0u8, 0xff, b'"', b'{', b'[', b'\\', b'0', 0x7f][next() as usize % 8];
                out.insert(i, b);
            }
            3 if !out.is_empty() => {
                let i = at(next(), out.len());
                let j = (i + 1 + at(next(), 16)).min(out.len());
                let piece = out[i..j].to_vec();
                out.splice(j..j, piece.iter().copied().cycle().take(piece.len() * 8));
            }
            4 => {
                let i = at(next(), out.len() + 1);
                let j = at(next(), other.len() + 1);
                out.truncate(i);
                out.extend_from_slice(&other[j..]);
            }
            _ => {
                let i = at(next(), out.len() + 1);
                out.splice(i..i, (next() as u32).to_le_bytes());
            }
        }
    }
    out
}

#[test]
fn every_target_holds_over_its_corpus_and_mutations() {
    for (name, target) in TARGETS {
        let files = corpus(name);
        assert!(!files.is_empty(), "{name} has no corpus");
        let every = files.len().div_ceil(MUTATED_FILES);
        for (i, (path, input)) in files.iter().enumerate() {
            let caught = std::panic::catch_unwind(|| target(input));
            assert!(caught.is_ok(), "{name}: {path} broke an invariant");
            if i % every != 0 {
                continue;
            }
            let other = &files[(i + 1) % files.len()].1;
            for m in 0..MUTATIONS {
                let mutated = mutate(input, other, (i * 7919 + m) as u64 * 0x9E37_79B9 + 1);
                let caught = std::panic::catch_unwind(|| target(&mutated));
                assert!(
                    caught.is_ok(),
                    "{name}: mutation {m} of {path} broke an invariant; input: {:?}",
                    String::from_utf8_lossy(&mutated)
                );
            }
        }
    }
}
