//! The crate's top-level error: one variant per layer, each with a message a
//! user can act on. The Python layer maps variants to exception classes.

use crate::manager::ManagerError;
use crate::options::OptionsError;
use crate::store::StoreError;
use crate::transfer::TransferError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Options(#[from] OptionsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Transfer(#[from] TransferError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// A prefix file or other user input that cannot be used as it is.
    #[error("{0}")]
    Input(String),
    /// One entry of a prefix list (a file or a list handed over in memory)
    /// that cannot be used; `entry` is its 0-based index.
    #[error("{origin}, entry {entry}: {problem}")]
    BadEntry {
        origin: String,
        entry: usize,
        problem: String,
    },
    /// Another manager holds the job table.
    #[error("{message}")]
    Busy {
        message: String,
        holder: String,
        table: String,
        /// RFC 3339.
        until: String,
    },
    /// A backend that this build does not provide yet.
    #[error("{0}")]
    Unsupported(String),
    /// The same permanent failure stopped the migration (what to fix).
    #[error("{0}")]
    Halted(String),
    /// The migration finished, but prefixes ended in `error` (exit code 4).
    #[error("{0}")]
    FinishedWithErrors(String),
    /// SIGINT or SIGTERM arrived before the tool finished (exit code 130).
    #[error(
        "stopped by a signal before finishing; every write made is whole (one transaction \
         each), run the tool again to finish"
    )]
    Interrupted,
    /// The tool could not do its work (a file it must write, a port).
    #[error("{0}")]
    Failed(String),
}

impl Error {
    /// The process exit code this error ends a tool with: 2 for what the
    /// user typed or handed over (options, input, a name), 3 when another
    /// manager holds the job table, 4 when the migration finished with
    /// prefixes in error, 130 after a signal, 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        use crate::store::StoreError;
        match self {
            Error::Interrupted => 130,
            Error::Busy { .. } => 3,
            Error::FinishedWithErrors(_) => 4,
            Error::Options(_)
            | Error::Input(_)
            | Error::BadEntry { .. }
            | Error::Unsupported(_)
            | Error::Store(
                StoreError::InvalidIdentifier(_)
                | StoreError::InvalidProject(_)
                | StoreError::Missing(_)
                | StoreError::NoProject,
            ) => 2,
            _ => 1,
        }
    }
}

impl From<ManagerError> for Error {
    fn from(e: ManagerError) -> Self {
        match e {
            ManagerError::Store(e) => Error::Store(e),
            ManagerError::Transfer(e) => Error::Transfer(e),
            held @ ManagerError::LeaseHeld { .. } => {
                let message = held.to_string();
                let ManagerError::LeaseHeld {
                    holder,
                    table,
                    until,
                } = held
                else {
                    unreachable!("matched above")
                };
                Error::Busy {
                    message,
                    holder,
                    table,
                    until,
                }
            }
            halted @ ManagerError::Halted(_) => Error::Halted(halted.to_string()),
            ManagerError::Preflight(why) => Error::Input(why),
            finished @ ManagerError::FinishedWithErrors { .. } => {
                Error::FinishedWithErrors(finished.to_string())
            }
        }
    }
}

/// A value carried by an error for callers that act on it (Python raises
/// it as an attribute of the exception: `LeaseHeldError.holder`, ...).
#[derive(Debug, Clone, PartialEq)]
pub enum Detail {
    Text(String),
    Int(i64),
    None,
}

impl From<&str> for Detail {
    fn from(s: &str) -> Self {
        Detail::Text(s.to_string())
    }
}

fn opt_text(s: Option<&str>) -> Detail {
    s.map_or(Detail::None, Detail::from)
}

impl Error {
    /// The error's data as (attribute, value) pairs; every error of one
    /// kind lists the same attributes (None where a value does not apply).
    pub fn details(&self) -> Vec<(&'static str, Detail)> {
        match self {
            Error::Busy {
                holder,
                table,
                until,
                ..
            } => vec![
                ("holder", holder.as_str().into()),
                ("table", table.as_str().into()),
                ("until", until.as_str().into()),
            ],
            Error::BadEntry { entry, .. } => {
                vec![(
                    "entry",
                    Detail::Int(i64::try_from(*entry).unwrap_or(i64::MAX)),
                )]
            }
            Error::Input(_) => vec![("entry", Detail::None)],
            Error::Options(e) => vec![("option", opt_text(e.option()))],
            Error::Store(e) => vec![(
                "http_status",
                e.http_status()
                    .map_or(Detail::None, |c| Detail::Int(c.into())),
            )],
            Error::Transfer(e) => {
                let (http, status) = e.http_status();
                vec![
                    (
                        "http_status",
                        http.map_or(Detail::None, |c| Detail::Int(c.into())),
                    ),
                    ("status", opt_text(status)),
                ]
            }
            Error::Unsupported(_)
            | Error::Halted(_)
            | Error::FinishedWithErrors(_)
            | Error::Interrupted
            | Error::Failed(_)
            | Error::Storage(_) => vec![],
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lease_keeps_its_holder_and_expiry_as_data() {
        let error: Error = ManagerError::LeaseHeld {
            holder: "host:1:2".into(),
            table: "sts_job".into(),
            until: "2026-01-01T00:00:00+00:00".into(),
        }
        .into();
        assert!(error.to_string().contains("host:1:2"));
        assert_eq!(
            error.details(),
            vec![
                ("holder", Detail::from("host:1:2")),
                ("table", Detail::from("sts_job")),
                ("until", Detail::from("2026-01-01T00:00:00+00:00")),
            ]
        );
    }

    #[test]
    fn option_errors_name_the_option() {
        let error: Error = OptionsError::InvalidValue {
            key: "dataset".into(),
            problem: "empty".into(),
        }
        .into();
        assert_eq!(error.details(), vec![("option", Detail::from("dataset"))]);
    }
}
