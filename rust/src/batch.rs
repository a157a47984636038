//! Padding-aware batch assembly and pooling for transformer encoders.
//!
//! A batch costs what its padded rectangle costs (rows x longest row), so
//! sequences are sorted by length and cut into batches under a budget of
//! padded tokens rather than a fixed row count: short texts go in big
//! batches, long ones in small batches, and almost nothing is padding.
//! Pooling writes each row straight to its caller-order slot in the output,
//! which restores the order without a scatter copy.

use crate::error::{CoreError, Result};

/// Which sequences go together: batch `k` holds the input indices
/// `order[offsets[k]..offsets[k + 1]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub order: Vec<usize>,
    pub offsets: Vec<usize>,
    /// Padded length of each batch (its longest row, rounded up).
    pub widths: Vec<usize>,
}

impl Plan {
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The input indices of batch `k`, or None past the end.
    pub fn batch(&self, k: usize) -> Option<&[usize]> {
        let (start, end) = (*self.offsets.get(k)?, *self.offsets.get(k + 1)?);
        self.order.get(start..end)
    }

    /// Tokens the model will actually process, padding included.
    pub fn padded_tokens(&self) -> usize {
        (0..self.len())
            .map(|k| (self.offsets[k + 1] - self.offsets[k]) * self.widths[k])
            .sum()
    }
}

fn round_up(n: usize, multiple: usize) -> usize {
    if multiple <= 1 {
        n
    } else {
        n.div_ceil(multiple) * multiple
    }
}

/// Sorts sequences by length (longest first, so the biggest batch runs
/// first and memory peaks at once) and cuts the sorted run into batches with
/// `rows * padded_width <= token_budget` and `rows <= max_batch_size`,
/// choosing the cut points that minimise padded tokens plus
/// `batch_overhead` token-equivalents per batch (a fixed cost per model
/// call). Exact 1-D partitioning by dynamic programming, O(n x max rows).
/// A sequence longer than the budget gets a batch of its own.
pub fn plan(
    lengths: &[usize],
    token_budget: usize,
    max_batch_size: usize,
    pad_to_multiple_of: usize,
    batch_overhead: usize,
) -> Result<Plan> {
    if token_budget == 0 {
        return Err(CoreError::Batch(
            "token_budget must be at least 1 (padded tokens per batch)".into(),
        ));
    }
    if max_batch_size == 0 {
        return Err(CoreError::Batch("max_batch_size must be at least 1".into()));
    }
    let n = lengths.len();
    let mut order: Vec<usize> = (0..n).collect();
    // Stable: equal lengths keep input order, so plans are deterministic.
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]));
    let width = |k: usize| round_up(lengths[order[k]], pad_to_multiple_of);
    // best[i]: least cost of batching the first i sorted sequences;
    // cut[i]: where the last batch of that best split starts.
    let mut best = vec![u64::MAX; n + 1];
    let mut cut = vec![0usize; n + 1];
    best[0] = 0;
    for i in 1..=n {
        // The batch j..i is as wide as its first (longest) row j.
        for j in (i.saturating_sub(max_batch_size)..i).rev() {
            let rows = i - j;
            let w = width(j);
            if rows > 1 && rows * w.max(1) > token_budget {
                break; // earlier j only widen the batch and add rows
            }
            let cost = best[j] + (rows * w + batch_overhead) as u64;
            if cost < best[i] {
                best[i] = cost;
                cut[i] = j;
            }
        }
    }
    let mut offsets = vec![n];
    let mut i = n;
    while i > 0 {
        i = cut[i];
        offsets.push(i);
    }
    offsets.reverse();
    let widths = offsets[..offsets.len() - 1]
        .iter()
        .map(|&j| width(j))
        .collect();
    Ok(Plan {
        order,
        offsets,
        widths,
    })
}

/// A padded batch in row-major order, ready for an ONNX encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Padded {
    pub rows: usize,
    pub cols: usize,
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub token_type_ids: Vec<i64>,
}

