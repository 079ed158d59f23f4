//! `cargo bench --bench load`: how much of this machine's gRPC capacity each call of
//! interview-webhooks reaches, as ratios against a bare tonic server measured in the same run
//! with the same client (see BENCHMARKS.md for the method and the latest figures).
//!
//! Flags (after `--`): `--quick` (a run under a minute, for CI), `--json PATH`,
//! `--concurrency N` (requests in flight, 64 by default), `--connections N` (gRPC connections
//! the requests share, 4 by default), `--rounds N` and `--seconds N` (each phase runs N
//! rounds of N measured seconds, taking turns with the others; 3 x 4 s by default, 1 x 2 s
//! with `--quick`), `--only PHASE,...` (run only those, e.g. to profile one; each server's
//! pid is printed), `--keep-logs` (keep the servers' logs, as after a failure). With
//! `TEST_POSTGRES_URL` set, the two writes are also measured on PostgreSQL, in a schema
//! created for the run and dropped after it.
//!
//! Every server runs on loopback, started here from the release binary; the process exits
//! with status 1 when any request failed.

#[path = "load/drive.rs"]
mod drive;
#[path = "load/echo.rs"]
mod echo;
#[path = "load/phases.rs"]
mod phases;
#[path = "load/postgres.rs"]
mod postgres;
#[path = "load/procs.rs"]
mod procs;
#[path = "load/receiver.rs"]
mod receiver;
#[path = "load/report.rs"]
mod report;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use drive::Plan;
use phases::Grpc;
use procs::Proc;
use report::Results;

/// How many 4 KiB writes the fsync probe times.
const FSYNC_PROBES: usize = 100;

/// The parsed command line.
#[derive(Debug, Clone)]
struct Args {
    quick: bool,
    json: Option<PathBuf>,
    concurrency: usize,
    connections: usize,
    seconds: Option<u64>,
    rounds: Option<usize>,
    only: Vec<String>,
    keep_logs: bool,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut out = Args {
            quick: false,
            json: None,
            concurrency: 64,
            connections: 4,
            seconds: None,
            rounds: None,
            only: Vec::new(),
            keep_logs: false,
        };
        let number = |flag: &str, value: Option<String>| {
            value
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{flag} takes a positive number"))
        };
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => out.quick = true,
                "--keep-logs" => out.keep_logs = true,
                "--json" => {
                    out.json = Some(args.next().ok_or("--json takes a path")?.into());
                }
                "--concurrency" => out.concurrency = number(&arg, args.next())? as usize,
                "--connections" => out.connections = number(&arg, args.next())? as usize,
                "--seconds" => out.seconds = Some(number(&arg, args.next())?),
                "--rounds" => out.rounds = Some(number(&arg, args.next())? as usize),
                "--only" => {
                    let list = args.next().ok_or("--only takes phase names")?;
                    out.only = list.split(',').map(str::to_owned).collect();
                }
                // Cargo adds `--bench`; a filter word selects nothing here.
                "--bench" => {}
                other if !other.starts_with('-') => {}
                other => return Err(format!("unknown flag {other}")),
            }
        }
        Ok(out)
    }

    /// Whether `phase` runs (`--only`, for profiling one phase, runs the listed ones).
    fn wants(&self, phase: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == phase)
    }

    /// How many times every phase runs, taking turns with the others.
    fn rounds(&self) -> usize {
        self.rounds.unwrap_or(if self.quick { 1 } else { 3 })
    }

    /// One phase's slice in `round` (counted from 0): a full warm-up the first time, a
    /// short settling time after (connections and caches are warm by then).
    fn plan(&self, round: usize) -> Plan {
        let (warmup, measure) = match (self.quick, round) {
            (true, _) => (0.5, 2),
            (false, 0) => (2.0, 4),
            (false, _) => (0.5, 4),
        };
        Plan {
            concurrency: self.concurrency,
            warmup: Duration::from_secs_f64(warmup),
            measure: Duration::from_secs(self.seconds.unwrap_or(measure)),
        }
    }
}

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1).peekable();
    if argv.peek().map(String::as_str) == Some(procs::ECHO_MODE) {
        return match echo::main() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("echo server: {e:#}");
                ExitCode::FAILURE
            }
        };
    }

    let args = match Args::parse(argv) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("load: {e}");
            return ExitCode::from(2);
        }
    };
    // reqwest is built without a default TLS provider; plain HTTP still asks for one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut results = Results::new(args.plan(1), args.rounds(), args.connections);
    let outcome = runtime.block_on(run(&args, &mut results));

    print!("{}", results.table());
    if let Some(path) = &args.json
        && let Err(e) = std::fs::write(path, results.json())
    {
        eprintln!("load: writing {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    match outcome {
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::FAILURE
        }
        Ok(()) if results.errors() > 0 => {
            eprintln!(
                "load: {} requests failed (see the samples above)",
                results.errors()
            );
            ExitCode::FAILURE
        }
        Ok(()) => ExitCode::SUCCESS,
    }
}

