//! The load loop every phase shares: a fixed number of workers, each with one request in
//! flight, until the phase's deadline or its request cap. Requests that finish after the
//! warm-up are timed; their count over the measured time is the phase's requests/s.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A request that takes longer than this counts as an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The most requests one worker makes in a phase, whatever the deadline says.
const MAX_REQUESTS_PER_WORKER: u64 = 2_000_000;

/// How many distinct error messages a phase keeps for the report.
const ERROR_SAMPLES: usize = 5;

/// How long one phase runs.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Requests in flight at once (one per worker).
    pub concurrency: usize,
    /// Run, untimed, before measuring.
    pub warmup: Duration,
    /// Measured time.
    pub measure: Duration,
}

/// What one phase measured.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Successful requests per second over the measured time.
    pub rps: f64,
    /// Median latency of the measured successes.
    pub p50: Duration,
    /// 99th percentile latency of the measured successes.
    pub p99: Duration,
    /// Measured successes.
    pub ok: u64,
    /// Failed requests, warm-up included: any error fails the run.
    pub errors: u64,
    /// A few distinct error messages, to find out why.
    pub error_samples: Vec<String>,
    /// The measured time.
    pub measured: Duration,
    /// Every measured latency in microseconds, sorted (for pooling rounds).
    micros: Vec<u32>,
}

impl Stats {
    /// Builds stats from success latencies (in microseconds) over `measured`.
    pub fn from_latencies(mut micros: Vec<u32>, measured: Duration) -> Self {
        micros.sort_unstable();
        Self {
            rps: micros.len() as f64 / measured.as_secs_f64(),
            p50: percentile(&micros, 0.50),
            p99: percentile(&micros, 0.99),
            ok: micros.len() as u64,
            measured,
            micros,
            ..Self::default()
        }
    }

    /// Pools rounds of one phase: counts and latencies add up, over their total time.
    pub fn pool<'a>(rounds: impl IntoIterator<Item = &'a Stats> + Clone) -> Self {
        let measured = rounds.clone().into_iter().map(|s| s.measured).sum();
        let micros = (rounds.clone().into_iter())
            .flat_map(|s| s.micros.iter().copied())
            .collect();
        let mut pooled = Self::from_latencies(micros, measured);
        for round in rounds {
            pooled.errors += round.errors;
            for sample in &round.error_samples {
                if pooled.error_samples.len() < ERROR_SAMPLES
                    && !pooled.error_samples.contains(sample)
                {
                    pooled.error_samples.push(sample.clone());
                }
            }
        }
        pooled
    }

    /// Adds an error, keeping its message if it is a new one.
    pub fn record_error(&mut self, message: String) {
        self.errors += 1;
        if self.error_samples.len() < ERROR_SAMPLES && !self.error_samples.contains(&message) {
            self.error_samples.push(message);
        }
    }
}

fn percentile(sorted: &[u32], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    Duration::from_micros(u64::from(sorted[index]))
}

/// Runs `op(worker, seq)` from `plan.concurrency` workers until the deadline. `seq` numbers
/// the requests of the phase from 0, across workers.
pub async fn run<Op, Fut>(plan: Plan, op: Op) -> Stats
where
    Op: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let start = Instant::now();
    let warm = start + plan.warmup;
    let end = warm + plan.measure;
    let seq = Arc::new(AtomicU64::new(0));

    let workers: Vec<_> = (0..plan.concurrency)
        .map(|worker| {
            let op = op.clone();
            let seq = seq.clone();
            tokio::spawn(async move { work(worker, op, &seq, warm, end).await })
        })
        .collect();

    let mut micros = Vec::new();
    let mut failures = Vec::new();
    for worker in workers {
        match worker.await {
            Ok((lat, errs)) => {
                micros.extend(lat);
                failures.extend(errs);
            }
            Err(e) => failures.push(format!("worker panicked: {e}")),
        }
    }

    let mut stats = Stats::from_latencies(micros, plan.measure);
    for message in failures {
        stats.record_error(message);
    }
    stats
}

async fn work<Op, Fut>(
    worker: usize,
    op: Op,
    seq: &AtomicU64,
    warm: Instant,
    end: Instant,
) -> (Vec<u32>, Vec<String>)
where
    Op: Fn(usize, u64) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut micros = Vec::new();
    let mut errors = Vec::new();
    for _ in 0..MAX_REQUESTS_PER_WORKER {
        let began = Instant::now();
        if began >= end {
            break;
        }
        let n = seq.fetch_add(1, Ordering::Relaxed);
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, op(worker, n)).await;
        let done = Instant::now();
        match outcome {
            Ok(Ok(())) if done >= warm && done <= end => {
                micros.push(micros_of(done - began));
            }
            Ok(Ok(())) => {}
            Ok(Err(message)) => errors.push(message),
            Err(_) => errors.push(format!("no answer within {REQUEST_TIMEOUT:?}")),
        }
    }
    (micros, errors)
}

/// A duration in whole microseconds, saturating.
pub fn micros_of(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}
