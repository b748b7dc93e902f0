//! `cargo fuzz run --features libfuzzer request_tei`: see `aistack_fuzz::request_tei`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aistack_fuzz::request_tei(data));
