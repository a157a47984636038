//! ONNX files: the `ModelProto` protobuf walked far enough to find every
//! tensor whose bytes live in another file (`TensorProto.external_data`).
//!
//! This is a format check, not a parser: it establishes that the file is a
//! well-formed protobuf as far as it reads (every message reached, every
//! field's varint and length inside its message) and lists the external data
//! files with how far into each the graph's tensors read. Whether a location
//! is a safe path inside the model folder, and whether that file is long
//! enough, is the caller's question (`acquire/validate.py` answers it with
//! the project's path checks).
//!
//! The walk descends only into the messages that can hold a `TensorProto`
//! (see [`child`]); every other length-delimited field, raw tensor bytes
//! included, is skipped by its length without being read. Every varint and
//! length is bounds-checked and every byte access goes through `get`, so no
//! input panics; nesting is capped at [`MAX_DEPTH`] and the walk's own stack
//! holds one frame per level, so a hostile file costs no more memory than
//! the distinct external locations it names.
//!
//! This module uses nothing else from this crate but `mapped`, so the fuzz
//! crate in `rust/fuzz` can compile the two alone (`#[path]`).
//!
//! The file is memory-mapped read-only, as the safetensors reader does: the
//! pages of skipped tensor bytes are never faulted in. A file truncated in
//! place while mapped faults on access (SIGBUS); the cache never does that
//! (files are written under a temporary name and renamed into place).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::mapped::{map_regular, MapError, OpenError};

/// Deepest nesting of messages the walk follows (the model is depth 0). A
/// real graph nests a few levels (a subgraph in an `If` in a loop body);
/// the cap keeps a hostile file from making the walk's stack grow.
pub const MAX_DEPTH: usize = 64;

/// Protobuf's largest field number (2^29 - 1).
const MAX_FIELD: u64 = (1 << 29) - 1;

/// A varint is at most 10 bytes (64 bits, 7 per byte).
const MAX_VARINT: usize = 10;

/// How much of a name or a value an error message quotes.
const QUOTE: usize = 120;

/// What is wrong with a file's bytes. Pure data, so the fuzz target and the
/// unit tests can check it without a file. Byte positions are from the start
/// of the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("not a regular file (a FIFO, socket or device?)")]
    NotRegularFile,
    // A ModelProto starts with field 1 (ir_version, varint): tag byte 0x08.
    // Every writer puts it first; an HTML error page or a Git LFS pointer
    // served in place of the file does not start so.
    #[error("does not start like an ONNX ModelProto (an HTML page or an LFS pointer?)")]
    NotModelProto,
    #[error("truncated or malformed protobuf varint at byte {at}")]
    Varint { at: usize },
    #[error("protobuf field number {number} at byte {at} is out of range (1 to 2^29 - 1)")]
    FieldNumber { number: u64, at: usize },
    #[error("protobuf wire type {wire} (field {number} at byte {at}) is not used by ONNX")]
    WireType { wire: u8, number: u64, at: usize },
    #[error(
        "a protobuf field runs past the end of its message (field {number} at byte {at} \
         needs {len} bytes, {room} are left)"
    )]
    PastEnd {
        number: u64,
        at: usize,
        len: u64,
        room: usize,
    },
    #[error("graphs nested more than {MAX_DEPTH} deep")]
    TooDeep,
    #[error("an external_data entry's {which} at byte {at} is not a string (wire type {wire})")]
    EntryNotString {
        which: &'static str,
        at: usize,
        wire: u8,
    },
    #[error("an external_data {which} at byte {at} is not UTF-8")]
    NotUtf8 { which: &'static str, at: usize },
    #[error(
        "tensor {tensor:?}: external data offset/length [{offset:?}, {length:?}] are not numbers"
    )]
    NotNumbers {
        tensor: String,
        offset: String,
        length: String,
    },
    #[error(
        "tensor {tensor:?}: external data offset {offset} + length {length} \
         is past any file (over 2^64 bytes)"
    )]
    TooFar {
        tensor: String,
        offset: String,
        length: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("{path} is not a valid ONNX file: {reason}")]
    Format { path: PathBuf, reason: FormatError },
}

/// One file the graph keeps tensor bytes in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalFile {
    /// As the graph spells it (`""` when a tensor names none); relative to
    /// the graph's folder by the ONNX spec, but not checked here.
    pub location: String,
    /// `offset + length` of the tensor that reads furthest into it: the file
    /// must be at least this long.
    pub end: u64,
    /// That tensor's name (invalid UTF-8 replaced), for messages.
    pub tensor: String,
}

