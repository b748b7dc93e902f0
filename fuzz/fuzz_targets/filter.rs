//! `cargo fuzz run --features libfuzzer filter`: see `aistack_fuzz::filter`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aistack_fuzz::filter(data));
