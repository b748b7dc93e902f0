//! `cargo fuzz run --features libfuzzer checkpoint`: see `aistack_fuzz::checkpoint`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aistack_fuzz::checkpoint(data));
