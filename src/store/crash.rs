//! The crash switch (README, "Crash points"): with
//! `STS_JOB_MANAGER_CRASH_AT=N` the process aborts, as `kill -9` would,
//! right before the N-th statement of a state write: on SQLite every
//! statement from `BEGIN` to `COMMIT` and every write outside a
//! transaction, on BigQuery every write request. Tests walk N from 1 up to
//! prove that a crash between any two statements loses and doubles
//! nothing; unset, it costs one load of a static per statement.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

/// The variable that arms it.
pub const CRASH_AT: &str = "STS_JOB_MANAGER_CRASH_AT";

static POINTS: AtomicU64 = AtomicU64::new(0);

fn target() -> Option<u64> {
    static TARGET: OnceLock<Option<u64>> = OnceLock::new();
    *TARGET.get_or_init(|| std::env::var(CRASH_AT).ok()?.trim().parse().ok())
}

/// Whether the switch is armed (the SQLite store then traces statements).
pub fn armed() -> bool {
    target().is_some()
}

/// A write statement is about to run: abort if it is the one asked for.
pub fn point(what: &str) {
    if let Some(n) = target() {
        if POINTS.fetch_add(1, Ordering::SeqCst) + 1 == n {
            eprintln!("{CRASH_AT}={n}: aborting before {what}");
            std::process::abort();
        }
    }
}

/// SQLite's statement trace (installed when armed): the statements that
/// make up state writes are crash points.
pub fn on_sqlite_statement(sql: &str) {
    static IN_TRANSACTION: AtomicBool = AtomicBool::new(false);
    let head = first_word(sql);
    match head.as_str() {
        "BEGIN" => {
            point(sql);
            IN_TRANSACTION.store(true, Ordering::SeqCst);
        }
        "COMMIT" | "END" => {
            point(sql);
            IN_TRANSACTION.store(false, Ordering::SeqCst);
        }
        "ROLLBACK" => IN_TRANSACTION.store(false, Ordering::SeqCst),
        "INSERT" | "UPDATE" | "DELETE" | "REPLACE" => point(sql),
        _ if IN_TRANSACTION.load(Ordering::SeqCst) => point(sql),
        _ => {}
    }
}

/// A BigQuery request about to be sent: a write (or a script) is a crash
/// point.
pub fn on_bigquery_statement(sql: &str) {
    let head = first_word(sql);
    if matches!(
        head.as_str(),
        "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "BEGIN" | "CREATE" | "DECLARE"
    ) {
        point(sql);
    }
}

/// A statement's first word, upper case (its kind).
fn first_word(sql: &str) -> String {
    sql.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase()
}
