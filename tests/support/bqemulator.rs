//! Starts bqemulator (PyPI, installed into .venv by tests/run.sh) on free
//! 127.0.0.1 ports for one test or benchmark, and stops it when dropped.
//! Shared by tests/bigquery_store.rs and benches/bigquery_cycle.rs.
//! Tests reach it through the strict layer (`sts-emulator` with a BigQuery
//! upstream, in this process): a request real BigQuery's discovery document
//! refuses is answered 400 and fails the test when the emulator is dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sts_job_manager::store::bigquery::Settings;

/// A store's settings for `project` at `host`: dataset `data_migration`,
/// the default table names.
pub fn settings(project: &str, host: &str) -> Settings {
    Settings {
        project: Some(project.into()),
        dataset: "data_migration".into(),
        location: "EU".into(),
        job_table: "sts_job".into(),
        history_table: "sts_job_history".into(),
        emulator_host: Some(host.into()),
    }
}

pub struct Emulator {
    child: Child,
    /// `127.0.0.1:PORT`, the value for BIGQUERY_EMULATOR_HOST.
    pub host: String,
    project: String,
    _log: tempfile::NamedTempFile,
    strict: Option<Strict>,
}

/// The strict layer in front of bqemulator, on a thread of its own.
struct Strict {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _root: tempfile::TempDir,
}

/// The status and body of `GET path`, or None when nothing answers.
pub fn http_get(host: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(host).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.get(9..12)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_string()))
}

fn start_strict(upstream: &str) -> (Strict, String) {
    let root = tempfile::tempdir().expect("a temporary root");
    let path = root.path().to_path_buf();
    let faults = sts_job_manager::emulator::ApiFaults {
        bigquery_upstream: Some(upstream.to_string()),
        ..Default::default()
    };
    let (address_tx, address_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime
            .block_on(sts_job_manager::emulator::serve(
                &path,
                0,
                faults,
                |a| {
                    let _ = address_tx.send(a);
                },
                async {
                    let _ = stop_rx.await;
                },
            ))
            .expect("the strict layer serves");
    });
    let address = address_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the strict layer started");
    (
        Strict {
            stop: Some(stop_tx),
            thread: Some(thread),
            _root: root,
        },
        address.to_string(),
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// `BQEMULATOR` if set, else the project's .venv, else PATH.
fn executable() -> PathBuf {
    if let Some(path) = std::env::var_os("BQEMULATOR") {
        return path.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/bqemulator");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("bqemulator")
}

/// Status code of `GET path`, or None when nothing answers yet.
pub fn http_get_status(host: &str, path: &str) -> Option<u16> {
    http_get(host, path).map(|(status, _)| status)
}

impl Emulator {
    pub fn start(project: &str) -> Emulator {
        let (rest, grpc) = (free_port(), free_port());
        let log = tempfile::NamedTempFile::new().expect("log file");
        let program = executable();
        let child = Command::new(&program)
            .args(["start", "--rest-host", "127.0.0.1", "--rest-port"])
            .arg(rest.to_string())
            .args(["--grpc-host", "127.0.0.1", "--grpc-port"])
            .arg(grpc.to_string())
            .args(["--project", project])
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("log file"))
            .stderr(log.reopen().expect("log file"))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "could not start {} ({e}); `bash tests/run.sh` installs it into .venv",
                    program.display()
                )
            });
        let mut emulator = Emulator {
            child,
            host: format!("127.0.0.1:{rest}"),
            project: project.into(),
            _log: log,
            strict: None,
        };
        let ready = format!("/bigquery/v2/projects/{project}/datasets");
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get_status(&emulator.host, &ready) != Some(200) {
            if let Ok(Some(status)) = emulator.child.try_wait() {
                let log = std::fs::read_to_string(emulator._log.path()).unwrap_or_default();
                panic!("bqemulator exited ({status}):\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "bqemulator did not start in 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let (strict, host) = start_strict(&emulator.host);
        emulator.strict = Some(strict);
        emulator.host = host;
        emulator
    }

    /// A store's settings for this emulator's project (see `settings`).
    pub fn settings(&self) -> Settings {
        settings(&self.project, &self.host)
    }

    /// What the strict layer refused so far.
    pub fn violations(&self) -> Vec<String> {
        let body = http_get(&self.host, "/_emulator/stats").map_or_else(String::new, |(_, b)| b);
        let stats: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        stats["strict"]["violations"]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let violations = if self.strict.is_some() && !std::thread::panicking() {
            self.violations()
        } else {
            Vec::new()
        };
        if let Some(mut strict) = self.strict.take() {
            if let Some(stop) = strict.stop.take() {
                let _ = stop.send(());
            }
            if let Some(thread) = strict.thread.take() {
                let _ = thread.join();
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        assert!(
            violations.is_empty(),
            "requests that BigQuery's discovery document refuses:\n{}",
            violations.join("\n")
        );
    }
}
