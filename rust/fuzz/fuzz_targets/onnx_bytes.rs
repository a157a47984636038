//! Raw ONNX file bytes through the protobuf walk of rust/src/onnx.rs: no
//! input panics (every varint and length is bounds-checked), and what it
//! accepts keeps its promises.
#![no_main]

#[path = "../../src/mapped.rs"]
#[allow(dead_code)]
mod mapped;
#[path = "../../src/onnx.rs"]
#[allow(dead_code)]
mod onnx;

use std::collections::HashSet;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(files) = onnx::external_data(data) else {
        return;
    };
    // Each location once, and only from a file that starts like a ModelProto.
    let mut seen = HashSet::new();
    for f in &files {
        assert!(seen.insert(&f.location), "{:?} listed twice", f.location);
    }
    assert_eq!(data.first(), Some(&0x08));
    // A location is bytes of the file: a file cannot name more of them than
    // it holds (the walk copies nothing it did not read).
    let named: usize = files.iter().map(|f| f.location.len()).sum();
    assert!(named <= data.len());
});
