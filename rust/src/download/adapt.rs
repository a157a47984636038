//! How many connections to run, and which ranges to re-issue on a fresh
//! one: measured throughput decides both.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::job::{lock, Job, Slot};

/// Chooses how many connections to run, from measured throughput.
///
/// Starts with one, or with `LARGE_START` for a large file (waiting a window
/// at one connection before growing cost ~1 s on a 1 GiB file behind a
/// per-connection cap). After each change it waits for the new connections to
/// warm up, then measures aggregate throughput over a window. The first step
/// has no baseline: 2x from one connection, 4x from a large start. If going from
/// n to k connections scaled almost linearly (each connection is capped
/// somewhere), it jumps 4x; if it helped somewhat, 2x; if it did not help
/// (one stream already fills the link or the CPU), it goes back to n and
/// stays there. Measured on loopback nginx (1 GiB): 1, 4 and 16 connections
/// give the same unthrottled throughput, so starting at 8 costs nothing
/// there, while behind `limit_rate 50m` it reaches 16 connections ~200 ms in.
pub(super) struct Adapt {
    level: usize,
    prev_level: usize,
    prev_rate: f64,
    changed_at: Instant,
    mark: Option<(Instant, u64)>,
    settled: bool,
}

// Short: on a fast link a 300 ms window per step was most of the ramp.
const WARMUP: Duration = Duration::from_millis(50);
const WINDOW: Duration = Duration::from_millis(150);
/// Connections opened at once when at least `LARGE_START_CHUNKS` ranges remain.
pub(super) const LARGE_START: usize = 8;
pub(super) const LARGE_START_CHUNKS: u64 = 8;

impl Adapt {
    pub(super) fn new(level: usize) -> Self {
        Adapt {
            level: level.max(1),
            prev_level: 0,
            prev_rate: 0.0,
            changed_at: Instant::now(),
            mark: None,
            settled: false,
        }
    }
}

/// Marks for re-issue the ranges that run far slower than the others (a bad
/// path or a throttled connection): their owner drops the response and the
/// rest of the range goes back to the queue, fetched on a fresh connection.
pub(super) fn abort_laggards(job: &Job) -> usize {
    const MIN_AGE: Duration = Duration::from_secs(2);
    let (slots, done_rates) = {
        let sc = lock(&job.sched);
        (
            sc.slots.clone(),
            sc.rates.iter().copied().collect::<Vec<f64>>(),
        )
    };
    let rates: Vec<(f64, &Arc<Slot>)> = slots
        .iter()
        .filter(|s| s.born.elapsed() >= MIN_AGE && !s.abort.load(Ordering::Relaxed))
        .map(|s| {
            let inner = s.lock();
            let done = (inner.pos - inner.start) as f64;
            (done / s.born.elapsed().as_secs_f64(), s)
        })
        .collect();
    // Compare with the ranges in flight and those just completed (at the
    // tail, the slow one may be the only range left).
    let mut all: Vec<f64> = rates.iter().map(|r| r.0).chain(done_rates).collect();
    if all.len() < 3 {
        return 0;
    }
    all.sort_by(|a, b| a.total_cmp(b));
    let median = all[all.len() / 2];
    let mut n = 0;
    for (rate, slot) in rates {
        if rate * 8.0 < median {
            slot.abort.store(true, Ordering::Relaxed);
            job.retries.fetch_add(1, Ordering::Relaxed);
            n += 1;
        }
    }
    n
}

