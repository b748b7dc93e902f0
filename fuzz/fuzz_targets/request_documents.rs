//! `cargo fuzz run --features libfuzzer request_documents`: see `aistack_fuzz::request_documents`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aistack_fuzz::request_documents(data));
