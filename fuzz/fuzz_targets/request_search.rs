//! `cargo fuzz run --features libfuzzer request_search`: see `aistack_fuzz::request_search`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aistack_fuzz::request_search(data));
