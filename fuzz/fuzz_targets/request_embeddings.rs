//! `cargo fuzz run --features libfuzzer request_embeddings`: see `aistack_fuzz::request_embeddings`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aistack_fuzz::request_embeddings(data));