/// The messages that lead to a `TensorProto` (onnx.proto3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    Model,
    Training,
    Function,
    Graph,
    Node,
    Attribute,
    Sparse,
    Tensor,
}

/// Which sub-message a length-delimited field of `msg` holds, for the fields
/// the walk follows: it reaches every `TensorProto`, in graphs nested in
/// attributes, functions and training info too.
fn child(msg: Msg, field: u64) -> Option<Msg> {
    use Msg::*;
    Some(match (msg, field) {
        (Model, 7) => Graph,        // graph
        (Model, 20) => Training,    // training_info
        (Model, 25) => Function,    // functions
        (Training, 1 | 2) => Graph, // initialization, algorithm
        (Function, 7) => Node,      // node
        // attribute_proto: an attribute's default value, which can be a
        // tensor or a graph like any other attribute's.
        (Function, 11) => Attribute,
        (Graph, 1) => Node,    // node
        (Graph, 5) => Tensor,  // initializer
        (Graph, 15) => Sparse, // sparse_initializer
        (Node, 5) => Attribute,
        (Attribute, 5 | 10) => Tensor,  // t, tensors
        (Attribute, 6 | 11) => Graph,   // g, graphs
        (Attribute, 22 | 23) => Sparse, // sparse_tensor, sparse_tensors
        (Sparse, 1 | 2) => Tensor,      // values, indices
        _ => return None,
    })
}

/// TensorProto fields read in place.
const TENSOR_NAME: u64 = 8;
const TENSOR_EXTERNAL_DATA: u64 = 13;

/// One field of a message: its number, wire type, where its key starts and
/// its payload (for a varint, the varint's bytes).
struct Field<'a> {
    number: u64,
    wire: u8,
    at: usize,
    start: usize,
    data: &'a [u8],
}

/// The fields of one message, `buf[pos..end]`, in order.
struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8], start: usize, end: usize) -> Self {
        Self {
            buf,
            pos: start,
            end,
        }
    }

    fn varint(&mut self) -> Result<u64, FormatError> {
        let at = self.pos;
        let mut value = 0u64;
        for k in 0..MAX_VARINT {
            let i = at + k;
            let b = match self.buf.get(i) {
                Some(&b) if i < self.end => b,
                _ => return Err(FormatError::Varint { at }),
            };
            // The tenth byte holds bit 63 only; more would be a value
            // wider than 64 bits, which no encoder writes.
            if k == MAX_VARINT - 1 && b > 1 {
                return Err(FormatError::Varint { at });
            }
            value |= u64::from(b & 0x7f) << (7 * k);
            if b & 0x80 == 0 {
                self.pos = i + 1;
                return Ok(value);
            }
        }
        Err(FormatError::Varint { at })
    }

    fn next_field(&mut self) -> Result<Option<Field<'a>>, FormatError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let at = self.pos;
        let key = self.varint()?;
        let (number, wire) = (key >> 3, (key & 7) as u8);
        // Field 0 is not a field: protobuf parsers stop there with an error.
        if number == 0 || number > MAX_FIELD {
            return Err(FormatError::FieldNumber { number, at });
        }
        let mut start = self.pos;
        let len = match wire {
            0 => {
                self.varint()?;
                (self.pos - start) as u64
            }
            1 => 8,
            5 => 4,
            2 => {
                let n = self.varint()?;
                start = self.pos;
                n
            }
            // 3 and 4 are proto2 groups, 6 and 7 do not exist.
            _ => return Err(FormatError::WireType { wire, number, at }),
        };
        let room = self.end - start;
        let past = FormatError::PastEnd {
            number,
            at,
            len,
            room,
        };
        let n = usize::try_from(len).map_err(|_| past.clone())?;
        if n > room {
            return Err(past);
        }
        let data = self.buf.get(start..start + n).ok_or(past)?;
        self.pos = start + n;
        Ok(Some(Field {
            number,
            wire,
            at,
            start,
            data,
        }))
    }
}

