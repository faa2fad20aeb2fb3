//! sts-job-manager: drive petabyte migrations with Google Cloud Storage
//! Transfer Service one prefix at a time. Decisions are pure functions
//! (`manager::{sync, ramp, stall}`); I/O sits behind two traits
//! (`store::StateStore`, `transfer::TransferService`).

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
pub mod settings;

pub mod emulator;
pub mod error;
pub mod http;
pub mod logging;
pub mod manager;
pub mod model;
pub mod monitoring;
pub mod options;
pub mod plan;
pub mod prefixes;
#[cfg(feature = "python")]
mod python;
pub mod records;
pub mod runtime;
pub mod storage;
pub mod store;
pub mod transfer;
pub mod verify;
