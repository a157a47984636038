//! Shared by the targets: validate, then hold the validator to its promises.

#[path = "../../src/mapped.rs"]
#[allow(dead_code)]
pub mod mapped;
#[path = "../../src/safetensors.rs"]
#[allow(dead_code)]
pub mod st;

/// Whatever `validate` accepts, every tensor span lies inside the buffer,
/// converts without panicking, and the reference crate accepts the file too
/// (we are stricter, never looser).
pub fn check(buf: &[u8]) {
    let Ok(header) = st::validate(buf) else {
        return;
    };
    let start = header.data_start();
    for name in header.metadata.offset_keys() {
        let info = header.metadata.info(&name).expect("a listed name has info");
        let (s, e) = info.data_offsets;
        let span = &buf[start + s..start + e];
        let _ = st::widen_to_f32(info.dtype, span);
    }
    assert!(
        safetensors::SafeTensors::deserialize(buf).is_ok(),
        "accepted a file the reference crate refuses"
    );
}
