//! Starts bqemulator (PyPI, installed into .venv by tests/run.sh) on free
//! 127.0.0.1 ports for one test or benchmark, and stops it when dropped.
//! Shared by tests/bigquery_store.rs and benches/bigquery_cycle.rs.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Emulator {
    child: Child,
    /// `127.0.0.1:PORT`, the value for BIGQUERY_EMULATOR_HOST.
    pub host: String,
    _log: tempfile::NamedTempFile,
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
    let mut stream = TcpStream::connect(host).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
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
            _log: log,
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
        emulator
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
