//! `cargo fuzz run --features libfuzzer log_frames`: see `aistack_fuzz::log_frames`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aistack_fuzz::log_frames(data));
