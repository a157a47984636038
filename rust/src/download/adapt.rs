//! How many connections to run, and which ranges to re-issue on a fresh
//! one: measured throughput decides both.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::job::{lock, Job, Slot};

/// Chooses how many connections to run, from measured throughput.
///
/// Always starts with one connection and measures it over a window: that is
/// the baseline every later step is judged against. The first step has no
/// earlier comparison, so it is a jump to `first_step` connections
/// (`LARGE_START` for a large file, 2 otherwise). After each change it waits
/// for the new connections to warm up, then measures aggregate throughput
/// over a window. If going from n to k connections scaled almost linearly
/// (each connection is capped somewhere), it jumps 4x; if it helped
/// somewhat, 2x; if it did not help (one stream already fills the link or
/// the CPU), it goes back to n and stays there; if it helped less than the
/// connections cost, it measures n again and keeps k only if k was faster.
///
/// Why one first: on loopback nginx on a loaded 2-core machine (1 GiB,
/// unthrottled), one connection ran at 1.12x curl, two at 1.0x, four at
/// 0.81x and eight at 0.70x: with the link not the bottleneck, every extra
/// connection is another tokio worker blocked in `pwrite` on the file's
/// inode lock (ext4 serialises buffered writes) and ranges that arrive out
/// of order hold back the hasher. Behind `limit_rate 50m` the 1 -> 8 jump
/// scales linearly, so it reaches 16 connections after two windows (~0.4 s).
pub(super) struct Adapt {
    level: usize,
    prev_level: usize,
    prev_rate: f64,
    changed_at: Instant,
    mark: Option<(Instant, u64)>,
    settled: bool,
    /// Connections to jump to from one, where there is no baseline yet.
    first_step: usize,
    /// A step that helped less than its connections cost: (level, rate),
    /// kept while the smaller level is measured a second time.
    recheck: Option<(usize, f64)>,
}

// Short: on a fast link a 300 ms window per step was most of the ramp.
const WARMUP: Duration = Duration::from_millis(50);
const WINDOW: Duration = Duration::from_millis(150);
/// The first step from one connection when at least `LARGE_START_CHUNKS`
/// ranges remain: one jump tells a per-connection cap (8x the rate) from a
/// link or CPU that one stream already fills (no gain, or a loss).
pub(super) const LARGE_START: usize = 8;
pub(super) const LARGE_START_CHUNKS: u64 = 8;

impl Adapt {
    /// Starts at one connection; the first step goes to `first_step`.
    pub(super) fn new(first_step: usize) -> Self {
        Adapt {
            level: 1,
            prev_level: 0,
            prev_rate: 0.0,
            changed_at: Instant::now(),
            mark: None,
            settled: false,
            first_step: first_step.max(2),
            recheck: None,
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
        if let Some((more, more_rate)) = self.recheck.take() {
            // Second look at the smaller level: it wins unless the larger
            // one was clearly faster.
            self.settled = true;
            if rate >= more_rate * 0.95 {
                return None;
            }
            self.level = more;
            return Some(more);
        }
        if self.prev_level == 0 {
            self.prev_level = self.level;
            self.prev_rate = rate;
            self.level = (self.level * self.first_step).min(max);
            if self.level == self.prev_level {
                self.settled = true;
                return None;
            }
            return Some(self.level);
        }
        let gain = rate / self.prev_rate.max(1.0) - 1.0;
        let eff = gain / (self.level as f64 / self.prev_level as f64 - 1.0);
        if eff < 0.25 {
            if gain < 0.05 {
                self.settled = true;
                self.level = self.prev_level;
                return Some(self.level);
            }
            // It helped a little, or a busy machine made one window of the
            // smaller level look slow (150 ms windows vary by 2x under load):
            // measure the smaller level again before keeping the connections.
            self.recheck = Some((self.level, rate));
            self.level = self.prev_level;
            return Some(self.level);
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
        settle_from(2, rate)
    }

    fn settle_from(first_step: usize, rate: impl Fn(usize) -> f64) -> (usize, f64) {
        let mut a = Adapt::new(first_step);
        let t0 = Instant::now();
        let mut now = t0;
        let mut bytes = 0.0;
        let mut level = 1;
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
    fn adapt_large_file_reaches_the_cap_in_two_windows() {
        let mut a = Adapt::new(LARGE_START);
        let mut now = Instant::now();
        let mut bytes = 0.0;
        let mut level = 1;
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
        // Two warm-ups plus two windows (1 -> 8 -> 16), in ticks.
        assert!(
            steps as u32 * TICK <= 2 * (WARMUP + WINDOW) + 2 * TICK,
            "{steps} ticks"
        );
        assert_eq!(
            settle_from(LARGE_START, |n| 50e6 * n as f64).0,
            MAX_CONNECTIONS
        );
    }

    #[test]
    fn adapt_large_file_stays_at_one_when_more_connections_cost() {
        // Unthrottled loopback on 2 busy cores: extra connections only add
        // contention (measured 1.12x, 0.81x, 0.70x curl at 1, 4, 8).
        let (level, _) = settle_from(LARGE_START, |n| match n {
            1 => 600e6,
            2..=4 => 480e6,
            _ => 420e6,
        });
        assert_eq!(level, 1);
    }

    #[test]
    fn adapt_large_file_keeps_connections_that_help_somewhat() {
        // 8 connections double the rate of one: less than linear, but a gain.
        let (level, _) = settle_from(LARGE_START, |n| if n == 1 { 100e6 } else { 200e6 });
        assert_eq!(level, LARGE_START);
    }

    #[test]
    fn adapt_large_file_measures_one_again_after_a_slow_window() {
        // Loopback under load: the first window at one connection came out
        // at 174 MB/s, one connection really does 400, eight do 356.
        let mut a = Adapt::new(LARGE_START);
        let mut now = Instant::now();
        let (mut bytes, mut level, mut windows) = (0.0, 1, 0);
        for _ in 0..200 {
            now += TICK;
            let rate = match level {
                1 if windows == 0 => 174e6,
                1 => 400e6,
                _ => 356e6,
            };
            bytes += rate * TICK.as_secs_f64();
            if let Some(l) = a.tick(now, bytes as u64, MAX_CONNECTIONS) {
                level = l;
                windows += 1;
            }
        }
        assert_eq!(level, 1);
    }
}
