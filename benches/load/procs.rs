//! The processes under test: the release `interview-webhooks serve` and the bare echo server
//! (this bench binary started again in echo mode). Each listens on loopback only, writes its
//! log to a file in the run's temp directory, and is stopped (SIGTERM, then SIGKILL) when its
//! handle is dropped.

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// The server binary cargo built for this bench (release profile).
pub const SERVER_BIN: &str = env!("CARGO_BIN_EXE_interview-webhooks");

/// The argument that turns this binary into the echo server.
pub const ECHO_MODE: &str = "__echo-server";

/// How long a process may take to print its first line and answer a health check.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a process may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Proxy variables are cleared for children: nothing here may leave loopback.
const PROXY_VARS: [&str; 6] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
];

/// A running child process.
pub struct Proc {
    name: &'static str,
    child: Child,
    // Kept open: the echo server exits when it closes.
    _stdin: Option<ChildStdin>,
    /// Where it serves gRPC.
    pub grpc: SocketAddr,
    /// Where it serves HTTP (the real server only).
    pub http: Option<SocketAddr>,
    /// The API key the first `serve` printed (the real server only).
    pub api_key: String,
}

impl Proc {
    /// Starts `interview-webhooks serve` on `database_url`, with two free loopback ports.
    pub fn serve(
        database_url: &str,
        extra: &[&str],
        dir: &Path,
        tag: &str,
    ) -> Result<Self, String> {
        let grpc = free_port()?;
        let http = free_port()?;
        let log = dir.join(format!("{tag}.log"));
        let mut cmd = Command::new(SERVER_BIN);
        cmd.arg("serve")
            .args(["--database-url", database_url])
            .args(["--grpc-addr", &grpc.to_string()])
            .args(["--http-addr", &http.to_string()])
            .args(extra);
        let (child, stdin, first_line) = spawn(cmd, &log, false)?;
        let api_key = first_line.trim().to_owned();
        if !api_key.starts_with("iwk_") {
            return Err(format!(
                "the server printed no API key (got {api_key:?}); see {}",
                log.display()
            ));
        }
        Ok(Self {
            name: "interview-webhooks",
            child,
            _stdin: stdin,
            grpc,
            http: Some(http),
            api_key,
        })
    }

    /// Starts the echo server: this binary in [`ECHO_MODE`]; it prints its port.
    pub fn echo(dir: &Path) -> Result<Self, String> {
        let log = dir.join("echo.log");
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.arg(ECHO_MODE);
        let (child, stdin, first_line) = spawn(cmd, &log, true)?;
        let grpc = first_line
            .trim()
            .parse()
            .map_err(|_| format!("the echo server printed {first_line:?}, not its address"))?;
        Ok(Self {
            name: "echo",
            child,
            _stdin: stdin,
            grpc,
            http: None,
            api_key: String::new(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory so far, in MiB (`VmHWM`).
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }

    /// Opens `n` gRPC connections to it and waits until it answers a health check.
    pub async fn channels(&self, n: usize) -> Result<Vec<Channel>, String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let endpoint = Endpoint::from_shared(format!("http://{}", self.grpc))
            .map_err(|e| e.to_string())?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .timeout(super::drive::REQUEST_TIMEOUT);
        let first = loop {
            let attempt = async {
                let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
                HealthClient::new(channel.clone())
                    .check(HealthCheckRequest::default())
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(channel)
            };
            match attempt.await {
                Ok(channel) => break channel,
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("{} never became ready: {e}", self.name));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };

        let mut channels = vec![first];
        while channels.len() < n {
            channels.push(endpoint.connect().await.map_err(|e| e.to_string())?);
        }
        Ok(channels)
    }

    /// Stops it: SIGTERM (so SQLite checkpoints and in-flight work finishes), SIGKILL after
    /// [`STOP_TIMEOUT`].
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        self._stdin.take();
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "{} did not stop within {STOP_TIMEOUT:?}; killing it",
            self.name
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    listener.local_addr().map_err(|e| e.to_string())
}

/// Spawns `cmd` with its log to `log`, and waits (bounded) for its first stdout line.
fn spawn(
    mut cmd: Command,
    log: &Path,
    keep_stdin: bool,
) -> Result<(Child, Option<ChildStdin>, String), String> {
    let log_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    // The default level, as a deployment runs it; colours off since it goes to a file.
    cmd.env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(if keep_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(log_file);
    let mut child = cmd.spawn().map_err(|e| format!("spawning: {e}"))?;

    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        // Keep draining so the child never blocks on a full pipe.
        for _ in lines {}
    });
    let first = match rx.recv_timeout(START_TIMEOUT) {
        Ok(Some(Ok(line))) => line,
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{} printed nothing on stdout; see {}",
                cmd.get_program().to_string_lossy(),
                log.display()
            ));
        }
    };
    let stdin = child.stdin.take();
    Ok((child, stdin, first))
}
