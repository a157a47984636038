//! BM25 keyword vectors, term for term the ones fastembed's `Qdrant/bm25`
//! writes, so either library can fill and query the same Qdrant collection
//! (which applies the IDF itself: `modifier: idf`).
//!
//! The analysis follows fastembed's `Bm25` exactly, because a token split
//! differently is a different id:
//! - words are maximal runs of Unicode letters, numbers (General Category
//!   `L*`, `N*`) and `_`: what Python's `\w` matches. (UAX #29 word
//!   boundaries would keep "don't" or "3.88" whole and so hash to ids
//!   fastembed never produces.)
//! - text is lowercased with the full Unicode mapping after non-word
//!   characters become spaces, as `str.lower()` sees it (final sigma
//!   included);
//! - the token `_`, stop words and tokens longer than `token_max_length`
//!   characters are dropped, the rest are Snowball-stemmed (`rust-stemmers`,
//!   the crate fastembed's `py_rust_stemmers` wraps);
//! - a term's id is `abs(murmur3_x86_32(utf8, seed 0) as i32)`, Python's
//!   `abs(mmh3.hash(term))`.
//!
//! Stop words are NLTK's lists, the source of the `Qdrant/bm25` files.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;
use rust_stemmers::{Algorithm, Stemmer};
use unicode_general_category::{get_general_category, GeneralCategory as Gc};

use crate::error::{CoreError, Result};

/// fastembed's defaults (`Bm25(k=1.2, b=0.75, avg_len=256.0, token_max_length=40)`).
pub const DEFAULT_K1: f64 = 1.2;
pub const DEFAULT_B: f64 = 0.75;
pub const DEFAULT_AVG_LEN: f64 = 256.0;
pub const DEFAULT_TOKEN_MAX_LENGTH: usize = 40;

/// fastembed's `supported_languages`: its Snowball stemmer, and the NLTK stop
/// word list `Qdrant/bm25` ships for it (none for Tamil, whose file the
/// repository lacks).
const LANGUAGES: &[(&str, Algorithm, Option<&str>)] = &[
    ("arabic", Algorithm::Arabic, Some("ar")),
    ("danish", Algorithm::Danish, Some("da")),
    ("dutch", Algorithm::Dutch, Some("nl")),
    ("english", Algorithm::English, Some("en")),
    ("finnish", Algorithm::Finnish, Some("fi")),
    ("french", Algorithm::French, Some("fr")),
    ("german", Algorithm::German, Some("de")),
    ("greek", Algorithm::Greek, Some("el")),
    ("hungarian", Algorithm::Hungarian, Some("hu")),
    ("italian", Algorithm::Italian, Some("it")),
    ("norwegian", Algorithm::Norwegian, Some("no")),
    ("portuguese", Algorithm::Portuguese, Some("pt")),
    ("romanian", Algorithm::Romanian, Some("ro")),
    ("russian", Algorithm::Russian, Some("ru")),
    ("spanish", Algorithm::Spanish, Some("es")),
    ("swedish", Algorithm::Swedish, Some("sv")),
    ("tamil", Algorithm::Tamil, None),
    ("turkish", Algorithm::Turkish, Some("tr")),
];

/// Names of the languages with a stemmer and stop words.
pub fn languages() -> Vec<&'static str> {
    LANGUAGES.iter().map(|(name, _, _)| *name).collect()
}

/// Python's `\w` for `str` patterns: letters, numbers, underscore.
#[inline]
pub fn is_word_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || c == '_';
    }
    matches!(
        get_general_category(c),
        Gc::UppercaseLetter
            | Gc::LowercaseLetter
            | Gc::TitlecaseLetter
            | Gc::ModifierLetter
            | Gc::OtherLetter
            | Gc::DecimalNumber
            | Gc::LetterNumber
            | Gc::OtherNumber
    )
}

