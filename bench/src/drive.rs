//! The load driver: keeps M calls in flight on each of N connections for a
//! fixed time and records every call's latency.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Calls that succeeded within the measured window.
    pub calls: u64,
    /// Calls that failed within it.
    pub errors: u64,
    /// Length of the measured window.
    pub elapsed: Duration,
    /// Latency of the successful calls, in microseconds.
    pub latency: Histogram<u64>,
}

impl Stats {
    /// Successful calls per second.
    pub fn throughput(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency at `quantile` (0 to 1), in milliseconds.
    pub fn latency_ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1e3
    }

    /// One row of the results table.
    pub fn row(&self, name: &str, concurrency: &str) -> String {
        format!(
            "| {name} | {concurrency} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            self.throughput(),
            self.latency_ms(0.50),
            self.latency_ms(0.99),
            self.latency_ms(0.999),
            self.errors
        )
    }

    /// The header of the results table.
    pub fn header() -> &'static str {
        "| scenario | in flight | calls/s | p50 ms | p99 ms | p99.9 ms | errors |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: |"
    }
}

/// A fresh latency histogram: 1 µs to 60 s, three significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// How long to run: a warm-up whose calls are not counted, then the window
/// that is measured.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Unmeasured start.
    pub warmup: Duration,
    /// Measured part.
    pub measure: Duration,
}

/// Runs `in_flight` loops of `call` on each of `lanes` (one per connection)
/// for `window`, and merges what they measured. `call` gets its lane and a
/// number unique to the call, and says whether the call succeeded.
pub async fn drive<L, F, Fut>(lanes: &[L], in_flight: usize, window: Window, call: F) -> Stats
where
    L: Clone + Send + 'static,
    F: Fn(L, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let measuring = Instant::now() + window.warmup;
    let end = measuring + window.measure;
    let mut tasks = Vec::new();
    for (lane_index, lane) in lanes.iter().enumerate() {
        for slot in 0..in_flight {
            let (lane, call) = (lane.clone(), Arc::clone(&call));
            let first = ((lane_index * in_flight + slot) as u64) << 32;
            tasks.push(tokio::spawn(async move {
                let (mut latency, mut calls, mut errors) = (histogram(), 0u64, 0u64);
                for n in first.. {
                    let started = Instant::now();
                    if started >= end {
                        break;
                    }
                    let ok = call(lane.clone(), n).await;
                    if started < measuring {
                        continue;
                    }
                    if ok {
                        let micros = started.elapsed().as_micros();
                        latency.saturating_record(u64::try_from(micros).unwrap_or(u64::MAX));
                        calls += 1;
                    } else {
                        errors += 1;
                    }
                }
                (latency, calls, errors)
            }));
        }
    }

    let mut stats = Stats {
        calls: 0,
        errors: 0,
        elapsed: window.measure,
        latency: histogram(),
    };
    for task in tasks {
        let (latency, calls, errors) = task.await.expect("a load task panicked");
        stats
            .latency
            .add(&latency)
            .expect("histograms of the same bounds");
        stats.calls += calls;
        stats.errors += errors;
    }
    // Calls started in the window count, so the window ends when the last
    // of them has finished.
    stats.elapsed = Instant::now().saturating_duration_since(measuring);
    stats
}
