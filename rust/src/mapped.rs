//! A model file mapped read-only for a format check: the one way the ONNX
//! and safetensors readers open what they check.
//!
//! The path is stat'ed before it is opened (opening a FIFO would block until
//! a writer came), directories and other non-regular files are refused, and
//! only then is the file mapped, so that the pages a check skips are never
//! faulted in. A file changed or truncated in place while mapped changes the
//! bytes a reader sees or faults on access (SIGBUS); the cache never does
//! that (files are written under a temporary name and renamed into place).
//!
//! Like its two users, this module uses nothing else from the crate, so the
//! fuzz crate compiles it beside them by `#[path]`; they reach it as
//! `super::mapped`.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

/// The file could not be opened as one: both readers' errors carry this
/// whole, and the Python seam maps it in one place.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is a directory, not a file: pass the path of {what}")]
    IsADirectory { path: PathBuf, what: &'static str },
}

/// Why a file could not be mapped. The last two are about the file's bytes,
/// so each reader reports them as its own format error.
#[derive(Debug)]
pub enum MapError {
    Open(OpenError),
    /// A FIFO, socket or device.
    NotRegularFile,
    /// Shorter than the reader's minimum (an empty file cannot be mapped).
    TooShort(u64),
}

/// The regular file at `path`, at least `min_len` (and at least 1) bytes
/// long, mapped read-only. `what` names the file a directory was given for
/// (`"an .onnx file"`).
pub fn map_regular(path: &Path, min_len: u64, what: &'static str) -> Result<Mmap, MapError> {
    let io = |op| {
        move |source| {
            MapError::Open(OpenError::Io {
                op,
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let meta = std::fs::metadata(path).map_err(io("cannot open"))?;
    if meta.is_dir() {
        return Err(MapError::Open(OpenError::IsADirectory {
            path: path.to_path_buf(),
            what,
        }));
    }
    if !meta.is_file() {
        return Err(MapError::NotRegularFile);
    }
    let file = File::open(path).map_err(io("cannot open"))?;
    let len = file.metadata().map_err(io("cannot stat"))?.len();
    if len < min_len.max(1) {
        return Err(MapError::TooShort(len));
    }
    // SAFETY: the map is only ever read, and both readers hand its bytes out
    // as byte slices, never as typed references whose validity depends on
    // the content. If another process rewrote the file in place the readers
    // would see other bytes (and refuse or accept them as bytes); that
    // changes values, not the memory safety of any Rust reference.
    unsafe { Mmap::map(&file) }.map_err(io("cannot map"))
}
