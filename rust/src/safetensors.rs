//! Safetensors files: the header is validated in full before any tensor byte
//! is handed out, then tensors are byte spans of a read-only memory map.
//!
//! Parsing and the per-tensor checks are the `safetensors` crate's (its
//! `Metadata` deserializer: UTF-8, JSON object, known dtypes, dtype size x
//! shape = span with checked arithmetic, offsets sorted, contiguous from 0 and
//! non-overlapping). What it leaves out, or does in a way we cannot use
//! as is, is added here:
//! - duplicate keys (the spec forbids them; the crate keeps the last one, so a
//!   file could mean different tensors to different readers);
//! - the header must begin with `{` (the spec's MUST; the crate skips leading
//!   whitespace);
//! - header + data = file length with checked arithmetic: the crate's
//!   `read_metadata` adds the tensors' end to the header length unchecked, which
//!   panics in builds with overflow checks (tests, fuzzing) for offsets near
//!   `usize::MAX`, so we run its `Metadata` deserializer ourselves and compare;
//! - errors name the file and, where the crate does not, the tensor and the
//!   numbers.
//!
//! This module uses nothing else from this crate but `mapped`, so the fuzz
//! crate in `rust/fuzz` can compile the two alone (`#[path]`) without the
//! HTTP stack.
//!
//! The map is read-only and shared; a file changed or truncated in place
//! while mapped changes what views show or faults on access (SIGBUS). The
//! cache never does that: files are written under a temporary name and
//! renamed into place.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Metadata, TensorInfo};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::mapped::{map_regular, MapError, OpenError};

pub use safetensors::Dtype;

/// The reference implementation's cap (its `MAX_HEADER_SIZE`), checked here
/// first so that the error can give the numbers and nothing that size is read.
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// Bytes of the little-endian `u64` header length that starts every file.
const LEN_PREFIX: usize = 8;

/// What is wrong with a file's bytes. Pure data, so the fuzz target and the
/// unit tests can check it without a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("not a regular file (a FIFO, socket or device?)")]
    NotRegularFile,
    #[error("{0} bytes is shorter than the 8-byte header length")]
    TooShort(usize),
    #[error("header length {0} is over the {MAX_HEADER_LEN}-byte cap")]
    HeaderTooLarge(u64),
    #[error("header length {header} runs past the end of the file ({file} bytes)")]
    HeaderPastEnd { header: u64, file: usize },
    #[error("header is not UTF-8: {0}")]
    NotUtf8(String),
    #[error("header does not begin with '{{' (a safetensors header is a JSON object)")]
    NotAnObject,
    #[error("header has the key {0:?} twice")]
    DuplicateKey(String),
    #[error("header: {0}")]
    Header(String),
    #[error("tensor {name:?}: {why}")]
    Tensor { name: String, why: String },
    #[error("tensors end at byte {data_end} of the data section but it holds {data_len} bytes ({})",
        if data_end < data_len { "trailing bytes after the last tensor" } else { "offsets past the end of the file" })]
    DataLength { data_end: usize, data_len: usize },
}

#[derive(Debug, thiserror::Error)]
pub enum SafetensorsError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("{path} is not a valid safetensors file: {reason}")]
    Format { path: PathBuf, reason: FormatError },
    #[error("{path} has no tensor named {name:?}")]
    NoSuchTensor { path: PathBuf, name: String },
    #[error("tensor {name:?} in {path} is {dtype}: {hint}")]
    Unsupported {
        path: PathBuf,
        name: String,
        dtype: String,
        hint: &'static str,
    },
}

/// A validated header: its length in bytes (after the 8-byte prefix) and the
/// crate's `Metadata`.
#[derive(Debug, Clone)]
pub struct Header {
    pub len: usize,
    pub metadata: Metadata,
}

impl Header {
    /// Where the data section starts in the file.
    pub fn data_start(&self) -> usize {
        // Cannot overflow: `validate` checked 8 + len <= the buffer's length.
        LEN_PREFIX + self.len
    }
}