/// Calls `f` with each lowercased word of `text`, in order.
pub fn for_each_token(text: &str, mut f: impl FnMut(&str)) {
    if text.is_ascii() {
        let mut buf = String::new();
        for piece in text.split(|c: char| !is_word_char(c)) {
            if !piece.is_empty() {
                buf.clear();
                buf.push_str(piece);
                buf.make_ascii_lowercase();
                f(&buf);
            }
        }
        return;
    }
    // Lowercasing the whole cleaned string, not char by char, keeps the
    // context rules (final sigma) that `str.lower()` applies; a lowercase
    // form may hold non-word characters (U+0130 -> "i\u{307}"), which split.
    let cleaned: String = text
        .chars()
        .map(|c| if is_word_char(c) { c } else { ' ' })
        .collect();
    for piece in cleaned.to_lowercase().split(|c: char| !is_word_char(c)) {
        if !piece.is_empty() {
            f(piece);
        }
    }
}

/// MurmurHash3 x86_32 (Austin Appleby's reference), as `mmh3.hash` computes it.
pub fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h = seed;
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        h ^= k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let mut k = 0u32;
        for (i, &byte) in tail.iter().enumerate() {
            k |= u32::from(byte) << (8 * i);
        }
        h ^= k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    }
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// A term's sparse index: fastembed's `abs(mmh3.hash(term))`, in `[0, 2**31]`.
#[inline]
pub fn token_id(term: &str) -> u32 {
    (murmur3_32(term.as_bytes(), 0) as i32).unsigned_abs()
}

/// Text to terms: tokenize, drop stop words and over-long tokens, stem.
pub struct Analyzer {
    language: String,
    stemmer: Option<Stemmer>,
    stopwords: HashSet<String>,
    token_max_length: usize,
}

impl Analyzer {
    /// `stopwords: None` takes the language's list when stemming (fastembed
    /// drops the bundled list with `disable_stemmer=True`); `Some` replaces
    /// it (lowercased; empty disables filtering). Without stemming any
    /// language name is accepted, as in fastembed.
    pub fn new(
        language: &str,
        stem: bool,
        stopwords: Option<Vec<String>>,
        token_max_length: usize,
    ) -> Result<Self> {
        let known = LANGUAGES.iter().find(|(name, _, _)| *name == language);
        if stem && known.is_none() {
            return Err(CoreError::InvalidArgument(format!(
                "no Snowball stemmer for language {language:?}: use one of {}, or stem=False",
                languages().join(", ")
            )));
        }
        if token_max_length == 0 {
            return Err(CoreError::InvalidArgument(
                "token_max_length must be at least 1".into(),
            ));
        }
        let stopwords = match stopwords {
            Some(words) => words.iter().map(|w| w.to_lowercase()).collect(),
            None if stem => known
                .and_then(|(_, _, code)| *code)
                .and_then(stop_words::lookup)
                .map(|words| words.iter().map(|w| (*w).to_owned()).collect())
                .unwrap_or_default(),
            None => HashSet::new(),
        };
        Ok(Self {
            language: language.to_owned(),
            stemmer: known
                .filter(|_| stem)
                .map(|(_, alg, _)| Stemmer::create(*alg)),
            stopwords,
            token_max_length,
        })
    }

    pub fn language(&self) -> &str {
        &self.language
    }

    pub fn stems(&self) -> bool {
        self.stemmer.is_some()
    }

    pub fn token_max_length(&self) -> usize {
        self.token_max_length
    }

    /// The stop words in effect, sorted.
    pub fn stopwords(&self) -> Vec<String> {
        let mut words: Vec<String> = self.stopwords.iter().cloned().collect();
        words.sort_unstable();
        words
    }