/// Checks that `buf` (a whole file) is an ONNX `ModelProto` as far as the
/// walk reads, and lists the external data files its tensors name: each
/// location once, in the order first named, with the furthest byte any
/// tensor reads from it. Never panics.
pub fn external_data(buf: &[u8]) -> Result<Vec<ExternalFile>, FormatError> {
    if buf.len() < 2 || buf.first() != Some(&0x08) {
        return Err(FormatError::NotModelProto);
    }
    let mut found = Found::default();
    // Depth-first with one frame per level (the model at depth 0), so the
    // stack is bounded by MAX_DEPTH whatever the file holds.
    let mut stack = vec![(Msg::Model, Fields::new(buf, 0, buf.len()))];
    while let Some((msg, fields)) = stack.last_mut() {
        let msg = *msg;
        let Some(field) = fields.next_field()? else {
            stack.pop();
            continue;
        };
        let Some(kind) = child(msg, field.number).filter(|_| field.wire == 2) else {
            continue;
        };
        // The new message sits at depth stack.len().
        if stack.len() > MAX_DEPTH {
            return Err(FormatError::TooDeep);
        }
        let (start, end) = (field.start, field.start + field.data.len());
        if kind == Msg::Tensor {
            tensor(buf, start, end, &mut found)?;
        } else {
            stack.push((kind, Fields::new(buf, start, end)));
        }
    }
    Ok(found.files)
}

/// The external files seen so far, each once.
#[derive(Default)]
struct Found {
    files: Vec<ExternalFile>,
    index: HashMap<String, usize>,
}