/// Validates the header of a whole file held in `buf`. Never panics and never
/// allocates more than the (capped) header needs.
pub fn validate(buf: &[u8]) -> Result<Header, FormatError> {
    let prefix: [u8; LEN_PREFIX] = buf
        .get(..LEN_PREFIX)
        .and_then(|b| b.try_into().ok())
        .ok_or(FormatError::TooShort(buf.len()))?;
    let n64 = u64::from_le_bytes(prefix);
    if n64 > MAX_HEADER_LEN {
        return Err(FormatError::HeaderTooLarge(n64));
    }
    let past_end = FormatError::HeaderPastEnd {
        header: n64,
        file: buf.len(),
    };
    let n = usize::try_from(n64).map_err(|_| past_end.clone())?;
    let end = n.checked_add(LEN_PREFIX).ok_or(past_end.clone())?;
    let raw = buf.get(LEN_PREFIX..end).ok_or(past_end)?;
    let text = std::str::from_utf8(raw).map_err(|e| FormatError::NotUtf8(e.to_string()))?;
    if !text.starts_with('{') {
        return Err(FormatError::NotAnObject);
    }
    // Before the crate's parse: it would keep the last of two equal keys and
    // then report whatever that does to the offsets. A JSON error here is left
    // for the crate to describe.
    if let Ok(Some(key)) = first_duplicate_key(text) {
        return Err(FormatError::DuplicateKey(key));
    }
    let metadata: Metadata = serde_json::from_str(text).map_err(|e| explain(text, e))?;
    let data_end = metadata.data_len();
    let data_len = buf.len() - end;
    if data_end != data_len {
        return Err(FormatError::DataLength { data_end, data_len });
    }
    Ok(Header { len: n, metadata })
}

/// The crate reports a span that does not match dtype x shape without naming
/// the tensor; find it so the message can. Streams over the entries (one
/// `TensorInfo` at a time) so a huge hostile header costs no more memory on
/// this error path than the crate's own parse did.
fn explain(text: &str, err: serde_json::Error) -> FormatError {
    let msg = err.to_string();
    let span_error = ["invalid shape, data type, or offset", "overflow computing"];
    if !span_error.iter().any(|p| msg.starts_with(p)) {
        return FormatError::Header(msg);
    }
    struct FirstBadSpan;
    impl<'de> Visitor<'de> for FirstBadSpan {
        type Value = Option<FormatError>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(name) = map.next_key::<String>()? {
                if found.is_some() || name == "__metadata__" {
                    map.next_value::<IgnoredAny>()?; // serde_json wants the map consumed
                    continue;
                }
                let info: TensorInfo = map.next_value()?;
                found = span_mismatch(&info).map(|why| FormatError::Tensor { name, why });
            }
            Ok(found)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_map(FirstBadSpan)
        .ok()
        .flatten()
        .unwrap_or(FormatError::Header(msg))
}

fn span_mismatch(info: &TensorInfo) -> Option<String> {
    let (s, e) = info.data_offsets;
    let bits = info
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .and_then(|n| n.checked_mul(info.dtype.bitsize()));
    let span = e.checked_sub(s);
    if bits.map(|b| b / 8) == span {
        return None;
    }
    Some(format!(
        "{} x {:?} needs {} bytes but data_offsets [{s}, {e}] span {}",
        info.dtype,
        info.shape,
        bits.map_or("more than usize::MAX".into(), |b| (b / 8).to_string()),
        span.map_or("a negative length".into(), |n| n.to_string()),
    ))
}

/// The first key that occurs twice at the top level or in `__metadata__`.
/// (Keys inside a tensor's entry are checked by the crate's derived
/// deserializer, which rejects duplicate fields.)
fn first_duplicate_key(text: &str) -> Result<Option<String>, serde_json::Error> {
    struct Keys {
        top: bool,
    }
    impl<'de> Visitor<'de> for Keys {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None) // `"__metadata__": null`
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut seen = HashSet::new();
            let mut dup = None;
            while let Some(key) = map.next_key::<String>()? {
                let inner = if self.top && key == "__metadata__" {
                    map.next_value_seed(Keys { top: false })?
                } else {
                    map.next_value::<IgnoredAny>()?;
                    None
                };
                dup = dup.or(inner);
                if dup.is_none() && !seen.insert(key.clone()) {
                    dup = Some(key);
                }
            }
            Ok(dup)
        }
    }
    impl<'de> de::DeserializeSeed<'de> for Keys {
        type Value = Option<String>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    de::DeserializeSeed::deserialize(Keys { top: true }, &mut de)
}

/// A validated safetensors file, memory-mapped read-only.
#[derive(Debug)]
pub struct SafetensorsFile {
    path: PathBuf,
    mmap: Mmap,
    header: Header,
}

