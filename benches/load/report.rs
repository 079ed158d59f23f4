//! The run's results: the table a person reads and the JSON a script reads.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::drive::{Plan, Stats};

/// A ratio with its goal: `name`, numerator phase, denominator phase, goal.
const RATIOS: [(&str, &str, &str, Option<f64>); 6] = [
    ("ratio_get_echo", "grpc_get", "echo", Some(0.6)),
    ("ratio_update_echo", "grpc_update", "echo", Some(0.3)),
    (
        "ratio_rest_grpc_update",
        "rest_put",
        "grpc_update",
        Some(0.8),
    ),
    ("ratio_delivery_bare", "delivery", "bare_post", Some(0.5)),
    ("ratio_pg_update_echo", "pg_grpc_update", "echo", None),
    (
        "ratio_pg_rest_grpc_update",
        "pg_rest_put",
        "pg_grpc_update",
        None,
    ),
];

/// The peak RSS goal, MiB.
const RSS_GOAL_MIB: f64 = 64.0;

/// Everything measured so far.
pub struct Results {
    plan: Plan,
    rounds: usize,
    connections: usize,
    slices: Vec<(usize, String, Stats)>,
    rss: Vec<(&'static str, Option<f64>)>,
    fsync: Vec<(&'static str, Duration, Duration)>,
    notes: Vec<String>,
    /// How long the whole run took.
    pub elapsed: Duration,
}

/// A ratio over the rounds that measured both phases.
struct Ratio {
    pooled: f64,
    min: f64,
    max: f64,
}

impl Results {
    /// No results yet, for a run of `rounds` rounds of slices like `plan`.
    pub fn new(plan: Plan, rounds: usize, connections: usize) -> Self {
        Self {
            plan,
            rounds,
            connections,
            slices: Vec::new(),
            rss: Vec::new(),
            fsync: Vec::new(),
            notes: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    /// Records one phase's slice in `round`.
    pub fn add(&mut self, round: usize, phase: &str, stats: Stats) {
        eprintln!(
            "load:   {phase}: {:.0}/s, p99 {:.1} ms, {} errors",
            stats.rps,
            ms(stats.p99),
            stats.errors
        );
        self.slices.push((round, phase.to_owned(), stats));
    }

    /// Records a process's peak RSS.
    pub fn rss(&mut self, process: &'static str, mib: Option<f64>) {
        self.rss.push((process, mib));
    }

    /// Records the disk's fsync latency (p50, p99) at one moment of the run.
    pub fn fsync(&mut self, when: &'static str, (p50, p99): (Duration, Duration)) {
        eprintln!(
            "load: fsync at the {when}: p50 {:.2} ms, p99 {:.2} ms",
            ms(p50),
            ms(p99)
        );
        self.fsync.push((when, p50, p99));
    }

    /// Adds a line under the table.
    pub fn note(&mut self, line: String) {
        eprintln!("load: {line}");
        self.notes.push(line);
    }

    /// Failed requests over every phase.
    pub fn errors(&self) -> u64 {
        self.slices.iter().map(|(_, _, s)| s.errors).sum()
    }

    /// Phase names in the order they first ran.
    fn phase_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for (_, name, _) in &self.slices {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
        names
    }

    /// Every round of `phase` pooled.
    fn pooled(&self, phase: &str) -> Option<Stats> {
        let rounds: Vec<&Stats> = (self.slices.iter())
            .filter(|(_, n, _)| n == phase)
            .map(|(_, _, s)| s)
            .collect();
        (!rounds.is_empty()).then(|| Stats::pool(rounds.iter().copied()))
    }

    fn rps(&self, phase: &str) -> Option<f64> {
        self.pooled(phase).map(|s| s.rps)
    }

    fn slice(&self, round: usize, phase: &str) -> Option<&Stats> {
        (self.slices.iter())
            .find(|(r, n, _)| *r == round && n == phase)
            .map(|(_, _, s)| s)
    }

    /// `top / bottom` over the rounds that measured both, and its range across them.
    fn ratio(&self, top: &str, bottom: &str) -> Option<Ratio> {
        let mut pairs = Vec::new();
        for round in 0..2 * self.rounds {
            if let (Some(t), Some(b)) = (self.slice(round, top), self.slice(round, bottom)) {
                pairs.push((t, b));
            }
        }
        let per_round: Vec<f64> = (pairs.iter())
            .filter(|(_, b)| b.rps > 0.0)
            .map(|(t, b)| t.rps / b.rps)
            .collect();
        let t = Stats::pool(pairs.iter().map(|(t, _)| *t));
        let b = Stats::pool(pairs.iter().map(|(_, b)| *b));
        (b.rps > 0.0 && !per_round.is_empty()).then(|| Ratio {
            pooled: t.rps / b.rps,
            min: per_round.iter().copied().fold(f64::INFINITY, f64::min),
            max: per_round.iter().copied().fold(0.0, f64::max),
        })
    }

    /// Peak RSS of the interview-webhooks servers (the echo server is not ours).
    fn server_rss(&self) -> Option<f64> {
        self.rss
            .iter()
            .filter(|(p, _)| p.starts_with("interview-webhooks"))
            .filter_map(|(_, m)| *m)
            .reduce(f64::max)
    }

    /// The table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\ninterview-webhooks load: concurrency {}, {} gRPC connections, {} round(s) of \
             {:?} per phase\n{}\n",
            self.plan.concurrency,
            self.connections,
            self.rounds,
            self.plan.measure,
            machine()
        );
        let _ = writeln!(
            out,
            "{:<16} {:>9} {:>8} {:>8} {:>7}   req/s per round",
            "phase", "req/s", "p50 ms", "p99 ms", "errors"
        );
        for name in self.phase_names() {
            let Some(s) = self.pooled(name) else {
                continue;
            };
            let per_round: Vec<String> = (self.slices.iter())
                .filter(|(_, n, _)| n == name)
                .map(|(_, _, r)| format!("{:.0}", r.rps))
                .collect();
            let _ = writeln!(
                out,
                "{name:<16} {:>9.0} {:>8.2} {:>8.2} {:>7}   {}",
                s.rps,
                ms(s.p50),
                ms(s.p99),
                s.errors,
                per_round.join(" ")
            );
            for sample in &s.error_samples {
                let _ = writeln!(out, "{:<16}   error: {sample}", "");
            }
        }

        let _ = writeln!(
            out,
            "\n{:<30} {:>6} {:>13} {:>7}",
            "ratio", "value", "round range", "goal"
        );
        for (key, top, bottom, goal) in RATIOS {
            let Some(r) = self.ratio(top, bottom) else {
                continue;
            };
            let (goal, verdict) = match goal {
                Some(g) => (format!(">= {g}"), verdict(r.pooled >= g)),
                None => ("-".to_owned(), ""),
            };
            let _ = writeln!(
                out,
                "{:<30} {:>6.2} {:>13} {goal:>7}  {verdict}",
                format!("{top} / {bottom}"),
                r.pooled,
                format!("{:.2}-{:.2}", r.min, r.max),
            );
            let _ = key;
        }
        for (process, mib) in &self.rss {
            let value = mib.map_or("?".to_owned(), |m| format!("{m:.1}"));
            let (goal, verdict) = if process.starts_with("interview-webhooks") {
                (
                    format!("<= {RSS_GOAL_MIB}"),
                    verdict(mib.is_some_and(|m| m <= RSS_GOAL_MIB)),
                )
            } else {
                ("-".to_owned(), "")
            };
            let label = format!("peak RSS MiB, {process}");
            let _ = writeln!(out, "{label:<44} {value:>6} {goal:>7}  {verdict}");
        }

        for (when, p50, p99) in &self.fsync {
            let _ = writeln!(
                out,
                "disk fsync of 4 KiB at the {when}: p50 {:.2} ms, p99 {:.2} ms",
                ms(*p50),
                ms(*p99)
            );
        }
        for note in &self.notes {
            let _ = writeln!(out, "\n{note}");
        }
        let _ = writeln!(out, "\nrun took {:.0?}", self.elapsed);
        out
    }

    /// The JSON: the keys the issue names (null when not measured), then the details.
    pub fn json(&self) -> String {
        let mut top_map = Map::new();
        for name in [
            "echo",
            "grpc_get",
            "grpc_update",
            "rest_put",
            "delivery",
            "bare_post",
        ] {
            top_level(&mut top_map, &format!("{name}_rps"), self.rps(name));
        }
        top_level(&mut top_map, "server_peak_rss_mib", self.server_rss());
        for (key, top, bottom, _) in RATIOS {
            top_level(&mut top_map, key, self.ratio(top, bottom).map(|r| r.pooled));
        }
        for name in ["pg_grpc_get", "pg_grpc_update", "pg_rest_put"] {
            top_level(&mut top_map, &format!("{name}_rps"), self.rps(name));
        }
        let ranges: Map<String, Value> = (RATIOS.iter())
            .filter_map(|(key, t, b, _)| {
                let r = self.ratio(t, b)?;
                Some(((*key).to_owned(), json!([round3(r.min), round3(r.max)])))
            })
            .collect();
        top_map.insert("ratio_round_ranges".into(), Value::Object(ranges));

        let phases: Map<String, Value> = (self.phase_names().into_iter())
            .filter_map(|name| {
                let s = self.pooled(name)?;
                let rounds: Vec<f64> = (self.slices.iter())
                    .filter(|(_, n, _)| n == name)
                    .map(|(_, _, r)| round3(r.rps))
                    .collect();
                let detail = json!({
                    "rps": round3(s.rps),
                    "rps_per_round": rounds,
                    "p50_ms": round3(ms(s.p50)),
                    "p99_ms": round3(ms(s.p99)),
                    "ok": s.ok,
                    "errors": s.errors,
                    "error_samples": s.error_samples,
                });
                Some((name.to_owned(), detail))
            })
            .collect();
        top_map.insert("phases".into(), Value::Object(phases));
        let rss: Map<String, Value> = self
            .rss
            .iter()
            .map(|(p, m)| ((*p).to_owned(), m.map_or(Value::Null, |v| json!(round3(v)))))
            .collect();
        top_map.insert("peak_rss_mib".into(), Value::Object(rss));
        let fsync: Map<String, Value> = (self.fsync.iter())
            .map(|(when, p50, p99)| {
                let times = json!({"p50_ms": round3(ms(*p50)), "p99_ms": round3(ms(*p99))});
                ((*when).to_owned(), times)
            })
            .collect();
        top_map.insert("fsync".into(), Value::Object(fsync));
        top_map.insert("errors".into(), json!(self.errors()));
        top_map.insert("notes".into(), json!(self.notes));
        top_map.insert(
            "config".into(),
            json!({
                "concurrency": self.plan.concurrency,
                "grpc_connections": self.connections,
                "rounds": self.rounds,
                "measure_s_per_round": self.plan.measure.as_secs_f64(),
                "machine": machine(),
                "elapsed_s": round3(self.elapsed.as_secs_f64()),
            }),
        );
        let mut text = serde_json::to_string_pretty(&Value::Object(top_map)).expect("plain JSON");
        text.push('\n');
        text
    }
}

/// Sets a top-level key: the number, or null when it was not measured.
fn top_level(map: &mut Map<String, Value>, key: &str, value: Option<f64>) {
    map.insert(
        key.to_owned(),
        value.map_or(Value::Null, |v| json!(round3(v))),
    );
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// CPU model and count, memory, kernel.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_owned();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpus} x {model}, {mem_gib:.0} GiB RAM, Linux {}",
        kernel.trim()
    )
}