    /// Calls `f` with each term of `text`, in order.
    pub fn for_each_term(&self, text: &str, mut f: impl FnMut(&str)) {
        for_each_token(text, |token| {
            // "_" is the one word token in fastembed's punctuation set.
            if token == "_"
                || self.stopwords.contains(token)
                || token.chars().count() > self.token_max_length
            {
                return;
            }
            match &self.stemmer {
                Some(stemmer) => {
                    let stem = stemmer.stem(token);
                    if !stem.is_empty() {
                        f(&stem);
                    }
                }
                None => f(token),
            }
        });
    }

    pub fn terms(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.for_each_term(text, |t| out.push(t.to_owned()));
        out
    }
}

/// The document side of BM25: `k1` saturates term frequency, `b` weighs the
/// document's length against `avg_len` (in terms).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    pub k1: f64,
    pub b: f64,
    pub avg_len: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            k1: DEFAULT_K1,
            b: DEFAULT_B,
            avg_len: DEFAULT_AVG_LEN,
        }
    }
}

impl Params {
    pub fn new(k1: f64, b: f64, avg_len: f64) -> Result<Self> {
        if !(k1.is_finite() && k1 >= 0.0) {
            return Err(CoreError::InvalidArgument(format!(
                "k1 must be a finite number >= 0 (usually 1.2-2.0), got {k1}"
            )));
        }
        if !(0.0..=1.0).contains(&b) {
            return Err(CoreError::InvalidArgument(format!(
                "b must lie in [0, 1] (usually 0.75), got {b}"
            )));
        }
        if !(avg_len.is_finite() && avg_len > 0.0) {
            return Err(CoreError::InvalidArgument(format!(
                "avg_len must be a finite number > 0 (the corpus' mean terms per document), got {avg_len}"
            )));
        }
        Ok(Self { k1, b, avg_len })
    }
}

/// Rows of sparse vectors in CSR form; each row's indices strictly increase.
#[derive(Debug, Default, PartialEq)]
pub struct SparseRows {
    pub indptr: Vec<i64>,
    pub indices: Vec<i64>,
    pub values: Vec<f32>,
}

impl SparseRows {
    fn from_rows(rows: Vec<(Vec<i64>, Vec<f32>)>) -> Self {
        let nnz = rows.iter().map(|(i, _)| i.len()).sum();
        let mut out = SparseRows {
            indptr: Vec::with_capacity(rows.len() + 1),
            indices: Vec::with_capacity(nnz),
            values: Vec::with_capacity(nnz),
        };
        out.indptr.push(0);
        for (indices, values) in rows {
            out.indices.extend_from_slice(&indices);
            out.values.extend_from_slice(&values);
            out.indptr.push(out.indices.len() as i64);
        }
        out
    }
}

/// One document's BM25 term weights,
/// `tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avg_len))`, ids ascending.
pub fn document_vector(analyzer: &Analyzer, params: Params, text: &str) -> (Vec<i64>, Vec<f32>) {
    // term -> (first position, count); positions order hash collisions.
    let mut counts: HashMap<String, (usize, u32)> = HashMap::new();
    let mut len = 0usize;
    analyzer.for_each_term(text, |term| {
        let next = counts.len();
        match counts.get_mut(term) {
            Some(entry) => entry.1 += 1,
            None => {
                counts.insert(term.to_owned(), (next, 1));
            }
        }
        len += 1;
    });
    let norm = params.k1 * (1.0 - params.b + params.b * len as f64 / params.avg_len);
    let mut weights: Vec<(usize, i64, f64)> = counts
        .iter()
        .map(|(term, &(first, tf))| {
            let tf = f64::from(tf);
            let w = tf * (params.k1 + 1.0) / (tf + norm);
            (first, i64::from(token_id(term)), w)
        })
        .collect();
    // Two terms with one id: fastembed's dict keeps the later term's weight.
    weights.sort_unstable_by_key(|&(first, id, _)| (id, first));
    let mut indices: Vec<i64> = Vec::with_capacity(weights.len());
    let mut values: Vec<f32> = Vec::with_capacity(weights.len());
    for (_, id, w) in weights {
        if indices.last() == Some(&id) {
            if let Some(v) = values.last_mut() {
                *v = w as f32;
            }
        } else {
            indices.push(id);
            values.push(w as f32);
        }
    }
    (indices, values)
}