impl SafetensorsFile {
    /// Maps `path` and validates its header; nothing else is read.
    pub fn open(path: &Path) -> Result<Self, SafetensorsError> {
        let format = |reason| SafetensorsError::Format {
            path: path.to_path_buf(),
            reason,
        };
        let mmap =
            map_regular(path, LEN_PREFIX as u64, "a .safetensors file").map_err(|e| match e {
                MapError::Open(e) => SafetensorsError::Open(e),
                MapError::NotRegularFile => format(FormatError::NotRegularFile),
                MapError::TooShort(len) => format(FormatError::TooShort(len as usize)),
            })?;
        let header = validate(&mmap).map_err(format)?;
        Ok(Self {
            path: path.to_path_buf(),
            mmap,
            header,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Tensor names, sorted (as the reference `safe_open.keys()`).
    pub fn names(&self) -> Vec<String> {
        let mut names = self.header.metadata.offset_keys();
        names.sort_unstable();
        names
    }

    pub fn info(&self, name: &str) -> Result<&TensorInfo, SafetensorsError> {
        self.header
            .metadata
            .info(name)
            .ok_or_else(|| SafetensorsError::NoSuchTensor {
                path: self.path.clone(),
                name: name.to_string(),
            })
    }

    /// The tensor's bytes in the map.
    pub fn bytes(&self, name: &str) -> Result<(&TensorInfo, &[u8]), SafetensorsError> {
        let info = self.info(name)?;
        let (s, e) = info.data_offsets;
        let start = self.header.data_start();
        // Validated already; `get` keeps a wrong invariant an error, not a panic.
        let span = start
            .checked_add(s)
            .zip(start.checked_add(e))
            .and_then(|(a, b)| self.mmap.get(a..b))
            .ok_or_else(|| SafetensorsError::Format {
                path: self.path.clone(),
                reason: FormatError::Tensor {
                    name: name.to_string(),
                    why: "data_offsets outside the file".into(),
                },
            })?;
        Ok((info, span))
    }

    /// An F16 or BF16 tensor widened to f32 (an F32 one copied).
    pub fn to_f32(&self, name: &str) -> Result<Vec<f32>, SafetensorsError> {
        let (info, bytes) = self.bytes(name)?;
        widen_to_f32(info.dtype, bytes).ok_or_else(|| SafetensorsError::Unsupported {
            path: self.path.clone(),
            name: name.to_string(),
            dtype: info.dtype.to_string(),
            hint: "only F16, BF16 and F32 convert to float32",
        })
    }
}

/// Little-endian F16/BF16/F32 bytes as f32. `None` for other dtypes.
/// Aligned input goes through `half`'s slice conversion (SIMD where the CPU
/// has it); unaligned input (nothing in the format aligns tensors) is copied
/// through a small aligned buffer first.
pub fn widen_to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
    use half::{bf16, f16};
    let convert = |src: &[u16], dst: &mut [f32]| match dtype {
        Dtype::F16 => src.reinterpret_cast::<f16>().convert_to_f32_slice(dst),
        _ => src.reinterpret_cast::<bf16>().convert_to_f32_slice(dst),
    };
    match dtype {
        Dtype::F16 | Dtype::BF16 => {}
        Dtype::F32 => {
            return Some(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            )
        }
        _ => return None,
    }
    let n = bytes.len() / 2;
    let mut out = vec![0f32; n];
    // SAFETY: every bit pattern is a valid u16; `align_to` only reinterprets
    // the aligned middle part.
    let (head, mid, _) = unsafe { bytes.align_to::<u16>() };
    if cfg!(target_endian = "little") && head.is_empty() && mid.len() == n {
        convert(mid, &mut out);
    } else {
        const CHUNK: usize = 4096;
        let mut buf = [0u16; CHUNK];
        for (src, dst) in bytes.chunks(2 * CHUNK).zip(out.chunks_mut(CHUNK)) {
            let k = dst.len();
            for (b, c) in buf.iter_mut().zip(src.chunks_exact(2)) {
                *b = u16::from_le_bytes([c[0], c[1]]);
            }
            convert(&buf[..k], dst);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend_from_slice(data);
        v
    }

    const ONE: &str = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;

    #[test]
    fn accepts_a_valid_file_with_metadata() {
        let h = r#"{"__metadata__":{"format":"pt"},"b":{"dtype":"F16","shape":[2],"data_offsets":[8,12]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let hdr = validate(&file(h, &[0; 12])).unwrap();
        assert_eq!(hdr.metadata.offset_keys(), ["a", "b"]);
        assert_eq!(hdr.data_start(), 8 + h.len());
    }

    #[test]
    fn rejects_what_the_crate_rejects() {
        let cases: &[(&[u8], &str)] = &[
            (&[1, 2, 3], "shorter"),
            (&file(ONE, &[0; 7]), "offsets past the end"),
            (&file(ONE, &[0; 9]), "trailing bytes"),
            (&file("[1]", &[]), "begin with"),
            (&file("{\"a\":1}", &[]), "header:"),
            (
                &file(
                    r#"{"a":{"dtype":"F17","shape":[],"data_offsets":[0,0]}}"#,
                    &[],
                ),
                "unknown variant",
            ),
            (
                &file(
                    r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                    &[0; 8],
                ),
                "needs 12 bytes",
            ),
            (
                &file(
                    r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}"#,
                    &[0; 6],
                ),
                "invalid offset",
            ),
            (
                &file(
                    r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[1,5]}}"#,
                    &[0; 5],
                ),
                "invalid offset",
            ),
            (
                &file(
                    r#"{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}}"#,
                    &[],
                ),
                "header:",
            ),
        ];
        for (bytes, want) in cases {
            let err = validate(bytes).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        }
        let mut big = file(ONE, &[0; 8]);
        big[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            validate(&big).unwrap_err(),
            FormatError::HeaderTooLarge(u64::MAX)
        );
        big[..8].copy_from_slice(&1000u64.to_le_bytes());
        assert!(matches!(
            validate(&big),
            Err(FormatError::HeaderPastEnd { .. })
        ));
        let mut bad_utf8 = file(ONE, &[0; 8]);
        bad_utf8[9] = 0xff;
        assert!(matches!(validate(&bad_utf8), Err(FormatError::NotUtf8(_))));
    }