/// Runs every phase, filling `results` as it goes so that a failure keeps what was measured.
/// The servers stay up for the whole run and the phases take turns in rounds, so that each
/// ratio compares slices measured minutes apart at most, whatever else the machine does.
async fn run(args: &Args, results: &mut Results) -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix("interview-webhooks-load-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let started = Instant::now();

    results.fsync("start", fsync_probe(dir.path())?);
    let echo = Proc::echo(dir.path())?;
    progress(&format!("echo server (bare tonic), pid {}", echo.pid()));
    let echo_grpc = Grpc::new(echo.channels(args.connections).await?, "iwk_unused")?;

    let db = dir.path().join("bench.db");
    let sqlite = format!("sqlite://{}", db.display());
    sqlite_rounds(args, &echo_grpc, &sqlite, dir.path(), results).await?;

    match std::env::var("TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => {
            let schema = postgres::Schema::create(&url)?;
            let url = schema.url();
            let outcome = postgres_rounds(args, &echo_grpc, &url, dir.path(), results).await;
            schema.drop_now();
            outcome?;
        }
        _ => results.note("postgres: skipped (TEST_POSTGRES_URL is not set)".to_owned()),
    }
    results.rss("echo", echo.peak_rss_mib());
    echo.stop();
    results.fsync("end", fsync_probe(dir.path())?);

    results.elapsed = started.elapsed();
    if results.errors() > 0 || args.keep_logs {
        // The servers' logs say why; keep them.
        let kept = dir.keep();
        results.note(format!("server logs kept in {}", kept.display()));
    }
    Ok(())
}

/// Echo, the settings calls, and delivery against the same receiver as `bare_post`, on one
/// SQLite server.
async fn sqlite_rounds(
    args: &Args,
    echo: &Grpc,
    url: &str,
    dir: &Path,
    results: &mut Results,
) -> Result<(), String> {
    let mut flags = vec!["--allow-private-webhook-targets"];
    // Retries come fast if anything fails, so a failure shows within the run.
    if server_supports("--retry-schedule") {
        flags.extend(["--retry-schedule", "1s,1s,1s"]);
    }
    let server = Proc::serve(url, &flags, dir, "sqlite")?;
    progress(&format!(
        "interview-webhooks on SQLite, pid {}",
        server.pid()
    ));
    let grpc = Grpc::new(server.channels(args.connections).await?, &server.api_key)?;
    let http = phases::http_client(args.concurrency)?;
    let http_addr = server.http.expect("serve has an HTTP address");
    phases::configure(&grpc, args.concurrency, phases::seed()).await?;

    let epoch = Instant::now();
    let bare_receiver = receiver::Receiver::start(epoch).await?;
    let delivery_receiver = receiver::Receiver::start(epoch).await?;
    let delivery = if args.wants("delivery") {
        match phases::DeliveryBench::setup(&grpc, &delivery_receiver, args.concurrency).await? {
            Ok(bench) => Some(bench),
            Err(why) => {
                results.note(format!("delivery: skipped ({why})"));
                None
            }
        }
    } else {
        None
    };

    for round in 0..args.rounds() {
        let plan = args.plan(round);
        let mut slice = Slice {
            args,
            results: &mut *results,
            round,
        };
        if slice.wants("echo") {
            slice.add("echo", phases::health(echo, plan).await);
        }
        if slice.wants("server_health") {
            slice.add("server_health", phases::health(&grpc, plan).await);
        }
        let rest = (&http, http_addr, server.api_key.as_str());
        slice.settings_phases("", &grpc, rest, plan).await;
        if slice.wants("bare_post") {
            slice.add(
                "bare_post",
                phases::bare_post(&http, &bare_receiver, plan).await,
            );
        }
        if let Some(delivery) = &delivery {
            let (delivered, published) = delivery.round(plan).await;
            slice.add("delivery", delivered);
            slice.add("publish", published);
        }
    }

    results.rss("interview-webhooks (SQLite)", server.peak_rss_mib());
    server.stop();
    Ok(())
}

