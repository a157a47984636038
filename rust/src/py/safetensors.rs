//! `SafeTensors(path)` and `safetensors_header(path)`: validated safetensors
//! files, with tensors as read-only numpy views of the memory map.
//!
//! Zero copy and lifetime: a view is made with `PyArray_NewFromDescr` over
//! the mapped bytes, and its `base` is the `SafeTensors` object, which owns
//! the map through an `Arc`. numpy keeps the base alive as long as any view
//! (or view of a view) exists, so `del` of the object does not unmap.
//!
//! Alignment: tensors sit wherever their offsets put them and nothing in the
//! format aligns them (the reference writer pads only the header to 8 bytes).
//! numpy supports unaligned arrays (its `ALIGNED` flag is then false and its
//! loops copy through aligned buffers), so views are never copied for that.
//! Nothing on the Rust side builds a typed reference into the map.

use std::os::raw::{c_int, c_void};
use std::path::PathBuf;
use std::sync::Arc;

use numpy::npyffi::{self, npy_intp, PY_ARRAY_API};
use numpy::{IntoPyArray, PyArrayDescr, PyArrayDescrMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyIterator, PyList, PyTuple};

use crate::safetensors::{Dtype, SafetensorsError, SafetensorsFile};

/// The numpy dtype (explicitly little-endian, as the format is) for the
/// safetensors dtypes numpy has.
fn numpy_dtype(dtype: Dtype) -> Option<&'static str> {
    Some(match dtype {
        Dtype::BOOL => "|b1",
        Dtype::U8 => "|u1",
        Dtype::I8 => "|i1",
        Dtype::I16 => "<i2",
        Dtype::U16 => "<u2",
        Dtype::F16 => "<f2",
        Dtype::I32 => "<i4",
        Dtype::U32 => "<u4",
        Dtype::F32 => "<f4",
        Dtype::C64 => "<c8",
        Dtype::F64 => "<f8",
        Dtype::I64 => "<i8",
        Dtype::U64 => "<u8",
        _ => return None,
    })
}

/// A safetensors file, memory-mapped and validated in full on opening
/// (raises `InvalidModelFormat` naming the file and the fault). Tensors are
/// read-only numpy views of the map, which stays mapped while this object or
/// any view is alive.
#[pyclass(name = "SafeTensors", module = "caxton_models._core", frozen)]
pub struct PySafeTensors {
    file: Arc<SafetensorsFile>,
}

