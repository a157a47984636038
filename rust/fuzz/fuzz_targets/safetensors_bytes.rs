//! Raw file bytes, length prefix included: the prefix checks and the header cap.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::check(data));