    #[test]
    fn rejects_what_the_crate_lets_through() {
        let dup = r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"a":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}"#;
        assert_eq!(
            validate(&file(dup, &[0; 4])).unwrap_err(),
            FormatError::DuplicateKey("a".into())
        );
        let escaped = r#"{"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},"\u0061":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}"#;
        assert!(matches!(
            validate(&file(escaped, &[])),
            Err(FormatError::DuplicateKey(_))
        ));
        let meta_dup = r#"{"__metadata__":{"k":"1","k":"2"}}"#;
        assert!(matches!(
            validate(&file(meta_dup, &[])),
            Err(FormatError::DuplicateKey(_))
        ));
        assert_eq!(
            validate(&file(&format!(" {ONE}"), &[0; 8])).unwrap_err(),
            FormatError::NotAnObject
        );
    }

    /// Eight U8 tensors of 2^61 - 1 bytes end at 2^64 - 8: the crate's
    /// unchecked `end + 8 + n` overflows there (a panic under overflow checks).
    #[test]
    fn offsets_near_usize_max_are_an_error_not_a_panic() {
        if usize::BITS != 64 {
            return;
        }
        let size = (1usize << 61) - 1;
        let entries: Vec<String> = (0..8)
            .map(|i| {
                format!(
                    r#""t{i}":{{"dtype":"U8","shape":[{size}],"data_offsets":[{},{}]}}"#,
                    i * size,
                    (i + 1) * size
                )
            })
            .collect();
        let h = format!("{{{}}}", entries.join(","));
        assert!(matches!(
            validate(&file(&h, &[])),
            Err(FormatError::DataLength { .. })
        ));
    }

    #[test]
    fn widening_matches_half_aligned_or_not() {
        let vals: Vec<f32> = (0..10_000).map(|i| (i as f32 - 5000.0) * 0.37).collect();
        let f16s: Vec<u8> = vals
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        let want: Vec<f32> = vals
            .iter()
            .map(|&v| half::f16::from_f32(v).to_f32())
            .collect();
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&f16s);
        assert_eq!(widen_to_f32(Dtype::F16, &f16s).unwrap(), want);
        assert_eq!(widen_to_f32(Dtype::F16, &shifted[1..]).unwrap(), want);
        let bf: Vec<u8> = vals
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect();
        let want: Vec<f32> = vals
            .iter()
            .map(|&v| half::bf16::from_f32(v).to_f32())
            .collect();
        assert_eq!(widen_to_f32(Dtype::BF16, &bf).unwrap(), want);
        assert_eq!(widen_to_f32(Dtype::I32, &bf), None);
    }
}
