//! Sets of byte ranges `[start, end)`: what is on disk, what is missing.

/// Sorted, disjoint, non-adjacent half-open intervals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    v: Vec<(u64, u64)>,
}

impl RangeSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `[start, end)`, merging with overlapping or touching intervals.
    pub fn add(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        // First interval whose end reaches `start` (touching counts).
        let i = self.v.partition_point(|&(_, e)| e < start);
        let mut s = start;
        let mut e = end;
        let mut j = i;
        while j < self.v.len() && self.v[j].0 <= e {
            s = s.min(self.v[j].0);
            e = e.max(self.v[j].1);
            j += 1;
        }
        self.v.splice(i..j, std::iter::once((s, e)));
    }

    /// End of the interval that starts at 0 (0 if none): the contiguous prefix.
    pub fn prefix_end(&self) -> u64 {
        match self.v.first() {
            Some(&(0, e)) => e,
            _ => 0,
        }
    }

    pub fn covered(&self) -> u64 {
        self.v.iter().map(|&(s, e)| e - s).sum()
    }

    /// The gaps of `[0, total)` not in the set.
    pub fn missing(&self, total: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = 0;
        for &(s, e) in &self.v {
            if s >= total {
                break;
            }
            if s > at {
                out.push((at, s));
            }
            at = at.max(e);
        }
        if at < total {
            out.push((at, total));
        }
        out
    }

    pub fn intervals(&self) -> &[(u64, u64)] {
        &self.v
    }
}

/// Cuts each gap into pieces of at most `chunk` bytes.
pub fn split(gaps: &[(u64, u64)], chunk: u64) -> Vec<(u64, u64)> {
    let chunk = chunk.max(1);
    let mut out = Vec::new();
    for &(s, e) in gaps {
        let mut a = s;
        while a < e {
            let b = e.min(a.saturating_add(chunk));
            out.push((a, b));
            a = b;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_reports_prefix() {
        let mut r = RangeSet::new();
        r.add(10, 20);
        r.add(30, 40);
        assert_eq!(r.prefix_end(), 0);
        r.add(0, 10);
        assert_eq!(r.prefix_end(), 20);
        r.add(15, 35);
        assert_eq!(r.intervals(), &[(0, 40)]);
        r.add(50, 50);
        assert_eq!(r.covered(), 40);
    }

    #[test]
    fn missing_gaps() {
        let mut r = RangeSet::new();
        r.add(5, 10);
        r.add(20, 25);
        assert_eq!(r.missing(30), vec![(0, 5), (10, 20), (25, 30)]);
        assert_eq!(r.missing(22), vec![(0, 5), (10, 20)]);
        assert_eq!(RangeSet::new().missing(0), vec![]);
    }

    #[test]
    fn random_adds_match_a_bitmap() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200 {
            let mut r = RangeSet::new();
            let mut bits = [false; 100];
            for _ in 0..10 {
                let a = rng.u64(0..100);
                let b = rng.u64(a..=100);
                r.add(a, b);
                for x in a..b {
                    bits[x as usize] = true;
                }
            }
            assert_eq!(r.covered(), bits.iter().filter(|b| **b).count() as u64);
            for w in r.intervals().windows(2) {
                assert!(w[0].1 < w[1].0);
            }
            let gaps: u64 = r.missing(100).iter().map(|(s, e)| e - s).sum();
            assert_eq!(gaps + r.covered(), 100);
        }
    }

    #[test]
    fn split_chunks() {
        assert_eq!(split(&[(0, 10)], 4), vec![(0, 4), (4, 8), (8, 10)]);
        assert_eq!(split(&[(3, 4), (10, 12)], 4), vec![(3, 4), (10, 12)]);
    }
}
