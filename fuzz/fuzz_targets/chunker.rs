//! `cargo fuzz run --features libfuzzer chunker`: see `aistack_fuzz::chunker`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aistack_fuzz::chunker(data));
