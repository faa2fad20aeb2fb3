//! Where options become settings, once: what the state store, the transfer
//! client, the lister and the manager each need, and the backends they
//! name, opened. It belongs to the tool layer (with `options` and
//! `commands`); nothing below it reads `Options`.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::manager::ManagerSettings;
use crate::options::{Options, StateLocation, TransferLocation};
use crate::store::{bigquery::BigQueryStore, sqlite::SqliteStore, StateStore};
use crate::transfer::local::{LocalEngine, Mode};
use crate::transfer::rest::StsClient;
use crate::transfer::TransferService;

/// The project the embedded engine files its jobs under when none is given.
pub const LOCAL_PROJECT: &str = "local-project";

/// The state store the options name. A SQLite file must exist already (a
/// wrong path creates nothing); [`create_store`] makes it.
pub fn open_store(options: &Options) -> Result<Arc<dyn StateStore>> {
    store(options, false)
}

/// [`open_store`] for the tools that create the tables (sts-prepare-tables,
/// sts-plan --load): a SQLite file is made if it does not exist.
pub fn create_store(options: &Options) -> Result<Arc<dyn StateStore>> {
    store(options, true)
}

fn store(options: &Options, create: bool) -> Result<Arc<dyn StateStore>> {
    match options.state_location()? {
        StateLocation::Sqlite(path) => {
            let open = if create {
                SqliteStore::open
            } else {
                SqliteStore::open_existing
            };
            Ok(Arc::new(open(
                &path,
                &options.job_table,
                &options.job_history_table,
            )?))
        }
        StateLocation::BigQuery => Ok(Arc::new(BigQueryStore::open(&bigquery_settings(options))?)),
    }
}

/// The BigQuery store's settings: the project from `--project`, else
/// GOOGLE_CLOUD_PROJECT, else the credentials file; the emulator from
/// BIGQUERY_EMULATOR_HOST.
pub fn bigquery_settings(options: &Options) -> crate::store::bigquery::Settings {
    crate::store::bigquery::Settings {
        project: options
            .project_id()
            .or_else(crate::auth::project_from_credentials),
        dataset: options.dataset.clone(),
        location: options.dataset_location.clone(),
        job_table: options.job_table.clone(),
        history_table: options.job_history_table.clone(),
        emulator_host: std::env::var(crate::store::bigquery::EMULATOR_ENV)
            .ok()
            .filter(|h| !h.is_empty()),
    }
}

/// What names one migration: its job table where it is kept (the SQLite
/// file's absolute path, or BigQuery's project and dataset). Pool jobs hang
/// on it, so two migrations between the same buckets use disjoint pools.
pub fn migration_key(options: &Options) -> String {
    match options.state_location() {
        Ok(StateLocation::Sqlite(path)) => format!(
            "sqlite:{}:{}",
            // Absolute whether the file exists yet or not (sts-doctor may
            // look before sts-prepare-tables makes it).
            std::path::absolute(&path).unwrap_or(path).display(),
            options.job_table
        ),
        _ => format!(
            "bigquery:{}:{}:{}",
            options.project_id().unwrap_or_default(),
            options.dataset,
            options.job_table
        ),
    }
}

impl From<&Options> for ManagerSettings {
    fn from(options: &Options) -> Self {
        ManagerSettings {
            source_bucket: options.source_bucket.clone(),
            destination_bucket: options.destination_bucket.clone(),
            job_table: options.job_table.clone(),
            migration: migration_key(options),
            job_interval: options.job_interval,
            metrics_interval: options.metrics_interval,
            sleep_timeout: options.sleep_timeout,
            reconcile_interval: options.reconcile_interval,
            stall_after: options.stall_after,
            lease_seconds: options.lease_seconds,
            start_timeout: options.start_timeout,
            max_concurrent_jobs: options.max_concurrent_jobs,
            max_retries: options.max_retries,
            no_retry_on_job_error: options.no_retry_on_job_error,
            allow_new_jobs_when_stalled: options.allow_new_jobs_when_stalled,
            overwrite_dest_objects: options.overwrite_dest_objects,
            publish_heartbeat: options.publish_heartbeat,
            exit_when_done: options.exit_when_done,
            no_job_reuse: options.no_job_reuse,
            object_logs: !options.no_object_logs,
            // Checked when the options were read (`Options::validate_for`).
            preserve: options.preserve_fields().unwrap_or_default(),
            move_objects: options.r#move,
        }
    }
}

