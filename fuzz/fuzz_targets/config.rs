//! `cargo fuzz run --features libfuzzer config`: see `aistack_fuzz::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aistack_fuzz::config(data));
