//! Thin wrapper over `crate::bm25`: CSR arrays move into numpy without copies.

use numpy::ndarray::Array1;
use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;

use crate::bm25::{self, Analyzer, Params, SparseRows};

type Csr<'py> = (
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<f32>>,
);

fn to_numpy(py: Python<'_>, rows: SparseRows) -> Csr<'_> {
    (
        Array1::from_vec(rows.indptr).into_pyarray(py),
        Array1::from_vec(rows.indices).into_pyarray(py),
        Array1::from_vec(rows.values).into_pyarray(py),
    )
}

/// fastembed-compatible BM25: `embed_documents`/`embed_queries` return CSR
/// `(indptr, indices, values)`; the GIL is released while texts are analysed
/// on all cores.
#[pyclass(name = "Bm25", module = "caxton_models._core", frozen)]
struct PyBm25 {
    analyzer: Analyzer,
    params: Params,
}

#[pymethods]
impl PyBm25 {
    // Literals, not bm25::DEFAULT_*: PyO3 renders a path default as `...` in
    // the signature Python sees (stubtest compares it with _core.pyi).
    #[new]
    #[pyo3(signature = (language = "english", *, stem = true, stopwords = None,
        token_max_length = 40, k1 = 1.2, b = 0.75, avg_len = 256.0))]
    fn new(
        language: &str,
        stem: bool,
        stopwords: Option<Vec<String>>,
        token_max_length: usize,
        k1: f64,
        b: f64,
        avg_len: f64,
    ) -> PyResult<Self> {
        Ok(Self {
            analyzer: Analyzer::new(language, stem, stopwords, token_max_length)?,
            params: Params::new(k1, b, avg_len)?,
        })
    }

    fn embed_documents<'py>(&self, py: Python<'py>, texts: Vec<String>) -> Csr<'py> {
        let rows = py.detach(|| bm25::embed_documents(&self.analyzer, self.params, &texts));
        to_numpy(py, rows)
    }

    fn embed_queries<'py>(&self, py: Python<'py>, texts: Vec<String>) -> Csr<'py> {
        let rows = py.detach(|| bm25::embed_queries(&self.analyzer, &texts));
        to_numpy(py, rows)
    }

    /// The analysed terms of each text (what the ids hash).
    fn terms(&self, py: Python<'_>, texts: Vec<String>) -> Vec<Vec<String>> {
        py.detach(|| texts.iter().map(|t| self.analyzer.terms(t)).collect())
    }

    fn average_length(&self, py: Python<'_>, texts: Vec<String>) -> f64 {
        py.detach(|| bm25::average_length(&self.analyzer, &texts))
    }

    #[staticmethod]
    fn token_id(term: &str) -> u32 {
        bm25::token_id(term)
    }

    #[staticmethod]
    fn languages() -> Vec<&'static str> {
        bm25::languages()
    }

    #[getter]
    fn language(&self) -> &str {
        self.analyzer.language()
    }
    #[getter]
    fn stem(&self) -> bool {
        self.analyzer.stems()
    }
    #[getter]
    fn stopwords(&self) -> Vec<String> {
        self.analyzer.stopwords()
    }
    #[getter]
    fn token_max_length(&self) -> usize {
        self.analyzer.token_max_length()
    }
    #[getter]
    fn k1(&self) -> f64 {
        self.params.k1
    }
    #[getter]
    fn b(&self) -> f64 {
        self.params.b
    }
    #[getter]
    fn avg_len(&self) -> f64 {
        self.params.avg_len
    }
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyBm25>()
}