/// A query's ids with unit weights (the score is then the sum of the matched
/// documents' weights, times the IDF Qdrant applies).
pub fn query_vector(analyzer: &Analyzer, text: &str) -> (Vec<i64>, Vec<f32>) {
    let mut ids: Vec<i64> = Vec::new();
    analyzer.for_each_term(text, |term| ids.push(i64::from(token_id(term))));
    ids.sort_unstable();
    ids.dedup();
    let values = vec![1.0f32; ids.len()];
    (ids, values)
}

/// Texts per rayon task: enough work per task to outweigh the scheduling.
const MIN_TEXTS_PER_TASK: usize = 64;

pub fn embed_documents<S: AsRef<str> + Sync>(
    analyzer: &Analyzer,
    params: Params,
    texts: &[S],
) -> SparseRows {
    let rows: Vec<_> = texts
        .par_iter()
        .with_min_len(MIN_TEXTS_PER_TASK)
        .map(|t| document_vector(analyzer, params, t.as_ref()))
        .collect();
    SparseRows::from_rows(rows)
}

pub fn embed_queries<S: AsRef<str> + Sync>(analyzer: &Analyzer, texts: &[S]) -> SparseRows {
    let rows: Vec<_> = texts
        .par_iter()
        .with_min_len(MIN_TEXTS_PER_TASK)
        .map(|t| query_vector(analyzer, t.as_ref()))
        .collect();
    SparseRows::from_rows(rows)
}

