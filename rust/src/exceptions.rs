//! What each core error becomes in Python, as plain data: the class (a
//! builtin, or one of `caxton_models/errors.py` named by [`Class`] rather
//! than by a string) and the fields it carries. `py::errors` builds the
//! exception from this; nothing else decides it. Plain Rust, so `cargo test`
//! checks that every class is listed and sampled.

use std::path::Path;

use crate::error::CoreError;
use crate::mapped::OpenError;
use crate::onnx::{self, OnnxError};
use crate::safetensors::{FormatError, SafetensorsError};

/// The classes of `caxton_models.errors` the core raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    ServerError,
    AccessDenied,
    NetworkError,
    NetworkTimeout,
    ChecksumMismatch,
    SizeMismatch,
    DownloadIncomplete,
    InsufficientDiskSpace,
    PermissionDenied,
    InvalidModelFormat,
    InvalidArgument,
}

impl Class {
    pub const ALL: [Class; 11] = [
        Class::ServerError,
        Class::AccessDenied,
        Class::NetworkError,
        Class::NetworkTimeout,
        Class::ChecksumMismatch,
        Class::SizeMismatch,
        Class::DownloadIncomplete,
        Class::InsufficientDiskSpace,
        Class::PermissionDenied,
        Class::InvalidModelFormat,
        Class::InvalidArgument,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Class::ServerError => "ServerError",
            Class::AccessDenied => "AccessDenied",
            Class::NetworkError => "NetworkError",
            Class::NetworkTimeout => "NetworkTimeout",
            Class::ChecksumMismatch => "ChecksumMismatch",
            Class::SizeMismatch => "SizeMismatch",
            Class::DownloadIncomplete => "DownloadIncomplete",
            Class::InsufficientDiskSpace => "InsufficientDiskSpace",
            Class::PermissionDenied => "PermissionDenied",
            Class::InvalidModelFormat => "InvalidModelFormat",
            Class::InvalidArgument => "InvalidArgument",
        }
    }
}

/// A field value handed to a domain class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Int(u64),
    Str(String),
}

/// The builtin exceptions the core raises (besides the OS ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builtin {
    ValueError,
    KeyError,
    RuntimeError,
    KeyboardInterrupt,
}

/// Which `OSError` subclass an I/O error becomes, as `open()` would choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OsClass {
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    OSError,
}

/// EISDIR on every platform Python runs on (Windows' CRT included).
const EISDIR: i32 = 21;