/// Echo and the settings calls on a PostgreSQL schema of their own.
async fn postgres_rounds(
    args: &Args,
    echo: &Grpc,
    url: &str,
    dir: &Path,
    results: &mut Results,
) -> Result<(), String> {
    let server = Proc::serve(url, &[], dir, "postgres")?;
    progress(&format!(
        "interview-webhooks on PostgreSQL, pid {}",
        server.pid()
    ));
    let grpc = Grpc::new(server.channels(args.connections).await?, &server.api_key)?;
    let http = phases::http_client(args.concurrency)?;
    let http_addr = server.http.expect("serve has an HTTP address");
    phases::configure(&grpc, args.concurrency, phases::seed()).await?;

    // Rounds numbered after the SQLite ones: a ratio pairs slices of the same round.
    for round in args.rounds()..2 * args.rounds() {
        let plan = args.plan(round - args.rounds());
        let mut slice = Slice {
            args,
            results: &mut *results,
            round,
        };
        if slice.wants("echo") {
            slice.add("echo", phases::health(echo, plan).await);
        }
        let rest = (&http, http_addr, server.api_key.as_str());
        slice.settings_phases("pg_", &grpc, rest, plan).await;
    }

    results.rss("interview-webhooks (PostgreSQL)", server.peak_rss_mib());
    server.stop();
    Ok(())
}

/// One round's phases, recorded as they finish.
struct Slice<'a> {
    args: &'a Args,
    results: &'a mut Results,
    round: usize,
}

impl Slice<'_> {
    fn wants(&self, phase: &str) -> bool {
        let wanted = self.args.wants(phase);
        if wanted {
            progress(&format!("round {}: {phase}", self.round + 1));
        }
        wanted
    }

    fn add(&mut self, phase: &str, stats: drive::Stats) {
        self.results.add(self.round, phase, stats);
    }

    /// `grpc_get`, `grpc_update` and `rest_put` against one server, each named with `prefix`
    /// (`pg_` for the PostgreSQL server). `rest` is the HTTP client, the REST address and the
    /// API key.
    async fn settings_phases(
        &mut self,
        prefix: &str,
        grpc: &Grpc,
        rest: (&reqwest::Client, SocketAddr, &str),
        plan: Plan,
    ) {
        let (http, http_addr, api_key) = rest;
        let name = |phase: &str| format!("{prefix}{phase}");
        if self.wants(&name("grpc_get")) {
            self.add(&name("grpc_get"), phases::grpc_get(grpc, plan).await);
        }
        if self.wants(&name("grpc_update")) {
            self.add(&name("grpc_update"), phases::grpc_update(grpc, plan).await);
        }
        if self.wants(&name("rest_put")) {
            let stats = phases::rest_put(http, http_addr, api_key, plan).await;
            self.add(&name("rest_put"), stats);
        }
    }
}

/// How long this disk takes to make a 4 KiB write durable (p50, p99), in the run's temp
/// directory where the SQLite file lives: the floor under every durable commit, which the
/// echo baseline knows nothing of, and which other tenants of the machine move a lot.
fn fsync_probe(dir: &Path) -> Result<(Duration, Duration), String> {
    use std::os::unix::fs::FileExt as _;

    let path = dir.join("fsync-probe");
    let file = std::fs::File::create(&path).map_err(|e| format!("fsync probe: {e}"))?;
    let page = [0u8; 4096];
    let mut times = Vec::with_capacity(FSYNC_PROBES);
    for i in 0..FSYNC_PROBES {
        let offset = (i % 16 * page.len()) as u64;
        file.write_all_at(&page, offset)
            .map_err(|e| format!("fsync probe: {e}"))?;
        let start = Instant::now();
        file.sync_data().map_err(|e| format!("fsync probe: {e}"))?;
        times.push(start.elapsed());
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    times.sort_unstable();
    Ok((times[FSYNC_PROBES / 2], times[FSYNC_PROBES * 99 / 100]))
}

/// Whether `serve --help` lists `flag` (delivery flags arrived after the settings service).
fn server_supports(flag: &str) -> bool {
    std::process::Command::new(procs::SERVER_BIN)
        .args(["serve", "--help"])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(flag))
}

fn progress(what: &str) {
    eprintln!("load: {what}");
}
