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
    /// Another manager holds the job table.
    #[error("{0}")]
    Busy(String),
    /// A backend that this build does not provide yet.
    #[error("{0}")]
    Unsupported(String),
    /// The same permanent failure stopped the migration (what to fix).
    #[error("{0}")]
    Halted(String),
    /// The migration finished, but prefixes ended in `error` (exit code 4).
    #[error("{0}")]
    FinishedWithErrors(String),
}

impl From<ManagerError> for Error {
    fn from(e: ManagerError) -> Self {
        match e {
            ManagerError::Store(e) => Error::Store(e),
            ManagerError::Transfer(e) => Error::Transfer(e),
            held @ ManagerError::LeaseHeld { .. } => Error::Busy(held.to_string()),
            halted @ ManagerError::Halted(_) => Error::Halted(halted.to_string()),
            ManagerError::Preflight(why) => Error::Input(why),
            finished @ ManagerError::FinishedWithErrors { .. } => {
                Error::FinishedWithErrors(finished.to_string())
            }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