/// What one error becomes in Python.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `<class>(errno, message, filename)`.
    Os {
        class: OsClass,
        errno: i32,
        path: String,
    },
    Builtin(Builtin),
    Domain(Class, Vec<(&'static str, Value)>),
}

fn os_kind(err: &std::io::Error, path: &Path) -> Kind {
    let errno = err.raw_os_error().unwrap_or(0);
    let class = match err.kind() {
        std::io::ErrorKind::NotFound => OsClass::FileNotFoundError,
        std::io::ErrorKind::PermissionDenied => OsClass::PermissionError,
        _ if errno == EISDIR => OsClass::IsADirectoryError,
        _ => OsClass::OSError,
    };
    Kind::Os {
        class,
        errno,
        path: path.display().to_string(),
    }
}

fn is_a_directory(path: &Path) -> Kind {
    Kind::Os {
        class: OsClass::IsADirectoryError,
        errno: EISDIR,
        path: path.display().to_string(),
    }
}

/// The class and fields of every `CoreError`; the match is exhaustive, so a
/// new variant cannot reach Python without a decision here.
pub fn python_kind(e: &CoreError) -> Kind {
    use Class as C;
    use Value::{Int, Str};
    match e {
        CoreError::Io { source, path, .. } => os_kind(source, path),
        CoreError::IsADirectory { path } => is_a_directory(path),
        CoreError::UnknownAlgorithm(_) | CoreError::Batch(_) => Kind::Builtin(Builtin::ValueError),
        CoreError::Cancelled => Kind::Builtin(Builtin::KeyboardInterrupt),
        CoreError::Worker(_) => Kind::Builtin(Builtin::RuntimeError),
        CoreError::InvalidArgument(_) => Kind::Domain(C::InvalidArgument, vec![]),
        CoreError::Http { status, .. } => {
            Kind::Domain(C::ServerError, vec![("status", Int(*status as u64))])
        }
        CoreError::AccessDenied { status, .. } => {
            Kind::Domain(C::AccessDenied, vec![("status", Int(*status as u64))])
        }
        CoreError::Network { .. } | CoreError::Redirect { .. } => {
            Kind::Domain(C::NetworkError, vec![])
        }
        CoreError::Timeout { .. } | CoreError::TimeLimit { .. } => {
            Kind::Domain(C::NetworkTimeout, vec![])
        }
        CoreError::Checksum {
            expected, actual, ..
        } => Kind::Domain(
            C::ChecksumMismatch,
            vec![
                ("expected", Str(expected.clone())),
                ("actual", Str(actual.clone())),
            ],
        ),
        CoreError::Size {
            expected, actual, ..
        } => Kind::Domain(
            C::SizeMismatch,
            vec![("expected", Int(*expected)), ("actual", Int(*actual))],
        ),
        CoreError::Incomplete { have, total, .. } => Kind::Domain(
            C::DownloadIncomplete,
            vec![("have", Int(*have)), ("total", Int(*total))],
        ),
        CoreError::DiskSpace {
            required,
            available,
            ..
        } => Kind::Domain(
            C::InsufficientDiskSpace,
            vec![("required", Int(*required)), ("available", Int(*available))],
        ),
        CoreError::NotWritable { .. } => Kind::Domain(C::PermissionDenied, vec![]),
    }
}

/// A model file that could not be opened, for either reader.
fn open_kind(e: &OpenError) -> Kind {
    match e {
        OpenError::Io { source, path, .. } => os_kind(source, path),
        OpenError::IsADirectory { path, .. } => is_a_directory(path),
    }
}

/// The same for the safetensors reader's errors.
pub fn safetensors_kind(e: &SafetensorsError) -> Kind {
    match e {
        SafetensorsError::Open(e) => open_kind(e),
        SafetensorsError::Format { path, .. } => Kind::Domain(
            Class::InvalidModelFormat,
            vec![("path", Value::Str(path.to_string_lossy().into_owned()))],
        ),
        SafetensorsError::NoSuchTensor { .. } => Kind::Builtin(Builtin::KeyError),
        SafetensorsError::Unsupported { .. } => Kind::Builtin(Builtin::ValueError),
    }
}

/// The same for the ONNX check's errors: a malformed file is
/// `InvalidModelFormat` naming it, as a malformed safetensors file is.
pub fn onnx_kind(e: &OnnxError) -> Kind {
    match e {
        OnnxError::Open(e) => open_kind(e),
        OnnxError::Format { path, .. } => Kind::Domain(
            Class::InvalidModelFormat,
            vec![("path", Value::Str(path.to_string_lossy().into_owned()))],
        ),
    }
}

// ---- the seam's own check: one sample of every error the core raises ----

/// One error of every kind, converted by the same path as real ones.
pub fn samples() -> Vec<(Kind, String)> {
    let io = |kind| std::io::Error::from(kind);
    let core = [
        CoreError::io("open", "/x/missing", io(std::io::ErrorKind::NotFound)),
        CoreError::io(
            "open",
            "/x/private",
            io(std::io::ErrorKind::PermissionDenied),
        ),
        CoreError::io("read", "/x/odd", std::io::Error::from_raw_os_error(5)),
        CoreError::IsADirectory { path: "/x".into() },
        CoreError::UnknownAlgorithm("md5".into()),
        CoreError::Cancelled,
        CoreError::Worker("boom".into()),
        CoreError::InvalidArgument("bad".into()),
        CoreError::Http {
            status: 503,
            url: "https://h/f".into(),
            hint: "later".into(),
        },
        CoreError::AccessDenied {
            status: 403,
            url: "https://h/f".into(),
            hint: "token".into(),
        },
        CoreError::Network {
            url: "https://h/f".into(),
            msg: "reset".into(),
        },
        CoreError::Timeout {
            url: "https://h/f".into(),
            msg: "stalled".into(),
        },
        CoreError::TimeLimit { limit: 1.5 },
        CoreError::Redirect {
            from: "https://h/f".into(),
            to: "http://h/f".into(),
            why: "downgrade".into(),
        },
        CoreError::Checksum {
            url: "https://h/f".into(),
            path: "/x/f".into(),
            expected: "a".repeat(64),
            actual: "b".repeat(64),
        },
        CoreError::Size {
            url: "https://h/f".into(),
            expected: 10,
            actual: 11,
        },
        CoreError::Incomplete {
            url: "https://h/f".into(),
            have: 5,
            total: 9,
            msg: "reset".into(),
        },
        CoreError::DiskSpace {
            path: "/x".into(),
            required: 1 << 40,
            available: 7,
        },
        CoreError::NotWritable {
            path: "/x".into(),
            msg: "read-only".into(),
        },
        CoreError::Batch("shape".into()),
    ];
    let st = [
        SafetensorsError::Format {
            path: "/x/m.safetensors".into(),
            reason: FormatError::NotAnObject,
        },
        SafetensorsError::NoSuchTensor {
            path: "/x/m.safetensors".into(),
            name: "w".into(),
        },
        SafetensorsError::Unsupported {
            path: "/x/m.safetensors".into(),
            name: "w".into(),
            dtype: "F8".into(),
            hint: "unsupported",
        },
    ];
    let onnx = [
        OnnxError::Format {
            path: "/x/model.onnx".into(),
            reason: onnx::FormatError::TooDeep,
        },
        OnnxError::Open(OpenError::IsADirectory {
            path: "/x/onnx".into(),
            what: "an .onnx file",
        }),
        OnnxError::Open(OpenError::Io {
            op: "cannot open",
            path: "/x/missing.onnx".into(),
            source: io(std::io::ErrorKind::NotFound),
        }),
    ];
    core.iter()
        .map(|e| (python_kind(e), e.to_string()))
        .chain(st.iter().map(|e| (safetensors_kind(e), e.to_string())))
        .chain(onnx.iter().map(|e| (onnx_kind(e), e.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_is_listed_once_and_sampled() {
        for (i, c) in Class::ALL.iter().enumerate() {
            assert_eq!(Class::ALL.iter().position(|x| x == c), Some(i));
        }
        let sampled: Vec<Class> = samples()
            .into_iter()
            .filter_map(|(k, _)| match k {
                Kind::Domain(c, _) => Some(c),
                _ => None,
            })
            .collect();
        for c in Class::ALL {
            assert!(sampled.contains(&c), "no sample raises {}", c.name());
        }
    }
}