/// Right-pads the sequences `pick` of `seqs` to a common width (their
/// longest, rounded up to `pad_to_multiple_of`). One allocation per array.
pub fn assemble<S: AsRef<[u32]>>(
    seqs: &[S],
    pick: &[usize],
    pad_id: i64,
    pad_to_multiple_of: usize,
) -> Result<Padded> {
    let mut longest = 0;
    for &i in pick {
        let s = seqs.get(i).ok_or_else(|| {
            CoreError::Batch(format!(
                "row index {i} out of range for {} sequences",
                seqs.len()
            ))
        })?;
        longest = longest.max(s.as_ref().len());
    }
    let rows = pick.len();
    let cols = round_up(longest, pad_to_multiple_of);
    let mut input_ids = vec![pad_id; rows * cols];
    let mut attention_mask = vec![0i64; rows * cols];
    for (r, &i) in pick.iter().enumerate() {
        let s = seqs[i].as_ref();
        let row = r * cols;
        for (dst, &tok) in input_ids[row..row + s.len()].iter_mut().zip(s) {
            *dst = i64::from(tok);
        }
        attention_mask[row..row + s.len()].fill(1);
    }
    Ok(Padded {
        rows,
        cols,
        input_ids,
        attention_mask,
        // Single-segment inputs: every token is segment 0.
        token_type_ids: vec![0; rows * cols],
    })
}

/// How token vectors become one sentence vector (sentence-transformers'
/// `1_Pooling/config.json` modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
    Max,
    MeanSqrtLen,
    LastToken,
}

impl Pooling {
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "mean" => Pooling::Mean,
            "cls" => Pooling::Cls,
            "max" => Pooling::Max,
            "mean_sqrt_len" => Pooling::MeanSqrtLen,
            "lasttoken" | "last_token" => Pooling::LastToken,
            other => {
                return Err(CoreError::Batch(format!(
                    "unknown pooling mode {other:?}: use mean, cls, max, mean_sqrt_len or lasttoken"
                )))
            }
        })
    }
}

/// Shape of a `(batch, seq, dim)` hidden-state tensor.
#[derive(Debug, Clone, Copy)]
pub struct Shape3 {
    pub batch: usize,
    pub seq: usize,
    pub dim: usize,
}

/// Pools `hidden` (row-major `batch x seq x dim`) under `mask` and writes
/// row `r` to `out[rows[r]]` (row-major `out_rows x dim`), L2-normalised if
/// asked. Masked-out positions never contribute, wherever they are.
pub fn pool_into(
    hidden: &[f32],
    shape: Shape3,
    mask: &[i64],
    rows: &[usize],
    out: &mut [f32],
    mode: Pooling,
    normalize: bool,
) -> Result<()> {
    let Shape3 { batch, seq, dim } = shape;
    if hidden.len() != batch * seq * dim {
        return Err(CoreError::Batch(format!(
            "hidden states hold {} values, expected {batch}x{seq}x{dim}",
            hidden.len()
        )));
    }
    if mask.len() != batch * seq || rows.len() != batch {
        return Err(CoreError::Batch(format!(
            "mask has {} values and rows {}, expected {batch}x{seq} and {batch}",
            mask.len(),
            rows.len()
        )));
    }
    if dim == 0 || out.len() % dim != 0 {
        return Err(CoreError::Batch(format!(
            "output holds {} values, not a whole number of {dim}-wide rows",
            out.len()
        )));
    }
    let out_rows = out.len() / dim;
    if let Some(&bad) = rows.iter().find(|&&r| r >= out_rows) {
        return Err(CoreError::Batch(format!(
            "output row {bad} out of range for {out_rows} rows"
        )));
    }
    for (b, &dst_row) in rows.iter().enumerate() {
        let dst = &mut out[dst_row * dim..(dst_row + 1) * dim];
        let m = &mask[b * seq..(b + 1) * seq];
        let h = &hidden[b * seq * dim..(b + 1) * seq * dim];
        let token = |t: usize| &h[t * dim..(t + 1) * dim];
        match mode {
            Pooling::Mean | Pooling::MeanSqrtLen => {
                dst.fill(0.0);
                let mut n = 0usize;
                for t in (0..seq).filter(|&t| m[t] != 0) {
                    n += 1;
                    for (d, &x) in dst.iter_mut().zip(token(t)) {
                        *d += x;
                    }
                }
                // As sentence-transformers: divide by max(count, 1e-9).
                let denom = if mode == Pooling::Mean {
                    (n as f32).max(1e-9)
                } else {
                    (n as f32).sqrt().max(1e-9)
                };
                dst.iter_mut().for_each(|d| *d /= denom);
            }
            Pooling::Cls => dst.copy_from_slice(token(0)),
            Pooling::LastToken => match (0..seq).rev().find(|&t| m[t] != 0) {
                Some(t) => dst.copy_from_slice(token(t)),
                None => dst.fill(0.0),
            },
            Pooling::Max => {
                dst.fill(f32::NEG_INFINITY);
                let mut any = false;
                for t in (0..seq).filter(|&t| m[t] != 0) {
                    any = true;
                    for (d, &x) in dst.iter_mut().zip(token(t)) {
                        *d = d.max(x);
                    }
                }
                if !any {
                    dst.fill(0.0);
                }
            }
        }
        if normalize {
            normalize_row(dst);
        }
    }
    Ok(())
}

