//! Engine metrics kept in atomics: batch sizes, commit latency and queue depth. The API renders
//! them for Prometheus; this module only counts.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of histogram buckets. For commit latency they are microseconds, for batch size
/// they are commands; the last bucket is everything above.
pub const HISTOGRAM_BOUNDS: [u64; 12] = [
    1, 4, 16, 64, 256, 1_024, 4_096, 16_384, 65_536, 262_144, 1_048_576, 4_194_304,
];

/// A cumulative histogram over [`HISTOGRAM_BOUNDS`].
#[derive(Debug, Default)]
pub struct AtomicHistogram {
    buckets: [AtomicU64; HISTOGRAM_BOUNDS.len()],
    count: AtomicU64,
    sum: AtomicU64,
}

impl AtomicHistogram {
    fn record(&self, value: u64) {
        for (bound, bucket) in HISTOGRAM_BOUNDS.iter().zip(&self.buckets) {
            if value <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Histogram {
        Histogram {
            cumulative: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            count: self.count.load(Ordering::Relaxed),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

/// A point-in-time copy of a histogram: `cumulative[i]` counts observations ≤ bound `i`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    pub cumulative: [u64; HISTOGRAM_BOUNDS.len()],
    pub count: u64,
    pub sum: u64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    queue_depth: AtomicI64,
    batches: AtomicU64,
    commands: AtomicU64,
    batch_commands: AtomicHistogram,
    commit_latency_us: AtomicHistogram,
}

/// A point-in-time copy of the engine's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub queue_depth: i64,
    pub batches_committed: u64,
    pub commands_committed: u64,
    pub batch_commands: Histogram,
    pub commit_latency_us: Histogram,
}

impl Metrics {
    pub(crate) fn queued(&self, requests: usize) {
        self.queue_depth
            .fetch_add(requests as i64, Ordering::Relaxed);
    }

    pub(crate) fn dequeued(&self, requests: usize) {
        self.queue_depth
            .fetch_sub(requests as i64, Ordering::Relaxed);
    }

    pub(crate) fn committed(&self, latency: Duration, commands: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.commands.fetch_add(commands as u64, Ordering::Relaxed);
        self.batch_commands.record(commands as u64);
        self.commit_latency_us
            .record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            queue_depth: self.queue_depth.load(Ordering::Relaxed),
            batches_committed: self.batches.load(Ordering::Relaxed),
            commands_committed: self.commands.load(Ordering::Relaxed),
            batch_commands: self.batch_commands.snapshot(),
            commit_latency_us: self.commit_latency_us.snapshot(),
        }
    }
}