impl From<Options> for ManagerSettings {
    fn from(options: Options) -> Self {
        ManagerSettings::from(&options)
    }
}

/// What reads buckets for plan and verify: the local engine's directories,
/// or the Cloud Storage JSON API (STORAGE_EMULATOR_HOST or Google).
pub fn open_lister(options: &Options) -> Result<Arc<dyn crate::storage::ObjectLister>> {
    match options.transfer_location()? {
        TransferLocation::Local(root) => {
            Ok(Arc::new(crate::storage::local::LocalBuckets::open(&root)?))
        }
        TransferLocation::Sts => Ok(Arc::new(crate::storage::gcs::GcsClient::from_environment()?)),
    }
}

pub fn open_transfer(options: &Options, mode: Mode) -> Result<Arc<dyn TransferService>> {
    match options.transfer_location()? {
        TransferLocation::Local(root) => Ok(Arc::new(LocalEngine::open(&root, mode)?)),
        TransferLocation::Sts => Ok(Arc::new(StsClient::from_environment()?)),
    }
}

/// Where failed objects are read: the local engine's own transfer logs, or
/// Cloud Logging (LOGGING_EMULATOR_HOST or Google).
pub fn open_transfer_logs(
    options: &Options,
) -> Result<Arc<dyn crate::transfer::logs::TransferLogs>> {
    match options.transfer_location()? {
        TransferLocation::Local(root) => Ok(Arc::new(LocalEngine::open(&root, Mode::Control)?)),
        TransferLocation::Sts => Ok(Arc::new(
            crate::transfer::logs::CloudLogging::from_environment().map_err(Error::Input)?,
        )),
    }
}

/// `--project`, else GOOGLE_CLOUD_PROJECT, else the credentials' project;
/// the local engine needs no real one.
pub fn project_id(options: &Options) -> Result<String> {
    if let Some(project) = options
        .project_id()
        .or_else(crate::auth::project_from_credentials)
    {
        return Ok(project);
    }
    match options.transfer_location()? {
        TransferLocation::Local(_) => Ok(LOCAL_PROJECT.into()),
        TransferLocation::Sts => Err(Error::Input(
            "no project: pass --project or set GOOGLE_CLOUD_PROJECT".into(),
        )),
    }
}

/// The manager on the backends the options name, with the heartbeat sink
/// when `--publish-heartbeat` is on. Fails at once on missing tables.
pub async fn open_manager(options: Options) -> Result<crate::manager::Manager> {
    let store = open_store(&options)?;
    let transfer = open_transfer(&options, Mode::Execute)?;
    let project = project_id(&options)?;
    // The tables exist (one aggregate, whatever the table holds).
    store.count_by_status().await?;
    // Credentials and reachability are checked once, up front: a manager that
    // cannot authenticate exits with the reason instead of failing every cycle.
    // One cheap call: googleServiceAccounts.get, whose answer the manager
    // also uses to say which account needs access when a bucket refuses it.
    let service_account = transfer
        .service_account(&project)
        .await
        .map_err(|e| match e {
            crate::transfer::TransferError::PermissionDenied(m) => {
                crate::transfer::TransferError::PermissionDenied(format!(
                    "{m} (reading project {project}'s Storage Transfer service account: enable \
                     storagetransfer.googleapis.com and grant the caller roles/storagetransfer.user)"
                ))
            }
            crate::transfer::TransferError::NotFound(m) => {
                crate::transfer::TransferError::NotFound(format!(
                    "{m} (project {project}: check --project, and that the Storage Transfer API \
                     is enabled in it)"
                ))
            }
            other => other,
        })?;
    let heartbeat_project = options
        .stackdriver_project
        .clone()
        .unwrap_or_else(|| project.clone());
    let publish = options.publish_heartbeat;
    let mut manager = crate::manager::Manager::new(store, transfer, &options, project)
        .with_service_account(service_account);
    if !options.no_object_logs {
        manager = manager.with_transfer_logs(open_transfer_logs(&options)?);
    }
    if publish {
        let sink = crate::monitoring::CloudMonitoring::from_environment(heartbeat_project)
            .map_err(Error::Input)?;
        manager = manager.with_heartbeat(Arc::new(sink));
    }
    Ok(manager)
}
