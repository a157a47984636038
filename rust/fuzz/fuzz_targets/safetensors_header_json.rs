//! The input is the header text; the length prefix is made to fit and the
//! first byte says how many data bytes follow, so the fuzzer spends its time
//! on the JSON, offsets and shapes instead of guessing a matching prefix.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&data_len, header)) = data.split_first() else {
        return;
    };
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header);
    file.resize(file.len() + usize::from(data_len), 0);
    common::check(&file);
});
