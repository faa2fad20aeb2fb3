//! sts-job-manager: drive petabyte migrations with Google Cloud Storage
//! Transfer Service one prefix at a time. Decisions are pure functions
//! (`manager::{sync, ramp, stall}`); I/O sits behind two traits
//! (`store::StateStore`, `transfer::TransferService`).

pub mod manager;
pub mod model;
pub mod options;
pub mod store;
pub mod transfer;