/// L2-normalises in place; as torch's F.normalize, a zero row stays zero.
pub fn normalize_row(row: &mut [f32]) {
    let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    row.iter_mut().for_each(|x| *x /= norm);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_respects_budget_and_covers_everything() {
        let lengths = [3, 10, 1, 7, 7, 2, 30];
        let p = plan(&lengths, 20, 100, 1, 0).unwrap();
        let mut seen: Vec<usize> = p.order.clone();
        seen.sort();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        for k in 0..p.len() {
            let b = p.batch(k).unwrap();
            let width = b.iter().map(|&i| lengths[i]).max().unwrap();
            assert_eq!(width, p.widths[k]);
            assert!(b.len() == 1 || b.len() * width <= 20, "batch {k}: {b:?}");
        }
        // The 30-token sequence exceeds the budget and runs alone, first.
        assert_eq!(p.batch(0).unwrap(), &[6]);
        assert!(p.batch(p.len()).is_none());
    }

    #[test]
    fn plan_caps_rows_and_rejects_zero() {
        let p = plan(&[1; 10], 1000, 4, 1, 1).unwrap();
        assert_eq!(p.offsets, vec![0, 4, 8, 10]);
        assert_eq!(p.padded_tokens(), 10);
        assert!(plan(&[1], 0, 4, 1, 0).is_err());
        assert!(plan(&[1], 4, 0, 1, 0).is_err());
        assert!(plan(&[], 4, 4, 1, 0).unwrap().is_empty());
    }

    #[test]
    fn plan_pads_to_multiple() {
        let p = plan(&[5, 3], 100, 100, 8, 100).unwrap();
        assert_eq!(p.widths, vec![8]);
        assert_eq!(p.padded_tokens(), 16);
    }

    #[test]
    fn plan_splits_where_padding_costs_more_than_a_call() {
        // One long row and many short ones: batching them together would pad
        // the short rows to 100 tokens each.
        let mut lengths = vec![100];
        lengths.extend([5; 9]);
        let p = plan(&lengths, 10_000, 100, 1, 10).unwrap();
        assert_eq!(p.offsets, vec![0, 1, 10]);
        assert_eq!(p.padded_tokens(), 145);
        // With a huge per-call cost, one batch is cheaper.
        let p = plan(&lengths, 10_000, 100, 1, 10_000).unwrap();
        assert_eq!(p.offsets, vec![0, 10]);
    }

    #[test]
    fn assemble_pads_right_and_masks() {
        let seqs = vec![vec![101u32, 7, 102], vec![101, 102]];
        let b = assemble(&seqs, &[1, 0], 0, 1).unwrap();
        assert_eq!((b.rows, b.cols), (2, 3));
        assert_eq!(b.input_ids, vec![101, 102, 0, 101, 7, 102]);
        assert_eq!(b.attention_mask, vec![1, 1, 0, 1, 1, 1]);
        assert_eq!(b.token_type_ids, vec![0; 6]);
        assert!(assemble(&seqs, &[2], 0, 1).is_err());
    }

    #[test]
    fn mean_pool_ignores_padding_and_restores_order() {
        // batch 2, seq 2, dim 2; row 0 has one real token, row 1 two.
        let hidden = [1.0, 2.0, 100.0, 100.0, 1.0, 1.0, 3.0, 3.0];
        let mask = [1, 0, 1, 1];
        let mut out = vec![9.0; 6];
        let shape = Shape3 {
            batch: 2,
            seq: 2,
            dim: 2,
        };
        pool_into(
            &hidden,
            shape,
            &mask,
            &[2, 0],
            &mut out,
            Pooling::Mean,
            false,
        )
        .unwrap();
        assert_eq!(out, vec![2.0, 2.0, 9.0, 9.0, 1.0, 2.0]);
        pool_into(&hidden, shape, &mask, &[0, 1], &mut out, Pooling::Max, true).unwrap();
        let r = 1.0 / 5f32.sqrt();
        assert!((out[0] - r).abs() < 1e-6 && (out[1] - 2.0 * r).abs() < 1e-6);
        pool_into(
            &hidden,
            shape,
            &mask,
            &[0, 1],
            &mut out,
            Pooling::LastToken,
            false,
        )
        .unwrap();
        assert_eq!(&out[..4], &[1.0, 2.0, 3.0, 3.0]);
        assert!(pool_into(
            &hidden,
            shape,
            &mask,
            &[0, 3],
            &mut out,
            Pooling::Cls,
            false
        )
        .is_err());
        assert!(Pooling::parse("median").is_err());
    }
}