impl Adapt {
    /// Returns the new target when it changes.
    pub(super) fn tick(&mut self, now: Instant, bytes: u64, max: usize) -> Option<usize> {
        if self.settled {
            return None;
        }
        if now < self.changed_at + WARMUP {
            return None;
        }
        let (t0, b0) = *self.mark.get_or_insert((now, bytes));
        if now < t0 + WINDOW {
            return None;
        }
        let rate = (bytes - b0) as f64 / (now - t0).as_secs_f64();
        self.mark = None;
        self.changed_at = now;
        if self.prev_level == 0 {
            self.prev_level = self.level;
            self.prev_rate = rate;
            let factor = if self.level > 1 { 4 } else { 2 };
            self.level = (self.level * factor).min(max);
            if self.level == self.prev_level {
                self.settled = true;
                return None;
            }
            return Some(self.level);
        }
        let gain = rate / self.prev_rate.max(1.0) - 1.0;
        let eff = gain / (self.level as f64 / self.prev_level as f64 - 1.0);
        if eff < 0.25 {
            self.settled = true;
            if gain < 0.05 {
                self.level = self.prev_level;
                return Some(self.level);
            }
            return None;
        }
        let factor = if eff > 0.75 { 4 } else { 2 };
        self.prev_level = self.level;
        self.prev_rate = rate;
        self.level = (self.level * factor).min(max);
        if self.level == self.prev_level {
            self.settled = true;
            return None;
        }
        Some(self.level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::download::options::MAX_CONNECTIONS;
    use crate::download::request::TICK;

    /// Drives `Adapt` against a model link where `n` connections give
    /// `rate(n)` bytes/s; returns the connection count it settles on.
    fn settle(rate: impl Fn(usize) -> f64) -> (usize, f64) {
        settle_from(1, rate)
    }

    fn settle_from(start: usize, rate: impl Fn(usize) -> f64) -> (usize, f64) {
        let mut a = Adapt::new(start);
        let t0 = Instant::now();
        let mut now = t0;
        let mut bytes = 0.0;
        let mut level = start;
        for _ in 0..200 {
            now += TICK;
            bytes += rate(level) * TICK.as_secs_f64();
            if let Some(l) = a.tick(now, bytes as u64, MAX_CONNECTIONS) {
                level = l;
            }
        }
        (level, (now - t0).as_secs_f64())
    }

    #[test]
    fn adapt_ramps_up_on_capped_connections() {
        let (level, _) = settle(|n| 50e6 * n as f64);
        assert_eq!(level, MAX_CONNECTIONS);
    }

    #[test]
    fn adapt_stays_at_one_when_one_stream_fills_the_link() {
        let (level, _) = settle(|n| if n == 1 { 600e6 } else { 560e6 });
        assert_eq!(level, 1);
    }

    #[test]
    fn adapt_stops_where_the_link_saturates() {
        // Capped at 50 MB/s per connection, 300 MB/s in total.
        let (level, _) = settle(|n| (50e6 * n as f64).min(300e6));
        assert!((4..=8).contains(&level), "settled at {level}");
    }

    #[test]
    fn adapt_large_start_reaches_the_cap_in_one_step() {
        let mut a = Adapt::new(LARGE_START);
        let mut now = Instant::now();
        let mut bytes = 0.0;
        let mut level = LARGE_START;
        let mut steps = 0;
        while level < MAX_CONNECTIONS && steps < 100 {
            now += TICK;
            steps += 1;
            bytes += 50e6 * level as f64 * TICK.as_secs_f64();
            if let Some(l) = a.tick(now, bytes as u64, MAX_CONNECTIONS) {
                level = l;
            }
        }
        assert_eq!(level, MAX_CONNECTIONS);
        // Warm-up plus one window, in ticks.
        assert!(
            steps as u32 * TICK <= WARMUP + WINDOW + 2 * TICK,
            "{steps} ticks"
        );
        assert_eq!(
            settle_from(LARGE_START, |n| 50e6 * n as f64).0,
            MAX_CONNECTIONS
        );
    }

    #[test]
    fn adapt_large_start_falls_back_when_more_does_not_help() {
        let (level, _) = settle_from(
            LARGE_START,
            |n| if n <= LARGE_START { 600e6 } else { 590e6 },
        );
        assert_eq!(level, LARGE_START);
    }
}
