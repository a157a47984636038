//! The resume state file beside a `.part`: whatever bytes are on disk.
//! Property: no panic; every accepted state has ordered pieces within the
//! size, and encodes back to text that decodes to the same state.
#![no_main]

use _core::download::fuzzing::State;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(st) = State::decode(text) {
        for p in &st.pieces {
            assert!(p.start < p.end && p.end <= st.size);
        }
        // Lines hold no newline once decoded only if the round trip is exact.
        if !st.url.contains('\r') && st.etag.as_deref().map_or(true, |e| !e.contains('\r')) {
            assert_eq!(State::decode(&st.encode()).as_ref(), Some(&st));
        }
    }
});
