//! Runs the local engine's operations: a scheduler thread promotes QUEUED
//! operations, claims operations nobody is executing (heartbeat lease), and
//! starts one copy thread per claimed operation.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::Utc;
use rusqlite::{params, Connection, OptionalExtension};

use super::{decode_operation, open_db, Faults, ENGINE_DIR};
use crate::metadata::ObjectMetadata;
use crate::model::{
    Counters, ErrorLogEntry, ErrorSummary, OverwriteWhen, TransferOperation, MAX_ERROR_LOG_ENTRIES,
};
use crate::store::sqlite::timestamp_text;

/// An executor that has not heartbeated for this long is presumed dead.
const LEASE_SECONDS: f64 = 5.0;
const TICK: Duration = Duration::from_millis(100);
/// Older engines wrote partial files as `NAME.sts-tmp-PID` inside the bucket;
/// such names are never objects.
pub(crate) const TEMP_MARKER: &str = ".sts-tmp-";
/// Partial copies live under `ROOT/.sts-engine/tmp/OWNER/`, outside every
/// bucket's object names, and are renamed into place when complete.
const TEMP_DIR: &str = "tmp";

fn now_seconds() -> f64 {
    Utc::now().timestamp_micros() as f64 / 1e6
}

pub(super) fn spawn_scheduler(root: PathBuf, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let owner = format!(
            "{}-{}",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or_default()
        );
        if let Err(e) = schedule(&root, &owner, &stop) {
            tracing::error!("local transfer engine stopped: {e}");
        }
    })
}

/// The temporary directory of one executor.
fn temp_dir(root: &Path, owner: &str) -> PathBuf {
    root.join(ENGINE_DIR).join(TEMP_DIR).join(owner)
}

/// Removes the partial copies of executors whose process is gone (a killed
/// manager): `OWNER` starts with the process id.
fn remove_dead_temp_dirs(root: &Path, owner: &str) {
    let Ok(entries) = std::fs::read_dir(root.join(ENGINE_DIR).join(TEMP_DIR)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.split('-').next().unwrap_or_default();
        let alive = !pid.is_empty() && Path::new("/proc").join(pid).exists();
        if name != owner && !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn schedule(root: &Path, owner: &str, stop: &Arc<AtomicBool>) -> Result<(), String> {
    let conn = open_db(root).map_err(|e| e.to_string())?;
    remove_dead_temp_dirs(root, owner);
    let mut workers: HashMap<String, JoinHandle<()>> = HashMap::new();
    while !stop.load(Ordering::SeqCst) {
        let faults = Faults::load(&root.join(ENGINE_DIR));
        workers.retain(|_, handle| !handle.is_finished());
        // The scheduler keeps the heartbeat of every operation it executes,
        // so a single slow object never lets the lease lapse.
        if let Err(e) = keep_alive(&conn, owner, workers.keys()) {
            tracing::warn!("local transfer engine: {e}");
        }
        if let Err(e) = promote_and_claim(&conn, owner, &faults).map(|claimed| {
            // One execution per operation: ours already running stay as they are.
            let fresh: Vec<String> = claimed
                .into_iter()
                .filter(|n| !workers.contains_key(n))
                .collect();
            for name in fresh {
                let (root, owner, stop) = (root.to_path_buf(), owner.to_string(), stop.clone());
                let thread_name = name.clone();
                workers.insert(
                    name,
                    std::thread::spawn(move || {
                        if let Err(e) = execute(&root, &thread_name, &owner, &stop) {
                            tracing::error!("operation {thread_name}: {e}");
                        }
                    }),
                );
            }
        }) {
            tracing::warn!("local transfer engine: {e}");
        }
        std::thread::sleep(TICK);
    }
    for (_, handle) in workers {
        let _ = handle.join();
    }
    let _ = std::fs::remove_dir_all(temp_dir(root, owner));
    // Hand our operations over at once instead of after the lease runs out.
    conn.execute(
        "UPDATE operations SET owner = NULL WHERE owner = ?1",
        params![owner],
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}

fn keep_alive<'a>(
    conn: &Connection,
    owner: &str,
    names: impl Iterator<Item = &'a String>,
) -> Result<(), rusqlite::Error> {
    let names: Vec<&String> = names.collect();
    if names.is_empty() {
        return Ok(());
    }
    let names = serde_json::to_string(&names).unwrap_or_else(|_| "[]".into());
    conn.execute(
        "UPDATE operations SET heartbeat = ?3
         WHERE owner = ?1 AND name IN (SELECT value FROM json_each(?2))",
        params![owner, names, now_seconds()],
    )?;
    Ok(())
}

fn promote_and_claim(
    conn: &Connection,
    owner: &str,
    faults: &Faults,
) -> Result<Vec<String>, rusqlite::Error> {
    let in_progress: i64 = conn.query_row(
        "SELECT COUNT(*) FROM operations WHERE status = 'IN_PROGRESS'",
        [],
        |r| r.get(0),
    )?;
    let room = (faults.max_in_progress as i64 - in_progress).max(0);
    conn.execute(
        "UPDATE operations SET status = 'IN_PROGRESS' WHERE name IN
           (SELECT name FROM operations WHERE status = 'QUEUED' ORDER BY rowid LIMIT ?1)",
        params![room],
    )?;
    let now = now_seconds();
    let mut claim = conn.prepare(
        "UPDATE operations SET owner = ?1, heartbeat = ?2
         WHERE status = 'IN_PROGRESS' AND (owner IS NULL OR heartbeat IS NULL OR heartbeat < ?3)
         RETURNING name",
    )?;
    let claimed = claim.query_map(params![owner, now, now - LEASE_SECONDS], |r| r.get(0))?;
    claimed.collect()
}

/// One object to copy: its name, size and update time (the file's
/// modification time) at listing time.
struct Object {
    name: String,
    size: u64,
    modified: Option<chrono::DateTime<Utc>>,
}

/// What the engine does with one source object that passed the object
/// conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Copy,
    /// Already in the sink and not overwritten: counted as skipped by sync.
    Skip,
}

/// The object's fate under `overwriteWhen`: a missing object is always
/// copied; one in the sink is overwritten ALWAYS, never NEVER, and when
/// its content differs DIFFERENT (`same` is asked only then).
pub(crate) fn action(in_sink: bool, when: OverwriteWhen, same: impl FnOnce() -> bool) -> Action {
    match (in_sink, when) {
        (false, _) | (true, OverwriteWhen::Always) => Action::Copy,
        (true, OverwriteWhen::Never) => Action::Skip,
        (true, OverwriteWhen::Different | OverwriteWhen::Unspecified) => {
            if same() {
                Action::Skip
            } else {
                Action::Copy
            }
        }
    }
}

/// Every object under `bucket_dir` whose name starts with one of `prefixes`.
fn list_objects(bucket_dir: &Path, prefixes: &[String]) -> io::Result<Vec<Object>> {
    let mut objects = Vec::new();
    let mut pending = vec![bucket_dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                pending.push(path);
                continue;
            }
            let Ok(relative) = path.strip_prefix(bucket_dir) else {
                continue;
            };
            let name = relative
                .to_string_lossy()
                .replace(std::path::MAIN_SEPARATOR, "/");
            if name.contains(TEMP_MARKER) || !prefixes.iter().any(|p| name.starts_with(p.as_str()))
            {
                continue;
            }
            // A dangling link still is an object; its copy will fail.
            let metadata = std::fs::metadata(&path).ok();
            let size = metadata.as_ref().map(|m| m.len()).unwrap_or(0);
            let modified = metadata
                .and_then(|m| m.modified().ok())
                .map(chrono::DateTime::<Utc>::from);
            objects.push(Object {
                name,
                size,
                modified,
            });
        }
    }
    objects.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(objects)
}