/// Mean number of terms per text (0 for no texts): the `avg_len` of a corpus.
pub fn average_length<S: AsRef<str> + Sync>(analyzer: &Analyzer, texts: &[S]) -> f64 {
    if texts.is_empty() {
        return 0.0;
    }
    let total: usize = texts
        .par_iter()
        .with_min_len(MIN_TEXTS_PER_TASK)
        .map(|t| {
            let mut n = 0usize;
            analyzer.for_each_term(t.as_ref(), |_| n += 1);
            n
        })
        .sum();
    total as f64 / texts.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn english() -> Analyzer {
        Analyzer::new("english", true, None, DEFAULT_TOKEN_MAX_LENGTH).unwrap()
    }

    #[test]
    fn murmur3_reference_vectors() {
        // From the reference implementation's test suite (SMHasher) and mmh3.
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_32(b"", 0xffff_ffff), 0x81f1_6f39);
        assert_eq!(murmur3_32(b"\0\0\0\0", 0), 0x2362_f9de);
        assert_eq!(murmur3_32(b"aaaa", 0x9747_b28c), 0x5a97_808a);
        assert_eq!(murmur3_32(b"abc", 0), 0xb3dd_93fa);
        assert_eq!(murmur3_32(b"Hello, world!", 0x9747_b28c), 0x2488_4cba);
        // mmh3.hash("foo") == -156908512
        assert_eq!(murmur3_32(b"foo", 0) as i32, -156_908_512);
    }

    #[test]
    fn token_id_is_absolute_signed_hash() {
        assert_eq!(token_id("foo"), 156_908_512);
        assert_eq!(token_id("abc"), (0xb3dd_93fa_u32 as i32).unsigned_abs());
    }

    #[test]
    fn tokens_split_on_non_word_and_lowercase() {
        let mut got = Vec::new();
        for_each_token("Don't STOP_me-now 3.88 naïve İx ΟΔΟΣ", |t| {
            got.push(t.to_owned())
        });
        assert_eq!(
            got,
            ["don", "t", "stop_me", "now", "3", "88", "naïve", "i", "x", "οδος"]
        );
        // A final sigma keeps its final form.
        let mut greek = Vec::new();
        for_each_token("ΟΔΟΣ", |t| greek.push(t.to_owned()));
        assert_eq!(greek, ["οδος"]);
    }

    #[test]
    fn analyzer_drops_stopwords_underscore_and_long_tokens_and_stems() {
        let a = english();
        let long = "x".repeat(41);
        let text = format!("The quick brown foxes are running _ {long} sentences");
        assert_eq!(a.terms(&text), ["quick", "brown", "fox", "run", "sentenc"]);
        let plain = Analyzer::new("english", false, None, 40).unwrap();
        assert_eq!(plain.terms("The foxes"), ["the", "foxes"]);
        let custom = Analyzer::new("english", true, Some(vec!["FOXES".into()]), 40).unwrap();
        assert_eq!(custom.terms("The foxes"), ["the"]);
    }

    #[test]
    fn unknown_language_needs_stem_false() {
        assert!(Analyzer::new("klingon", true, None, 40).is_err());
        assert!(Analyzer::new("klingon", false, None, 40).is_ok());
        assert!(Analyzer::new("english", true, None, 0).is_err());
        assert!(Analyzer::new("tamil", true, None, 40)
            .unwrap()
            .stopwords()
            .is_empty());
    }

    #[test]
    fn document_weights_follow_the_formula() {
        let a = english();
        let p = Params::new(1.2, 0.75, 4.0).unwrap();
        let (ids, values) = document_vector(&a, p, "fox fox dog");
        let norm = 1.2 * (1.0 - 0.75 + 0.75 * 3.0 / 4.0);
        let fox = (2.0 * 2.2 / (2.0 + norm)) as f32;
        let dog = (1.0 * 2.2 / (1.0 + norm)) as f32;
        let mut want = [
            (i64::from(token_id("fox")), fox),
            (i64::from(token_id("dog")), dog),
        ];
        want.sort_by_key(|p| p.0);
        assert_eq!(ids, want.iter().map(|p| p.0).collect::<Vec<_>>());
        assert_eq!(values, want.iter().map(|p| p.1).collect::<Vec<_>>());
    }

    #[test]
    fn query_has_unique_ids_with_unit_weights() {
        let (ids, values) = query_vector(&english(), "fox Fox foxes dog");
        assert_eq!(ids.len(), 2);
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(values, [1.0, 1.0]);
    }

    #[test]
    fn batches_match_single_rows_and_keep_empty_rows() {
        let a = english();
        let texts: Vec<String> = (0..300)
            .map(|i| {
                if i % 7 == 0 {
                    "the".into()
                } else {
                    format!("text number {i} about foxes")
                }
            })
            .collect();
        let rows = embed_documents(&a, Params::default(), &texts);
        assert_eq!(rows.indptr.len(), texts.len() + 1);
        for (i, t) in texts.iter().enumerate() {
            let (lo, hi) = (rows.indptr[i] as usize, rows.indptr[i + 1] as usize);
            let (ids, vals) = document_vector(&a, Params::default(), t);
            assert_eq!(rows.indices[lo..hi], ids[..]);
            assert_eq!(rows.values[lo..hi], vals[..]);
        }
        assert_eq!(rows.indptr[1], 0, "a stop-word-only text is an empty row");
        let q = embed_queries(&a, &texts);
        assert_eq!(q.indptr.len(), texts.len() + 1);
    }

    #[test]
    fn params_are_checked() {
        assert!(Params::new(-1.0, 0.75, 1.0).is_err());
        assert!(Params::new(1.2, 1.5, 1.0).is_err());
        assert!(Params::new(1.2, 0.75, 0.0).is_err());
        assert!(Params::new(1.2, 0.75, f64::NAN).is_err());
    }

    #[test]
    fn average_length_counts_terms() {
        let a = english();
        assert_eq!(average_length(&a, &["fox dog", "the fox"]), 1.5);
        assert_eq!(average_length::<&str>(&a, &[]), 0.0);
    }
}