/// A `TensorProto`: its name and, if it has any `external_data` entry, the
/// `location`, `offset` and `length` they give (a later entry with the same
/// key wins, as a protobuf map would have it; `offset` and `length` default
/// to 0, `location` to the empty name, which the caller refuses).
fn tensor(buf: &[u8], start: usize, end: usize, found: &mut Found) -> Result<(), FormatError> {
    let mut name: &[u8] = b"";
    let mut external = false;
    let (mut location, mut offset, mut length) = ("", "0", "0");
    let mut fields = Fields::new(buf, start, end);
    while let Some(f) = fields.next_field()? {
        match (f.number, f.wire) {
            (TENSOR_NAME, 2) => name = f.data,
            (TENSOR_EXTERNAL_DATA, 2) => {
                external = true;
                let (key, value) = entry(buf, f.start, f.start + f.data.len())?;
                match key {
                    "location" => location = value,
                    "offset" => offset = value,
                    "length" => length = value,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if !external {
        return Ok(());
    }
    let tensor_name = || quote(&String::from_utf8_lossy(name));
    let (o, l) = match (number(offset), number(length)) {
        (Some(o), Some(l)) => (o, l),
        _ => {
            return Err(FormatError::NotNumbers {
                tensor: tensor_name(),
                offset: quote(offset),
                length: quote(length),
            })
        }
    };
    let reach = o.zip(l).and_then(|(o, l)| o.checked_add(l));
    let Some(reach) = reach else {
        return Err(FormatError::TooFar {
            tensor: tensor_name(),
            offset: quote(offset),
            length: quote(length),
        });
    };
    match found
        .index
        .get(location)
        .and_then(|&i| found.files.get_mut(i))
    {
        Some(file) => {
            if reach > file.end {
                file.end = reach;
                file.tensor = tensor_name();
            }
        }
        None => {
            found.index.insert(location.to_string(), found.files.len());
            found.files.push(ExternalFile {
                location: location.to_string(),
                end: reach,
                tensor: tensor_name(),
            });
        }
    }
    Ok(())
}

/// A `StringStringEntryProto`: key (field 1) and value (field 2), each
/// defaulting to "" and the last one winning; other fields are unknown ones
/// and skipped.
fn entry(buf: &[u8], start: usize, end: usize) -> Result<(&str, &str), FormatError> {
    let (mut key, mut value) = ("", "");
    let mut fields = Fields::new(buf, start, end);
    while let Some(f) = fields.next_field()? {
        let (slot, which) = match f.number {
            1 => (&mut key, "key"),
            2 => (&mut value, "value"),
            _ => continue,
        };
        if f.wire != 2 {
            return Err(FormatError::EntryNotString {
                which,
                at: f.at,
                wire: f.wire,
            });
        }
        *slot =
            std::str::from_utf8(f.data).map_err(|_| FormatError::NotUtf8 { which, at: f.start })?;
    }
    Ok((key, value))
}

/// A non-empty string of ASCII digits as a number: `Some(Some(n))`, or
/// `Some(None)` when it is one but does not fit 64 bits; `None` when it is
/// not one at all.
fn number(s: &str) -> Option<Option<u64>> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().try_fold(0u64, |n, b| {
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    }))
}

/// At most `QUOTE` characters of `s`, for a message.
fn quote(s: &str) -> String {
    match s.char_indices().nth(QUOTE) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// [`external_data`] of the file at `path`, memory-mapped (see the module
/// comment): only the bytes of the messages walked are read.
pub fn read_external_data(path: &Path) -> Result<Vec<ExternalFile>, OnnxError> {
    let format = |reason| OnnxError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let map = map_regular(path, 2, "an .onnx file").map_err(|e| match e {
        MapError::Open(e) => OnnxError::Open(e),
        MapError::NotRegularFile => format(FormatError::NotRegularFile),
        // Any file this short is refused anyway.
        MapError::TooShort(_) => format(FormatError::NotModelProto),
    })?;
    external_data(&map).map_err(format)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            out.push(b | if n > 0 { 0x80 } else { 0 });
            if n == 0 {
                return out;
            }
        }
    }

    /// A length-delimited field.
    fn field(num: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = varint(num << 3 | 2);
        v.extend(varint(payload.len() as u64));
        v.extend_from_slice(payload);
        v
    }

    /// A varint field.
    fn int(num: u64, value: u64) -> Vec<u8> {
        let mut v = varint(num << 3);
        v.extend(varint(value));
        v
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    /// A TensorProto named `name` whose bytes are in `external`.
    fn tensor_ext(name: &str, external: &[(&str, &str)]) -> Vec<u8> {
        let mut t = cat(&[&int(1, 4), &int(2, 1), &field(8, name.as_bytes())]);
        for (k, v) in external {
            t.extend(field(
                13,
                &cat(&[&field(1, k.as_bytes()), &field(2, v.as_bytes())]),
            ));
        }
        t.extend(int(14, 1)); // data_location EXTERNAL
        t
    }

    /// A ModelProto with `graph` (its fields) and opset 17.
    fn model(graph: &[u8]) -> Vec<u8> {
        cat(&[&int(1, 8), &field(7, graph), &field(8, &int(2, 17))])
    }

    fn ext(location: &str, end: u64, tensor: &str) -> ExternalFile {
        ExternalFile {
            location: location.into(),
            end,
            tensor: tensor.into(),
        }
    }

    #[test]
    fn a_model_with_inline_tensors_has_no_external_data() {
        let t = cat(&[&int(1, 1), &int(2, 1), &field(8, b"w"), &field(9, &[0; 4])]);
        let node = cat(&[&field(1, b"w"), &field(2, b"y"), &field(4, b"Identity")]);
        let graph = cat(&[&field(1, &node), &field(2, b"g"), &field(5, &t)]);
        assert_eq!(external_data(&model(&graph)), Ok(vec![]));
        // The smallest ModelProto: ir_version alone.
        assert_eq!(external_data(&[0x08, 0x07]), Ok(vec![]));
    }

    #[test]
    fn external_entries_are_read_defaulted_and_merged_per_location() {
        let graph = cat(&[
            &field(
                5,
                &tensor_ext(
                    "a",
                    &[("location", "w.bin"), ("offset", "0"), ("length", "16")],
                ),
            ),
            &field(
                5,
                &tensor_ext(
                    "b",
                    &[("location", "w.bin"), ("offset", "16"), ("length", "8")],
                ),
            ),
            &field(
                5,
                &tensor_ext(
                    "c",
                    &[("location", "w.bin"), ("offset", "4"), ("length", "4")],
                ),
            ),
            // No offset: 0; keys in any order, unknown keys ignored.
            &field(
                5,
                &tensor_ext(
                    "d",
                    &[
                        ("checksum", "x"),
                        ("length", "0032"),
                        ("location", "sub/x.dat"),
                    ],
                ),
            ),
            // A later entry with the same key wins.
            &field(
                5,
                &tensor_ext("e", &[("location", "gone"), ("location", "y")]),
            ),
            // An entry without location: the empty name (the caller refuses it).
            &field(5, &tensor_ext("f", &[("checksum", "x")])),
        ]);
        assert_eq!(
            external_data(&model(&graph)),
            Ok(vec![
                ext("w.bin", 24, "b"),
                ext("sub/x.dat", 32, "d"),
                ext("y", 0, "e"),
                ext("", 0, "f"),
            ])
        );
    }

    #[test]
    fn tensors_in_nested_messages_are_reached() {
        let t = |n: &str| tensor_ext(n, &[("location", n), ("length", "1")]);
        let sparse = cat(&[&field(1, &t("values")), &field(2, &t("indices"))]);
        let subgraph = cat(&[&field(5, &t("sub_init")), &field(15, &sparse)]);
        let attr_g = cat(&[&field(1, b"then_branch"), &field(6, &subgraph)]);
        let attr_t = cat(&[&field(1, b"value"), &field(5, &t("attr_t"))]);
        let attr_ts = cat(&[
            &field(10, &t("attr_ts")),
            &field(11, &field(5, &t("graphs"))),
        ]);
        let attr_sp = cat(&[&field(22, &sparse), &field(23, &field(1, &t("sps")))]);
        let node = cat(&[
            &field(5, &attr_g),
            &field(5, &attr_t),
            &field(5, &attr_ts),
            &field(5, &attr_sp),
        ]);
        let graph = field(1, &node);
        let training = cat(&[
            &field(1, &field(5, &t("tinit"))),
            &field(2, &field(5, &t("talgo"))),
        ]);
        let function = cat(&[
            &field(7, &field(5, &attr_t)),
            &field(11, &cat(&[&field(5, &t("default"))])),
        ]);
        let m = cat(&[&model(&graph), &field(20, &training), &field(25, &function)]);
        let names: Vec<String> = external_data(&m)
            .unwrap()
            .into_iter()
            .map(|f| f.location)
            .collect();
        assert_eq!(
            names,
            [
                "sub_init", "values", "indices", "attr_t", "attr_ts", "graphs", "sps", "tinit",
                "talgo", "default"
            ]
        );
        // Tensor-like bytes in fields the walk does not follow are skipped:
        // a graph's doc_string (10), a model's metadata_props (14).
        let hidden = cat(&[&field(10, &field(5, &t("no"))), &field(5, &t("yes"))]);
        let m = cat(&[&model(&hidden), &field(14, &field(7, &field(5, &t("no"))))]);
        let names: Vec<_> = external_data(&m)
            .unwrap()
            .into_iter()
            .map(|f| f.location)
            .collect();
        assert_eq!(names, ["yes"]);
    }

    #[test]
    fn nesting_is_capped() {
        // A graph in an attribute in a node in a graph ...: each level of
        // graph -> node -> attribute -> graph adds 3.
        let nest = |levels: usize| {
            let mut g = field(5, &tensor_ext("t", &[("location", "x")]));
            for _ in 0..levels {
                g = field(1, &field(5, &field(6, &g)));
            }
            model(&g)
        };
        // The model is depth 0, its graph 1, so 21 levels put the innermost
        // graph at depth 64 and its tensor at 65.
        assert!(external_data(&nest(20)).is_ok());
        assert_eq!(external_data(&nest(21)), Err(FormatError::TooDeep));
        assert_eq!(external_data(&nest(1000)), Err(FormatError::TooDeep));
    }

    #[test]
    fn malformed_protobuf_is_an_error() {
        let good = model(&field(5, &tensor_ext("w", &[("location", "w.bin")])));
        // Every truncation of a good file fails, except at the boundary of a
        // top-level field (protobuf has no end marker): after the ir_version,
        // and before the opset (its last 4 bytes).
        for cut in 2..good.len() {
            let r = external_data(&good[..cut]);
            assert!(
                r.is_err() || [2, good.len() - 4].contains(&cut),
                "cut at {cut}: {r:?}"
            );
        }
        let cases: &[(&[u8], &str)] = &[
            (b"", "does not start like"),
            (b"\x08", "does not start like"),
            (b"<html>rate limited</html>", "does not start like"),
            (
                b"version https://git-lfs.github.com/spec/v1",
                "does not start like",
            ),
            (b"\x08\x80", "varint at byte 1"),
            (b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", ""), // 10 bytes, bit 63: fine
            (
                b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02",
                "varint at byte 1",
            ),
            (
                b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
                "varint at byte 1",
            ),
            (b"\x08\x01\x00\x01", "field number 0 at byte 2"),
            (b"\x08\x01\x0b", "wire type 3"),
            (b"\x08\x01\x0e", "wire type 6"),
            (b"\x08\x01\x09\x00\x00", "needs 8 bytes, 2 are left"),
            (b"\x08\x01\x0d\x00\x00\x00\x00", ""),
            (
                b"\x08\x01\x3a\x05\x00",
                "field 7 at byte 2 needs 5 bytes, 1 are left",
            ),
            // A length of 2^64 - 1.
            (
                b"\x08\x01\x3a\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
                "needs 18446744073709551615 bytes",
            ),
            // Inside the graph: a tensor whose length runs past the graph.
            (b"\x08\x01\x3a\x02\x2a\x05", "field 5 at byte 4 needs 5"),
        ];
        for (bytes, want) in cases {
            let r = external_data(bytes);
            if want.is_empty() {
                assert!(r.is_ok(), "{bytes:?}: {r:?}");
            } else {
                let err = r.unwrap_err().to_string();
                assert!(err.contains(want), "{bytes:?}: {err:?} lacks {want:?}");
            }
        }
    }

    #[test]
    fn bad_external_entries_are_errors() {
        let one = |kv: &[(&str, &str)]| external_data(&model(&field(5, &tensor_ext("w", kv))));
        let err = |kv: &[(&str, &str)]| one(kv).unwrap_err().to_string();
        assert!(err(&[("location", "x"), ("offset", "1e3")])
            .contains(r#"["1e3", "0"] are not numbers"#));
        assert!(err(&[("location", "x"), ("length", "")]).contains("are not numbers"));
        assert!(err(&[("location", "x"), ("length", "-1")]).contains("are not numbers"));
        assert!(err(&[("location", "x"), ("length", "١")]).contains("are not numbers"));
        assert!(
            err(&[("location", "x"), ("length", "18446744073709551616")]).contains("past any file")
        );
        assert!(
            err(&[("offset", "18446744073709551615"), ("length", "1")]).contains("past any file")
        );
        assert_eq!(
            one(&[("offset", "18446744073709551615")]),
            Ok(vec![ext("", u64::MAX, "w")])
        );
        let long = "9".repeat(10_000);
        assert!(err(&[("length", &long)]).len() < 400, "quoted in full");
        // Key or value not a string, or not UTF-8.
        let tensor = |entry: &[u8]| model(&field(5, &cat(&[&field(8, b"w"), &field(13, entry)])));
        let r = external_data(&tensor(&int(1, 5))).unwrap_err();
        assert!(
            matches!(
                r,
                FormatError::EntryNotString {
                    which: "key",
                    wire: 0,
                    ..
                }
            ),
            "{r}"
        );
        let r = external_data(&tensor(&cat(&[&field(1, b"location"), &field(2, b"\xff")])))
            .unwrap_err();
        assert!(
            matches!(r, FormatError::NotUtf8 { which: "value", .. }),
            "{r}"
        );
        // Unknown fields of an entry are skipped, whatever they hold.
        let odd = cat(&[
            &field(1, b"location"),
            &field(2, b"x"),
            &field(3, b"\xff"),
            &int(4, 1),
        ]);
        assert_eq!(external_data(&tensor(&odd)), Ok(vec![ext("x", 0, "w")]));
    }

    #[test]
    fn files_that_are_not_onnx_files() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.onnx");
        std::fs::write(&empty, b"").unwrap();
        let e = read_external_data(&empty).unwrap_err();
        assert!(matches!(
            e,
            OnnxError::Format {
                reason: FormatError::NotModelProto,
                ..
            }
        ));
        assert!(
            e.to_string()
                .contains("empty.onnx is not a valid ONNX file"),
            "{e}"
        );
        assert!(matches!(
            read_external_data(dir.path()),
            Err(OnnxError::Open(OpenError::IsADirectory { .. }))
        ));
        let missing = read_external_data(&dir.path().join("missing.onnx")).unwrap_err();
        assert!(
            matches!(missing, OnnxError::Open(OpenError::Io { ref source, .. }) if source.kind() == std::io::ErrorKind::NotFound)
        );
        #[cfg(unix)]
        {
            let fifo = dir.path().join("fifo.onnx");
            let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            assert!(matches!(
                read_external_data(&fifo),
                Err(OnnxError::Format {
                    reason: FormatError::NotRegularFile,
                    ..
                })
            ));
        }
        let good = dir.path().join("model.onnx");
        std::fs::write(
            &good,
            model(&field(
                5,
                &tensor_ext("w", &[("location", "d"), ("length", "4")]),
            )),
        )
        .unwrap();
        assert_eq!(read_external_data(&good).unwrap(), vec![ext("d", 4, "w")]);
    }
}