/// The source objects a manifest lists (`transferSpec.transferManifest`),
/// each looked up by name, never by listing the bucket: names are relative
/// to the source's `path`, include prefixes still apply, a name listed
/// twice is one object, and a listed object the source lacks is not found
/// (not a failure). A manifest that cannot be read fails the operation:
/// NOT_FOUND when it does not exist (STS's documents do not give the code;
/// see the README), INVALID_ARGUMENT when it is not a manifest. The engine
/// keeps no generations, so a generation column is read and not checked.
fn manifest_objects(
    root: &Path,
    location: &str,
    source_dir: &Path,
    source_path: &str,
    prefixes: &[String],
) -> Result<Vec<Object>, (&'static str, String)> {
    let at = crate::manifest::GcsLocation::parse(location, false).map_err(|e| {
        (
            "INVALID_ARGUMENT",
            format!("transferManifest.location: {e}"),
        )
    })?;
    let file = root.join(&at.bucket).join(&at.path);
    let text = match std::fs::read(&file) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| {
            (
                "INVALID_ARGUMENT",
                format!("the manifest {location} is not UTF-8 text"),
            )
        })?,
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::IsADirectory =>
        {
            return Err((
                "NOT_FOUND",
                format!("the manifest file {location} does not exist"),
            ))
        }
        Err(e) => {
            return Err((
                error_code(&e),
                format!("the manifest file {location} cannot be read: {e}"),
            ))
        }
    };
    let entries = crate::manifest::read_csv(&text)
        .map_err(|e| ("INVALID_ARGUMENT", format!("the manifest {location}: {e}")))?;
    let mut seen = std::collections::HashSet::new();
    let mut objects = Vec::new();
    for entry in entries {
        let name = format!("{source_path}{}", entry.name);
        let unsafe_name = name.contains(TEMP_MARKER)
            || name
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..");
        let included = prefixes.is_empty() || prefixes.iter().any(|p| name.starts_with(p.as_str()));
        if unsafe_name || !included || !seen.insert(name.clone()) {
            continue;
        }
        let Ok(metadata) = std::fs::metadata(source_dir.join(&name)) else {
            continue;
        };
        if !metadata.is_file() {
            continue;
        }
        objects.push(Object {
            modified: metadata.modified().ok().map(chrono::DateTime::<Utc>::from),
            size: metadata.len(),
            name,
        });
    }
    objects.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(objects)
}

fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    if std::fs::metadata(a)?.len() != std::fs::metadata(b)?.len() {
        return Ok(false);
    }
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

fn error_code(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::NotFound => "NOT_FOUND",
        io::ErrorKind::PermissionDenied => "PERMISSION_DENIED",
        _ => "UNKNOWN",
    }
}

/// What the executing thread learns when it looks at the shared record.
enum Control {
    Go,
    Wait,
    Stop,
}

struct Execution<'a> {
    conn: Connection,
    name: &'a str,
    owner: &'a str,
    stop: &'a AtomicBool,
    op: TransferOperation,
    failures: BTreeMap<String, ErrorSummary>,
    last_save: Instant,
}

impl Execution<'_> {
    fn control(&self) -> Result<Control, rusqlite::Error> {
        if self.stop.load(Ordering::SeqCst) {
            return Ok(Control::Stop);
        }
        let row: Option<(String, Option<String>)> = self
            .conn
            .query_row(
                "SELECT status, owner FROM operations WHERE name = ?1",
                params![self.name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(match row {
            Some((_, owner)) if owner.as_deref() != Some(self.owner) => Control::Stop,
            Some((status, _)) if status == "IN_PROGRESS" => Control::Go,
            Some((status, _)) if status == "PAUSED" || status == "SUSPENDING" => Control::Wait,
            _ => Control::Stop,
        })
    }

    /// Saves counters and heartbeat, only while we still own the operation.
    fn save(&mut self, force: bool) -> Result<(), String> {
        if !force && self.last_save.elapsed() < Duration::from_millis(250) {
            return Ok(());
        }
        self.op.error_breakdowns = self.failures.values().cloned().collect();
        let body = serde_json::to_string(&self.op).map_err(|e| e.to_string())?;
        self.conn
            .execute(
                "UPDATE operations SET body = ?3, heartbeat = ?4 WHERE name = ?1 AND owner = ?2",
                params![self.name, self.owner, body, now_seconds()],
            )
            .map_err(|e| e.to_string())?;
        self.last_save = Instant::now();
        Ok(())
    }

    fn heartbeat(&self) -> Result<(), rusqlite::Error> {
        self.conn.execute(
            "UPDATE operations SET heartbeat = ?3 WHERE name = ?1 AND owner = ?2",
            params![self.name, self.owner, now_seconds()],
        )?;
        Ok(())
    }

    /// The transfer log entry of a failed copy, when the operation's
    /// loggingConfig asks for failed COPY actions (as STS writes it).
    fn log_failure(
        &self,
        object: &str,
        code: &str,
        message: &str,
        delay: f64,
    ) -> Result<(), String> {
        if !self
            .op
            .logging_config
            .as_ref()
            .is_some_and(|l| l.logs_failed("COPY"))
        {
            return Ok(());
        }
        let spec = &self.op.transfer_spec;
        let time = timestamp_text(Utc::now());
        let insert_id = format!(
            "{}-{}",
            self.op.name.rsplit('/').next().unwrap_or_default(),
            self.op.counters.objects_from_source_failed
        );
        let entry = crate::transfer::logs::failure_entry(
            &self.op.project_id,
            &self.op.transfer_job_name,
            &self.op.name,
            "COPY",
            (
                spec.source_bucket().unwrap_or_default(),
                spec.sink_bucket().unwrap_or_default(),
            ),
            object,
            (code, message),
            &time,
            &insert_id,
        );
        super::logs::write_entry(
            &self.conn,
            &self.op.project_id,
            &self.op.name,
            delay,
            &entry,
        )
        .map_err(|e| e.to_string())
    }

    /// A failure of the whole operation (a bucket missing, a listing
    /// refused): in errorBreakdowns, but no object failed (as on STS).
    fn record_operation_failure(&mut self, code: &str, url: String, details: String) {
        self.record_failure(code, url, details, 0);
        self.op.counters.objects_from_source_failed -= 1;
    }

    fn record_failure(&mut self, code: &str, url: String, details: String, size: u64) {
        self.note_error(code, url, details);
        self.op.counters.objects_from_source_failed += 1;
        self.op.counters.bytes_from_source_failed += size as i64;
    }

    /// An error in the operation's errorBreakdowns (at most
    /// MAX_ERROR_LOG_ENTRIES samples per code); it fails the operation.
    fn note_error(&mut self, code: &str, url: String, details: String) {
        let summary = self
            .failures
            .entry(code.to_string())
            .or_insert_with(|| ErrorSummary {
                error_code: code.to_string(),
                ..ErrorSummary::default()
            });
        summary.error_count += 1;
        if summary.error_log_entries.len() < MAX_ERROR_LOG_ENTRIES {
            summary.error_log_entries.push(ErrorLogEntry {
                url,
                error_details: vec![details],
            });
        }
    }

    /// Waits until the operation may go on; false when it must stop.
    fn wait_for_go(&mut self, faults: &mut Faults, root: &Path) -> Result<bool, String> {
        loop {
            match self.control().map_err(|e| e.to_string())? {
                Control::Stop => return Ok(false),
                Control::Go if !faults.freeze_counters => return Ok(true),
                Control::Go | Control::Wait => {
                    self.heartbeat().map_err(|e| e.to_string())?;
                    std::thread::sleep(TICK);
                    *faults = Faults::load(&root.join(ENGINE_DIR));
                }
            }
        }
    }
}

/// Copies `source` to `sink` through `temp` (a name no other copy uses,
/// outside the bucket), renamed into place once complete.
fn copy_object(
    source: &Path,
    sink: &Path,
    temp: &Path,
    bytes_per_second: u64,
    progress: &mut dyn FnMut(u64),
) -> io::Result<()> {
    if let Some(dir) = sink.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if let Some(dir) = temp.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let result = (|| {
        let mut input = File::open(source)?;
        let mut output = File::create(temp)?;
        let mut buffer = vec![0u8; 64 * 1024];
        let started = Instant::now();
        let mut copied: u64 = 0;
        loop {
            let n = input.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            output.write_all(&buffer[..n])?;
            copied += n as u64;
            progress(n as u64);
            if bytes_per_second > 0 {
                let due = Duration::from_secs_f64(copied as f64 / bytes_per_second as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
        output.sync_all()?;
        // Rename last, so a reader never sees a half-written object.
        std::fs::rename(temp, sink)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(temp);
    }
    result
}

fn execute(root: &Path, name: &str, owner: &str, stop: &AtomicBool) -> Result<(), String> {
    let conn = open_db(root).map_err(|e| e.to_string())?;
    let (status, end_time, body): (String, Option<String>, String) = conn
        .query_row(
            "SELECT status, end_time, body FROM operations WHERE name = ?1",
            params![name],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(|e| e.to_string())?;
    let mut op = decode_operation(&status, end_time, &body)?;
    // A taken-over operation is counted again from the start; objects already
    // copied are found identical and skipped.
    op.counters = Counters::default();
    op.error_breakdowns.clear();
    let spec = op.transfer_spec.clone();
    let source_dir = root.join(spec.source_bucket().unwrap_or_default());
    let sink_dir = root.join(spec.sink_bucket().unwrap_or_default());
    let overwrite = spec.overwrite_when();
    let conditions = spec.conditions();
    let options = spec.transfer_options.clone().unwrap_or_default();
    let (source_bucket, sink_bucket) = (
        spec.source_bucket().unwrap_or_default(),
        spec.sink_bucket().unwrap_or_default(),
    );
    let mut run = Execution {
        conn,
        name,
        owner,
        stop,
        op,
        failures: BTreeMap::new(),
        last_save: Instant::now(),
    };

    // As on STS, a missing bucket fails the operation; the engine never
    // creates one (a typo must not become a new bucket).
    let mut objects = vec![];
    let missing = [
        ("source", spec.source_bucket(), &source_dir),
        ("sink", spec.sink_bucket(), &sink_dir),
    ]
    .into_iter()
    .filter(|(_, _, dir)| !dir.is_dir())
    .collect::<Vec<_>>();
    for (role, bucket, _) in &missing {
        let bucket = bucket.unwrap_or_default();
        run.record_operation_failure(
            "NOT_FOUND",
            format!("gs://{bucket}/"),
            format!("the {role} bucket '{bucket}' does not exist"),
        );
    }
    // Every source object under the prefixes: what the sink is mirrored
    // against (time conditions never exclude sink objects, and STS refuses
    // them with deleteObjectsUniqueInSink anyway).
    let mut source_names = std::collections::HashSet::new();
    if let (true, Some(location)) = (missing.is_empty(), spec.manifest()) {
        let source_path = spec
            .gcs_data_source
            .as_ref()
            .map(|g| g.path.as_str())
            .unwrap_or_default();
        match manifest_objects(
            root,
            location,
            &source_dir,
            source_path,
            spec.include_prefixes(),
        ) {
            Ok(found) => {
                // A mirror still compares the sink with the whole source.
                source_names = match options.delete_objects_unique_in_sink {
                    true => list_objects(&source_dir, spec.include_prefixes())
                        .map(|all| all.into_iter().map(|o| o.name).collect())
                        .unwrap_or_default(),
                    false => found.iter().map(|o| o.name.clone()).collect(),
                };
                objects = found
                    .into_iter()
                    .filter(|o| conditions.admits(o.modified))
                    .collect();
            }
            Err((code, details)) => {
                run.record_operation_failure(code, location.to_string(), details);
            }
        }
    } else if missing.is_empty() {
        match list_objects(&source_dir, spec.include_prefixes()) {
            Ok(found) => {
                source_names = found.iter().map(|o| o.name.clone()).collect();
                objects = found
                    .into_iter()
                    .filter(|o| conditions.admits(o.modified))
                    .collect();
            }
            Err(e) => {
                let url = format!("gs://{}/", spec.source_bucket().unwrap_or_default());
                run.record_operation_failure(
                    error_code(&e),
                    url,
                    format!("listing the source failed: {e}"),
                );
            }
        }
    }
    run.op.counters.objects_found_from_source = objects.len() as i64;
    run.op.counters.bytes_found_from_source = objects.iter().map(|o| o.size as i64).sum();
    run.save(true)?;

    let mut faults = Faults::load(&root.join(ENGINE_DIR));
    let temp = temp_dir(root, owner).join(name.replace('/', "_"));
    for object in &objects {
        if !run.wait_for_go(&mut faults, root)? {
            return run.save(true);
        }
        let source = source_dir.join(&object.name);
        let sink = sink_dir.join(&object.name);
        let url = format!(
            "gs://{}/{}",
            spec.source_bucket().unwrap_or_default(),
            object.name
        );
        let injected = faults
            .fail_objects_matching
            .as_deref()
            .is_some_and(|p| crate::transfer::glob_match(p, &object.name));
        if injected {
            let code = faults.error_code.clone();
            run.record_failure(&code, url, "injected fault".into(), object.size);
            run.log_failure(
                &object.name,
                &code,
                "injected fault",
                faults.log_delay_seconds,
            )?;
        } else if action(sink.exists(), overwrite, || {
            same_content(&source, &sink).unwrap_or(false)
        }) == Action::Skip
        {
            run.op.counters.objects_from_source_skipped_by_sync += 1;
            run.op.counters.bytes_from_source_skipped_by_sync += object.size as i64;
        } else {
            // Bytes count as copied while they are (as STS's counters move
            // during a large object), so a long copy is not a stall.
            let before = run.op.counters.bytes_copied_to_sink;
            let copied = copy_object(&source, &sink, &temp, faults.bytes_per_second, &mut |n| {
                run.op.counters.bytes_copied_to_sink += n as i64;
                let _ = run.save(false);
            });
            run.op.counters.bytes_copied_to_sink = before;
            match copied {
                Ok(()) => {
                    run.op.counters.objects_copied_to_sink += 1;
                    run.op.counters.bytes_copied_to_sink += object.size as i64;
                    // The copy's metadata, as metadataOptions say (ACLs
                    // are not represented).
                    let kept = super::metadata::read(&run.conn, source_bucket, &object.name)
                        .map(|found| {
                            ObjectMetadata::copied(
                                &found,
                                object.modified,
                                options.metadata_options.as_ref(),
                            )
                        })
                        .and_then(|copy| {
                            super::metadata::save(&run.conn, sink_bucket, &object.name, &copy)
                        });
                    if let Err(e) = kept {
                        run.record_failure(
                            "INTERNAL",
                            url.clone(),
                            format!("keeping the object's metadata failed: {e}"),
                            0,
                        );
                    }
                    if options.delete_objects_from_source_after_transfer {
                        match std::fs::remove_file(&source) {
                            Ok(()) => {
                                forget_metadata(&run.conn, source_bucket, &object.name);
                                run.op.counters.objects_deleted_from_source += 1;
                                run.op.counters.bytes_deleted_from_source += object.size as i64;
                            }
                            Err(e) => run.record_failure(
                                error_code(&e),
                                url,
                                format!("deleting the source object failed: {e}"),
                                0,
                            ),
                        }
                    }
                }
                Err(e) => {
                    run.record_failure(error_code(&e), url, e.to_string(), object.size);
                    run.log_failure(
                        &object.name,
                        error_code(&e),
                        &e.to_string(),
                        faults.log_delay_seconds,
                    )?;
                }
            }
        }
        run.save(false)?;
    }
    if options.delete_objects_unique_in_sink && missing.is_empty() && run.failures.is_empty() {
        // Mirror: what the sink holds under the prefixes and the source
        // does not is deleted (objectsFoundOnlyFromSink, objectsDeletedFromSink).
        let only_in_sink: Vec<Object> = match list_objects(&sink_dir, spec.include_prefixes()) {
            Ok(found) => found
                .into_iter()
                .filter(|o| !source_names.contains(&o.name))
                .collect(),
            Err(e) => {
                let url = format!("gs://{}/", spec.sink_bucket().unwrap_or_default());
                run.record_failure(
                    error_code(&e),
                    url,
                    format!("listing the sink failed: {e}"),
                    0,
                );
                vec![]
            }
        };
        for object in &only_in_sink {
            if !run.wait_for_go(&mut faults, root)? {
                return run.save(true);
            }
            run.op.counters.objects_found_only_from_sink += 1;
            run.op.counters.bytes_found_only_from_sink += object.size as i64;
            match std::fs::remove_file(sink_dir.join(&object.name)) {
                Ok(()) => {
                    forget_metadata(&run.conn, sink_bucket, &object.name);
                    run.op.counters.objects_deleted_from_sink += 1;
                    run.op.counters.bytes_deleted_from_sink += object.size as i64;
                }
                Err(e) => {
                    let url = format!(
                        "gs://{}/{}",
                        spec.sink_bucket().unwrap_or_default(),
                        object.name
                    );
                    run.note_error(
                        error_code(&e),
                        url,
                        format!("deleting the sink object failed: {e}"),
                    );
                    run.op.counters.objects_failed_to_delete_from_sink += 1;
                    run.op.counters.bytes_failed_to_delete_from_sink += object.size as i64;
                }
            }
            run.save(false)?;
        }
    }
    if !run.wait_for_go(&mut faults, root)? {
        return run.save(true);
    }
    run.op.error_breakdowns = run.failures.values().cloned().collect();
    let outcome = if run.failures.is_empty() {
        "SUCCESS"
    } else {
        "FAILED"
    };
    let body = serde_json::to_string(&run.op).map_err(|e| e.to_string())?;
    run.conn
        .execute(
            "UPDATE operations SET status = ?3, end_time = ?4, body = ?5
             WHERE name = ?1 AND owner = ?2 AND status = 'IN_PROGRESS'",
            params![
                name,
                owner,
                outcome,
                timestamp_text(super::faults::service_now(root)),
                body
            ],
        )
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Drops a deleted object's metadata row. The object is gone either way,
/// so a failure here is logged, not made the copy's: the row is stale
/// only until a new object of that name is copied in.
fn forget_metadata(conn: &Connection, bucket: &str, name: &str) {
    if let Err(e) = super::metadata::remove(conn, bucket, name) {
        tracing::warn!(
            bucket,
            object = name,
            "forgetting a deleted object's metadata: {e}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Date, JobStatus, ObjectConditions, OperationStatus, Schedule, TransferJob, TransferOptions,
        TransferSpec,
    };
    use crate::transfer::local::{LocalEngine, Mode};
    use crate::transfer::TransferService;

    #[test]
    fn overwrite_when_decides_for_objects_already_in_the_sink() {
        let never_asked = || -> bool { panic!("content compared needlessly") };
        assert_eq!(
            action(false, OverwriteWhen::Never, never_asked),
            Action::Copy
        );
        assert_eq!(
            action(true, OverwriteWhen::Always, never_asked),
            Action::Copy
        );
        assert_eq!(
            action(true, OverwriteWhen::Never, never_asked),
            Action::Skip
        );
        assert_eq!(
            action(true, OverwriteWhen::Different, || true),
            Action::Skip
        );
        assert_eq!(
            action(true, OverwriteWhen::Different, || false),
            Action::Copy
        );
    }

    fn write(path: &Path, bytes: &[u8], modified: Option<std::time::SystemTime>) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
        if let Some(t) = modified {
            File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
    }

    /// Runs one job of `spec` on an executing engine until its operation ends.
    async fn run(root: &Path, name: &str, spec: TransferSpec) -> TransferOperation {
        let engine = LocalEngine::open(root, Mode::Execute).unwrap();
        let job = TransferJob {
            name: format!("transferJobs/{name}"),
            description: String::new(),
            project_id: "p".into(),
            transfer_spec: spec,
            schedule: Some(Schedule::one_time(Date::today_utc())),
            status: JobStatus::Enabled,
            latest_operation_name: None,
            creation_time: None,
            deletion_time: None,
            logging_config: None,
        };
        let created = engine.create_job(&job).await.unwrap();
        let op_name = created.latest_operation_name.unwrap();
        loop {
            let op = engine.get_operation(&op_name).unwrap();
            if !op.status.is_active() {
                return op;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn spec(conditions: ObjectConditions, options: TransferOptions) -> TransferSpec {
        let mut spec = TransferSpec::for_prefix("src", "dst", "p/", Some(options));
        let include = spec.include_prefixes().to_vec();
        spec.object_conditions = Some(ObjectConditions {
            include_prefixes: include,
            ..conditions
        });
        spec
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_manifest_run_finds_only_the_listed_objects_under_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("dst")).unwrap();
        for name in ["p/a,1", "p/b \"q\"", "p/c", "p/sub/d", "q/outside"] {
            write(&root.join("src").join(name), name.as_bytes(), None);
        }
        let csv = crate::manifest::write_csv(
            [
                "p/a,1",
                "p/b \"q\"",
                "p/sub/d",
                "p/sub/d",
                "p/absent",
                "q/outside",
            ]
            .into_iter(),
        );
        write(&root.join("man/m/x.csv"), csv.as_bytes(), None);
        let manifest = spec(ObjectConditions::default(), TransferOptions::default())
            .with_manifest(Some("gs://man/m/x.csv"));
        let op = run(root, "manifest", manifest).await;
        assert_eq!(op.status, OperationStatus::Success);
        // Listed twice: once; absent: not found; outside the prefix: the
        // object conditions still apply.
        assert_eq!(op.counters.objects_found_from_source, 3);
        assert_eq!(op.counters.objects_copied_to_sink, 3);
        assert!(root.join("dst/p/a,1").is_file());
        assert!(!root.join("dst/p/c").exists());
        assert!(!root.join("dst/q/outside").exists());
        assert_eq!(op.transfer_spec.manifest(), Some("gs://man/m/x.csv"));

        let missing = spec(ObjectConditions::default(), TransferOptions::default())
            .with_manifest(Some("gs://man/m/gone.csv"));
        let op = run(root, "missing", missing).await;
        assert_eq!(op.status, OperationStatus::Failed);
        assert_eq!(op.error_breakdowns[0].error_code, "NOT_FOUND");
        assert_eq!(
            op.error_breakdowns[0].error_log_entries[0].url,
            "gs://man/m/gone.csv"
        );
        assert_eq!(op.counters.objects_found_from_source, 0);

        // A location that is no gs://bucket/object is refused at create.
        let engine = LocalEngine::open(root, Mode::Control).unwrap();
        let job = TransferJob {
            name: "transferJobs/bad-manifest".into(),
            description: String::new(),
            project_id: "p".into(),
            transfer_spec: spec(ObjectConditions::default(), TransferOptions::default())
                .with_manifest(Some("gs://man/folder/")),
            schedule: None,
            status: JobStatus::Enabled,
            latest_operation_name: None,
            creation_time: None,
            deletion_time: None,
            logging_config: None,
        };
        assert!(matches!(
            engine.create_job(&job).await,
            Err(crate::transfer::TransferError::InvalidArgument(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn last_modified_since_leaves_older_objects_out_of_the_operation() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let old = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
        write(&root.join("src/p/old"), b"old", Some(old));
        write(&root.join("src/p/new"), b"new!", None);
        std::fs::create_dir_all(root.join("dst")).unwrap();
        let since = chrono::DateTime::<Utc>::from(old) + chrono::Duration::days(1);
        let op = run(
            root,
            "since",
            spec(
                ObjectConditions {
                    last_modified_since: Some(since),
                    ..Default::default()
                },
                TransferOptions::default(),
            ),
        )
        .await;
        assert_eq!(op.status, OperationStatus::Success);
        assert_eq!(op.counters.objects_found_from_source, 1);
        assert_eq!(op.counters.objects_copied_to_sink, 1);
        assert_eq!(op.counters.bytes_copied_to_sink, 4);
        assert!(root.join("dst/p/new").exists());
        assert!(!root.join("dst/p/old").exists());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn never_keeps_the_sink_and_always_rewrites_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(&root.join("src/p/a"), b"source", None);
        write(&root.join("dst/p/a"), b"sink!!", None);
        let with = |when| TransferOptions {
            overwrite_when: Some(when),
            // overwriteWhen decides; this only counts when it is not set.
            overwrite_objects_already_existing_in_sink: true,
            ..Default::default()
        };
        let op = run(
            root,
            "never",
            spec(Default::default(), with(OverwriteWhen::Never)),
        )
        .await;
        assert_eq!(op.counters.objects_from_source_skipped_by_sync, 1);
        assert_eq!(std::fs::read(root.join("dst/p/a")).unwrap(), b"sink!!");
        let op = run(
            root,
            "different",
            spec(Default::default(), with(OverwriteWhen::Different)),
        )
        .await;
        assert_eq!(op.counters.objects_copied_to_sink, 1);
        assert_eq!(std::fs::read(root.join("dst/p/a")).unwrap(), b"source");
        let op = run(
            root,
            "different-again",
            spec(Default::default(), with(OverwriteWhen::Different)),
        )
        .await;
        assert_eq!(op.counters.objects_from_source_skipped_by_sync, 1);
        let op = run(
            root,
            "always",
            spec(Default::default(), with(OverwriteWhen::Always)),
        )
        .await;
        assert_eq!(op.counters.objects_copied_to_sink, 1);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn mirror_deletes_what_only_the_sink_holds_under_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(&root.join("src/p/a"), b"a", None);
        write(&root.join("dst/p/a"), b"a", None);
        write(&root.join("dst/p/gone"), b"gone", None);
        write(&root.join("dst/other/kept"), b"kept", None);
        let op = run(
            root,
            "mirror",
            spec(
                Default::default(),
                TransferOptions {
                    delete_objects_unique_in_sink: true,
                    ..Default::default()
                },
            ),
        )
        .await;
        assert_eq!(op.status, OperationStatus::Success);
        assert_eq!(op.counters.objects_found_only_from_sink, 1);
        assert_eq!(op.counters.objects_deleted_from_sink, 1);
        assert_eq!(op.counters.bytes_deleted_from_sink, 4);
        assert!(!root.join("dst/p/gone").exists());
        assert!(root.join("dst/other/kept").exists(), "outside the prefix");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_move_deletes_each_source_object_once_copied() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(&root.join("src/p/a"), b"abc", None);
        std::fs::create_dir_all(root.join("dst")).unwrap();
        let op = run(
            root,
            "move",
            spec(
                Default::default(),
                TransferOptions {
                    delete_objects_from_source_after_transfer: true,
                    ..Default::default()
                },
            ),
        )
        .await;
        assert_eq!(op.counters.objects_deleted_from_source, 1);
        assert!(!root.join("src/p/a").exists());
        assert_eq!(std::fs::read(root.join("dst/p/a")).unwrap(), b"abc");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn metadata_options_decide_what_the_copy_keeps() {
        use crate::metadata::{ObjectMetadata, Preserve};
        use crate::storage::local::LocalBuckets;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let created = chrono::DateTime::from_timestamp(1_500_000_000, 0).unwrap();
        let kept = ObjectMetadata {
            storage_class: Some("COLDLINE".into()),
            kms_key_name: Some("projects/p/locations/us/keyRings/r/cryptoKeys/k".into()),
            temporary_hold: Some(true),
            custom_time: None,
            time_created: Some(created),
        };
        for name in ["p/a", "p/b"] {
            write(&root.join("src").join(name), b"abc", None);
        }
        std::fs::create_dir_all(root.join("dst")).unwrap();
        let conn = open_db(root).unwrap();
        for name in ["p/a", "p/b"] {
            super::super::metadata::save(&conn, "src", name, &kept).unwrap();
        }
        let preserve = Preserve::parse("storage-class,kms-key,temporary-hold,time-created")
            .unwrap()
            .metadata_options();
        let op = run(
            root,
            "preserve",
            spec(
                Default::default(),
                TransferOptions {
                    metadata_options: preserve,
                    delete_objects_from_source_after_transfer: true,
                    ..Default::default()
                },
            ),
        )
        .await;
        assert_eq!(op.counters.objects_copied_to_sink, 2);
        assert_eq!(op.counters.objects_deleted_from_source, 2);
        let copy = LocalBuckets::open(root)
            .unwrap()
            .object("dst", "p/a")
            .unwrap()
            .unwrap();
        assert_eq!(copy.metadata.storage_class.as_deref(), Some("COLDLINE"));
        assert_eq!(copy.metadata.kms_key_name, kept.kms_key_name);
        assert_eq!(copy.metadata.temporary_hold, Some(true));
        assert_eq!(copy.metadata.custom_time, Some(created));
        // Moved: the source's rows went with its objects.
        assert_eq!(
            super::super::metadata::read(&conn, "src", "p/a").unwrap(),
            ObjectMetadata::default()
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_mirror_with_a_time_condition_is_refused_as_sts_refuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::create_dir_all(root.join("dst")).unwrap();
        let engine = LocalEngine::open(root, Mode::Control).unwrap();
        let refused = [
            spec(
                ObjectConditions {
                    last_modified_since: Some(Utc::now()),
                    ..Default::default()
                },
                TransferOptions {
                    delete_objects_unique_in_sink: true,
                    ..Default::default()
                },
            ),
            spec(
                Default::default(),
                TransferOptions {
                    delete_objects_unique_in_sink: true,
                    delete_objects_from_source_after_transfer: true,
                    ..Default::default()
                },
            ),
        ];
        for (i, spec) in refused.into_iter().enumerate() {
            let job = TransferJob {
                name: format!("transferJobs/refused-{i}"),
                description: String::new(),
                project_id: "p".into(),
                transfer_spec: spec,
                schedule: None,
                status: JobStatus::Enabled,
                latest_operation_name: None,
                creation_time: None,
                deletion_time: None,
                logging_config: None,
            };
            let error = engine.create_job(&job).await.unwrap_err();
            assert!(
                matches!(error, crate::transfer::TransferError::InvalidArgument(_)),
                "{error}"
            );
        }
    }
}