#[pymethods]
impl PySafeTensors {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let file = py.detach(move || SafetensorsFile::open(&path))?;
        Ok(Self {
            file: Arc::new(file),
        })
    }

    #[getter]
    fn path(&self) -> String {
        self.file.path().to_string_lossy().into_owned()
    }

    /// Tensor names, sorted.
    fn keys(&self) -> Vec<String> {
        self.file.names()
    }

    /// The `__metadata__` string map, or None when the file has none.
    fn metadata(&self) -> Option<std::collections::HashMap<String, String>> {
        self.file.header().metadata.metadata().clone()
    }

    /// `(dtype, shape)` of a tensor, dtype as the file names it ("F32", "BF16").
    fn info<'py>(&self, py: Python<'py>, name: &str) -> PyResult<(String, Bound<'py, PyTuple>)> {
        let info = self.file.info(name)?;
        Ok((info.dtype.to_string(), PyTuple::new(py, &info.shape)?))
    }

    /// A tensor as a read-only numpy view of the map (no copy). BF16 has no
    /// numpy dtype and F8/F4/F6 neither: they raise ValueError unless
    /// `as_f32=True`, which widens F16 and BF16 into a new float32 array
    /// (F32 stays a view; other dtypes raise ValueError).
    #[pyo3(signature = (name, *, as_f32 = false))]
    fn tensor<'py>(
        slf: &Bound<'py, Self>,
        name: &str,
        as_f32: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let file = &slf.get().file;
        let (info, bytes) = file.bytes(name)?;
        if as_f32 && matches!(info.dtype, Dtype::F16 | Dtype::BF16) {
            let shape = PyTuple::new(py, &info.shape)?;
            let (file, owned) = (Arc::clone(file), name.to_owned());
            let values = py.detach(move || file.to_f32(&owned))?;
            // numpy's reshape, not ndarray's: it raises ValueError for shapes
            // numpy cannot hold (more than 32/64 dimensions), where
            // rust-numpy's conversion would not check.
            return values.into_pyarray(py).call_method1("reshape", (shape,));
        }
        let code = match numpy_dtype(info.dtype) {
            Some(code) if !as_f32 || info.dtype == Dtype::F32 => code,
            _ => {
                let hint = if as_f32 {
                    "as_f32=True converts only F16 and BF16 (F32 is returned as is)"
                } else if info.dtype == Dtype::BF16 {
                    "numpy has no bfloat16; pass as_f32=True for a float32 copy"
                } else {
                    "numpy has no such dtype"
                };
                return Err(SafetensorsError::Unsupported {
                    path: file.path().to_path_buf(),
                    name: name.to_string(),
                    dtype: info.dtype.to_string(),
                    hint,
                }
                .into());
            }
        };
        let mut dims = info
            .shape
            .iter()
            .map(|&d| npy_intp::try_from(d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                PyValueError::new_err(format!(
                    "tensor {name:?} has a dimension numpy cannot index"
                ))
            })?;
        let ndim = c_int::try_from(dims.len()).map_err(|_| {
            PyValueError::new_err(format!("tensor {name:?} has too many dimensions"))
        })?;
        let descr = PyArrayDescr::new(py, code)?.into_dtype_ptr();
        // SAFETY: `bytes` lies inside the map owned by `slf`, which becomes
        // the array's base (SetBaseObject steals the new reference), so the
        // memory outlives the array. The span holds exactly
        // itemsize x prod(dims) bytes (validated on open). The array is made
        // read-only, and numpy refuses `setflags(write=True)` because the base
        // exposes no writable buffer: the map is PROT_READ.
        unsafe {
            let ptr = PY_ARRAY_API.PyArray_NewFromDescr(
                py,
                PY_ARRAY_API.get_type_object(py, npyffi::NpyTypes::PyArray_Type),
                descr,
                ndim,
                dims.as_mut_ptr(),
                std::ptr::null_mut(),
                bytes.as_ptr() as *mut c_void,
                npyffi::NPY_ARRAY_C_CONTIGUOUS,
                std::ptr::null_mut(),
            );
            if ptr.is_null() {
                return Err(PyErr::fetch(py));
            }
            let array = Bound::from_owned_ptr(py, ptr);
            let raw = ptr as *mut npyffi::PyArrayObject;
            (*raw).flags &= !npyffi::NPY_ARRAY_WRITEABLE;
            let owner = slf.clone().into_any().into_ptr();
            if PY_ARRAY_API.PyArray_SetBaseObject(py, raw, owner) < 0 {
                return Err(PyErr::fetch(py));
            }
            Ok(array)
        }
    }

    fn __len__(&self) -> usize {
        self.file.header().metadata.offset_keys().len()
    }

    /// Iterates over the sorted tensor names, like `keys()`.
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyIterator>> {
        PyList::new(py, self.file.names())?.try_iter()
    }

    fn __contains__(&self, name: &str) -> bool {
        self.file.header().metadata.info(name).is_some()
    }

    fn __repr__(&self) -> String {
        format!(
            "SafeTensors({:?}, {} tensors)",
            self.file.path().display().to_string(),
            self.__len__()
        )
    }
}

/// Validates a safetensors file's header (the same checks as `SafeTensors`)
/// and returns it as the file spells it: `{name: {"dtype", "shape",
/// "data_offsets"}}` in offset order, plus `"__metadata__"` when present.
/// Raises `InvalidModelFormat` naming the file and the fault.
#[pyfunction]
fn safetensors_header(py: Python<'_>, path: PathBuf) -> PyResult<Bound<'_, PyDict>> {
    let file = py.detach(move || SafetensorsFile::open(&path))?;
    let metadata = &file.header().metadata;
    let out = PyDict::new(py);
    if let Some(meta) = metadata.metadata() {
        out.set_item("__metadata__", meta.clone())?;
    }
    for name in metadata.offset_keys() {
        if let Some(info) = metadata.info(&name) {
            let entry = PyDict::new(py);
            entry.set_item("dtype", info.dtype.to_string())?;
            entry.set_item("shape", PyList::new(py, &info.shape)?)?;
            let (s, e) = info.data_offsets;
            entry.set_item("data_offsets", PyList::new(py, [s, e])?)?;
            out.set_item(name, entry)?;
        }
    }
    Ok(out)
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySafeTensors>()?;
    m.add_function(wrap_pyfunction!(safetensors_header, m)?)?;
    Ok(())
}
