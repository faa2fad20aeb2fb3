//! sts-job-manager: drive petabyte migrations with Google Cloud Storage
//! Transfer Service one prefix at a time.
//!
//! The map, top to bottom (arrows point down only):
//! - the tool layer: [`commands`] (one file per tool and the registry: where
//!   arguments become [`options`], and an error an exit code), [`options`]
//!   (every option, config files, checks), [`settings`] (options become each
//!   layer's settings once, and the backends they name are opened); the
//!   PyO3 bindings (`python`) sit beside it;
//! - [`manager`]: the cycle. Its rules are pure functions over plain data:
//!   `sync` (operations -> changes), `round` (the start round), `stall`,
//!   `failures`, `refusals`, `passes` (a cutover's next pass); the rest executes them (`cycle`, `listing`,
//!   `starts`, `jobs`, `summary`, `run`);
//! - [`plan`] and [`verify`]: the pure planner and comparison; [`analysis`]:
//!   status, timeline, failures and progress over the state;
//! - the edges, behind traits: [`store`] (`JobTable`, `HistoryReads`,
//!   `LeaseStore`, `SideTables`: SQLite and BigQuery), [`transfer`]
//!   (`TransferService`: STS over REST, or the local engine), [`storage`]
//!   (`ObjectLister`: Cloud Storage, local directories, inventory tables),
//!   [`monitoring`] (the heartbeat), [`http`] (one retry policy for every
//!   client), [`auth`] (credentials);
//! - plain data: [`model`], [`metadata`] (what `--preserve` keeps), [`records`],
//!   [`prefixes`], [`manifest`] (transfer manifests' CSV), [`format`] (how
//!   figures read in text); [`error`] gathers each
//!   layer's errors; [`logging`] and [`runtime`] serve everyone;
//! - [`emulator`]: the stand-ins for STS, Cloud Storage, Monitoring, Service
//!   Usage and Resource Manager, strict against Google's discovery
//!   documents. It never imports the tool layer.

/// `print!` that never panics: a closed stdout (`sts-plan --help | head`)
/// loses the rest of the output, as a shell tool's would.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `println!` that never panics (see [`out!`]).
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

pub mod analysis;
pub mod auth;
pub mod commands;
pub mod emulator;
pub mod error;
pub mod figures;
pub mod format;
pub mod http;
pub mod logging;
pub mod manager;
pub mod manifest;
pub mod metadata;
pub mod model;
pub mod monitoring;
pub mod options;
pub mod plan;
pub mod prefixes;
#[cfg(feature = "python")]
mod python;
pub mod records;
pub mod runtime;
pub mod settings;
pub mod storage;
pub mod store;
pub mod transfer;
pub mod verify;
