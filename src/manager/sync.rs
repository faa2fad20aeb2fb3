//! SPEC 5: from the job table and the listed operations, decide what changes.
//! Pure: no I/O, so every rule is unit-tested here.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::model::{
    Counters, GcsData, HistoryRow, ObjectConditions, PrefixJob, Status, TransferOperation,
    TransferSpec,
};

pub use crate::model::{ChangeSet, JobUpdate};

/// An operation whose status this build does not know (SPEC 3: kept, logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownStatus {
    pub prefix: String,
    pub operation: String,
    pub status: String,
}

/// The latest operation of each prefix, boxed: a map of a million entries
/// holds pointers, not a million inline operations with the table's slack.
pub type LatestOps = HashMap<String, Box<TransferOperation>>;

/// What a sync decided for one row: its status now, whether its job table
/// row changes (status or operation name), and whether a history row records
/// its latest operation. Sixteen bytes, so a million changes cost little
/// until [`changes_of`] makes the store's rows, a chunk at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Index into the rows the sync was given.
    pub row: usize,
    pub status: Status,
    pub update: bool,
    pub record: bool,
}

#[derive(Debug, Default)]
pub struct SyncOutcome {
    /// In row order, so in prefix order.
    pub decisions: Vec<Decision>,
    /// The latest operation of every prefix of the rows that has one.
    pub latest: LatestOps,
    pub unknown: Vec<UnknownStatus>,
}

/// Is the operation ending at `end` and starting at `start` later than the
/// one at `current`? Compare end times; when either has none, compare start
/// times (SPEC 5.2). Ties go to the larger name so the choice does not
/// depend on listing order.
fn is_later<N: Ord>(
    (end, start, name): (Option<DateTime<Utc>>, Option<DateTime<Utc>>, N),
    (current_end, current_start, current_name): (Option<DateTime<Utc>>, Option<DateTime<Utc>>, N),
) -> bool {
    let by_time = match (end, current_end) {
        (Some(a), Some(b)) => a.cmp(&b),
        _ => start.cmp(&current_start),
    };
    by_time.then_with(|| name.cmp(&current_name)).is_gt()
}

fn order_of(op: &TransferOperation) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>, &str) {
    (op.end_time, op.start_time, op.name.as_str())
}

/// What progress needs of the latest operation of a prefix the sync does
/// not decide on: its order and counters. Keys and the tie-break name are
/// hashed, so a million finished prefixes cost about 100 bytes each.
#[derive(Debug)]
struct Brief {
    end: Option<DateTime<Utc>>,
    start: Option<DateTime<Utc>>,
    name: u64,
    counters: Counters,
}

/// The latest [`Brief`] per prefix hash: the briefs in one vector, the map
/// holding only their index (16 bytes a bucket, not a whole brief with the
/// table's slack: 1,000,000 finished prefixes in about 130 MB, not 220).
#[derive(Debug, Default)]
struct Others {
    index: HashMap<u64, u32>,
    briefs: Vec<Brief>,
}

impl Others {
    fn offer(&mut self, prefix: u64, brief: Brief) {
        match self
            .index
            .get(&prefix)
            .and_then(|&i| self.briefs.get_mut(i as usize))
        {
            Some(current) => {
                if is_later(
                    (brief.end, brief.start, brief.name),
                    (current.end, current.start, current.name),
                ) {
                    *current = brief;
                }
            }
            None => {
                // Past u32::MAX prefixes the index would wrap: stop counting.
                if let Ok(i) = u32::try_from(self.briefs.len()) {
                    self.index.insert(prefix, i);
                    self.briefs.push(brief);
                }
            }
        }
    }
}

fn hash_of(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// The latest operation per include prefix among this migration's
/// operations (matching buckets, job not deleted), folded one listed page
/// at a time. Operations of the tracked prefixes (the rows a sync decides
/// on) are kept whole; with [`Latest::counting_others`], every other prefix
/// keeps only its latest operation's counters (progress of finished
/// prefixes). Memory follows the tracked rows, not the listing: a full
/// reconcile over months of operations holds one operation per unfinished
/// prefix.
pub struct Latest<'a> {
    source: &'a str,
    destination: &'a str,
    deleted: &'a HashSet<String>,
    tracked: HashSet<&'a str>,
    /// The operations and jobs rows name: followed to their end whatever
    /// happened to their job since (deleted by someone else, say).
    followed: HashSet<&'a str>,
    ops: LatestOps,
    others: Option<Others>,
}

impl<'a> Latest<'a> {
    pub fn new(
        rows: &'a [PrefixJob],
        deleted: &'a HashSet<String>,
        source: &'a str,
        destination: &'a str,
    ) -> Self {
        Latest {
            source,
            destination,
            deleted,
            tracked: rows.iter().map(|r| r.prefix.as_str()).collect(),
            followed: rows.iter().filter_map(|r| r.job_name.as_deref()).collect(),
            ops: HashMap::with_capacity(rows.len()),
            others: None,
        }
    }

    /// Also keep the counters of the latest operation of untracked prefixes.
    pub fn counting_others(mut self) -> Self {
        self.others = Some(Others::default());
        self
    }

    pub fn add(&mut self, mut op: TransferOperation) {
        // Operations of deleted jobs are ignored, except the one a row
        // follows: its prefix would otherwise stay `running` for good.
        if op.transfer_spec.source_bucket() != Some(self.source)
            || op.transfer_spec.sink_bucket() != Some(self.destination)
            || (self.deleted.contains(&op.transfer_job_name)
                && !self.followed.contains(op.name.as_str())
                && !self.followed.contains(op.transfer_job_name.as_str()))
        {
            return;
        }
        let prefixes = op.transfer_spec.include_prefixes();
        if let Some(others) = &mut self.others {
            for prefix in prefixes
                .iter()
                .filter(|p| !self.tracked.contains(p.as_str()))
            {
                let brief = Brief {
                    end: op.end_time,
                    start: op.start_time,
                    name: hash_of(&op.name),
                    counters: op.counters.clone(),
                };
                others.offer(hash_of(prefix), brief);
            }
        }
        // The common case, one prefix: no list of prefixes to keep.
        if let [prefix] = prefixes {
            if !self.tracked.contains(prefix.as_str())
                || self
                    .ops
                    .get(prefix.as_str())
                    .is_some_and(|current| !is_later(order_of(&op), order_of(current)))
            {
                return;
            }
            let prefix = prefix.clone();
            if self.is_shared_spec(&op.transfer_spec, &prefix) {
                // Kept without it; `restored` puts it back.
                op.transfer_spec = TransferSpec::default();
            }
            self.ops.insert(prefix, Box::new(op));
            return;
        }
        let keep: Vec<String> = prefixes
            .iter()
            .filter(|p| self.tracked.contains(p.as_str()))
            .filter(|p| {
                self.ops
                    .get(p.as_str())
                    .is_none_or(|current| is_later(order_of(&op), order_of(current)))
            })
            .cloned()
            .collect();
        // Another tool's job may name several prefixes: each tracked one
        // keeps its own copy, spec and all.
        let mut keep = keep;
        if let Some(last) = keep.pop() {
            for prefix in keep {
                self.ops.insert(prefix, Box::new(op.clone()));
            }
            self.ops.insert(last, Box::new(op));
        }
    }

    /// Is `spec` the one every operation this manager starts has for
    /// `prefix` (see [`shared_spec`])? Compared field by field, without
    /// building one per listed operation; the destructuring fails to
    /// compile if a field is added and not compared.
    fn is_shared_spec(&self, spec: &TransferSpec, prefix: &str) -> bool {
        let TransferSpec {
            gcs_data_source,
            gcs_data_sink,
            object_conditions,
            transfer_options,
            transfer_manifest,
        } = spec;
        let plain = |data: &Option<GcsData>, bucket: &str| {
            data.as_ref().is_some_and(|GcsData { bucket_name, path }| {
                bucket_name == bucket && path.is_empty()
            })
        };
        plain(gcs_data_source, self.source)
            && plain(gcs_data_sink, self.destination)
            && transfer_options.is_none()
            && transfer_manifest.is_none()
            && object_conditions.as_ref().is_some_and(
                |ObjectConditions {
                     include_prefixes,
                     last_modified_since,
                     last_modified_before,
                 }| {
                    matches!(include_prefixes.as_slice(), [only] if only == prefix)
                        && last_modified_since.is_none()
                        && last_modified_before.is_none()
                },
            )
    }

    /// The latest operation of each tracked prefix that has one, and the
    /// summed counters of the other prefixes' latest operations.
    pub fn finish(self) -> (LatestOps, Counters) {
        let mut others = Counters::default();
        for brief in self.others.iter().flat_map(|o| &o.briefs) {
            others += &brief.counters;
        }
        (self.ops, others)
    }
}

/// The spec every operation this manager starts has for a prefix: the two
/// buckets, no paths, that one prefix, no options. Kept operations drop it
/// (see [`Latest::add`]): 144 bytes of strings not held a million times.
fn shared_spec(source: &str, destination: &str, prefix: &str) -> TransferSpec {
    TransferSpec::for_prefix(source, destination, prefix, None)
}

/// A kept operation as STS listed it: its shared spec put back.
pub fn restored<'o>(
    op: &'o TransferOperation,
    source: &str,
    destination: &str,
    prefix: &str,
) -> std::borrow::Cow<'o, TransferOperation> {
    if op.transfer_spec == TransferSpec::default() {
        let mut whole = op.clone();
        whole.transfer_spec = shared_spec(source, destination, prefix);
        std::borrow::Cow::Owned(whole)
    } else {
        std::borrow::Cow::Borrowed(op)
    }
}

/// A row the manager just started holds the job's name until the new
/// operation is listed; only an operation of that job can be it (jobs
/// without an operation name from `run` are one per attempt), so an
/// operation of another job is the previous attempt. Decided by names, not
/// by comparing STS's times with this host's clock.
/// A prefix queued again (`waiting` with no job name: requeued, or loaded)
/// takes no operation that began before it was queued: those are of its
/// earlier life.
fn predates_pending_start(row: &PrefixJob, op: &TransferOperation) -> bool {
    let awaiting = row
        .job_name
        .as_deref()
        .filter(|n| row.status == Status::Running && n.starts_with("transferJobs/"));
    if let Some(job) = awaiting {
        return op.transfer_job_name != job;
    }
    let queued = row.status == Status::Waiting && row.job_name.is_none();
    queued && op.start_time.is_none_or(|start| start < row.last_updated)
}

/// Decides the changes of `rows` given the latest operation of each
/// (from [`Latest`]).
pub fn sync(rows: &[PrefixJob], mut latest: LatestOps) -> SyncOutcome {
    let mut outcome = SyncOutcome::default();
    for (index, row) in rows.iter().enumerate() {
        let Some(op) = latest.get(&row.prefix) else {
            continue;
        };
        if predates_pending_start(row, op) {
            latest.remove(&row.prefix);
            continue;
        }
        let mapped = op.status.table_status();
        if mapped.is_none() {
            outcome.unknown.push(UnknownStatus {
                prefix: row.prefix.clone(),
                operation: op.name.clone(),
                status: op.status.name().to_string(),
            });
        }
        let status = mapped.unwrap_or(row.status);
        let status_changed = status != row.status;
        let name_changed = row.job_name.as_deref() != Some(op.name.as_str());
        let record = status_changed || status == Status::Running;
        if status_changed || name_changed || record {
            outcome.decisions.push(Decision {
                row: index,
                status,
                update: status_changed || name_changed,
                record,
            });
        }
    }
    outcome.latest = latest;
    outcome
}

/// The store's rows for `decisions`: each update names the latest
/// operation; each history row holds its full TransferOperation JSON
/// (SPEC 2), made here so a big sync holds the JSON a chunk at a time.
pub fn changes_of(
    rows: &[PrefixJob],
    latest: &LatestOps,
    (source, destination): (&str, &str),
    decisions: &[Decision],
    now: DateTime<Utc>,
) -> ChangeSet {
    let mut changes = ChangeSet::default();
    // One buffer, each JSON copied out at its size: a growing String would
    // keep up to twice its length.
    let mut buffer = Vec::with_capacity(4096);
    let mut json = |op: &TransferOperation, prefix: &str| {
        buffer.clear();
        serde_json::to_writer(&mut buffer, &*restored(op, source, destination, prefix)).ok()?;
        String::from_utf8(buffer.clone()).ok()
    };
    for decision in decisions {
        let Some(row) = rows.get(decision.row) else {
            continue;
        };
        let op = latest.get(&row.prefix);
        let name = op.map(|op| op.name.clone());
        if decision.update {
            // Each row is decided once: one update per prefix by construction.
            changes.updates.push(JobUpdate {
                prefix: row.prefix.clone(),
                status: decision.status,
                job_name: name.clone(),
                last_updated: now,
            });
        }
        if decision.record {
            changes.history.push(HistoryRow {
                prefix: row.prefix.clone(),
                status: decision.status,
                job_name: name,
                operation_results: op.and_then(|op| json(op, &row.prefix)),
                timestamp: now,
            });
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::OperationStatus;
    use chrono::TimeZone;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + seconds, 0).unwrap()
    }

    fn op(
        name: &str,
        prefix: &str,
        status: &str,
        start: i64,
        end: Option<i64>,
    ) -> TransferOperation {
        TransferOperation {
            name: name.into(),
            project_id: "p".into(),
            transfer_spec: TransferSpec {
                gcs_data_source: Some(GcsData {
                    bucket_name: "src".into(),
                    path: String::new(),
                }),
                gcs_data_sink: Some(GcsData {
                    bucket_name: "dst".into(),
                    path: String::new(),
                }),
                object_conditions: Some(ObjectConditions {
                    include_prefixes: vec![prefix.into()],
                    ..ObjectConditions::default()
                }),
                transfer_options: None,
                transfer_manifest: None,
            },
            start_time: Some(at(start)),
            end_time: end.map(at),
            status: OperationStatus::from_name(status),
            counters: Default::default(),
            error_breakdowns: vec![],
            transfer_job_name: format!("transferJobs/{name}"),
            logging_config: None,
        }
    }

    fn row(prefix: &str, status: Status, job_name: Option<&str>) -> PrefixJob {
        PrefixJob {
            prefix: prefix.into(),
            status,
            job_name: job_name.map(Into::into),
            last_updated: at(0),
        }
    }

    fn latest_of(
        rows: &[PrefixJob],
        ops: &[TransferOperation],
        deleted: &HashSet<String>,
    ) -> LatestOps {
        let mut latest = Latest::new(rows, deleted, "src", "dst");
        for op in ops {
            latest.add(op.clone());
        }
        latest.finish().0
    }

    struct Ran {
        changes: ChangeSet,
        latest: LatestOps,
        unknown: Vec<UnknownStatus>,
    }

    fn run(rows: &[PrefixJob], ops: &[TransferOperation]) -> Ran {
        let out = sync(rows, latest_of(rows, ops, &HashSet::new()));
        Ran {
            changes: changes_of(rows, &out.latest, ("src", "dst"), &out.decisions, at(1000)),
            latest: out.latest,
            unknown: out.unknown,
        }
    }

    #[test]
    fn latest_by_end_time_then_start_time() {
        let ops = [
            op("old", "a/", "FAILED", 10, Some(100)),
            op("new", "a/", "SUCCESS", 5, Some(200)),
            op("running", "b/", "IN_PROGRESS", 300, None),
            op("finished", "b/", "SUCCESS", 100, Some(400)),
        ];
        let rows = [
            row("a/", Status::Running, None),
            row("b/", Status::Running, None),
        ];
        let latest = latest_of(&rows, &ops, &HashSet::new());
        assert_eq!(latest["a/"].name, "new", "both ended: later end wins");
        assert_eq!(
            latest["b/"].name, "running",
            "one has no end: later start wins"
        );
    }

    #[test]
    fn other_buckets_and_deleted_jobs_are_ignored() {
        let mut foreign = op("foreign", "a/", "FAILED", 50, None);
        foreign.transfer_spec.gcs_data_sink = Some(GcsData {
            bucket_name: "elsewhere".into(),
            path: String::new(),
        });
        let deleted = op("deleted", "a/", "FAILED", 60, None);
        let ops = [op("mine", "a/", "SUCCESS", 10, Some(20)), foreign, deleted];
        let gone = HashSet::from(["transferJobs/deleted".to_string()]);
        let latest = latest_of(&[row("a/", Status::Running, None)], &ops, &gone);
        assert_eq!(latest["a/"].name, "mine");
        // The operation a row follows is followed to its end, whatever
        // happened to its job since (deleted by someone else).
        let followed = [row("a/", Status::Running, Some("deleted"))];
        let latest = latest_of(&followed, &ops, &gone);
        assert_eq!(latest["a/"].name, "deleted");
        let by_job = [row("a/", Status::Running, Some("transferJobs/deleted"))];
        assert_eq!(latest_of(&by_job, &ops, &gone)["a/"].name, "deleted");
    }

    #[test]
    fn status_change_updates_and_records_history() {
        let rows = [row("a/", Status::Running, Some("op-a"))];
        let ops = [op("op-a", "a/", "SUCCESS", 10, Some(20))];
        let out = run(&rows, &ops);
        assert_eq!(out.changes.updates.len(), 1);
        assert_eq!(out.changes.updates[0].status, Status::Done);
        assert_eq!(out.changes.history.len(), 1);
        let results: serde_json::Value =
            serde_json::from_str(out.changes.history[0].operation_results.as_deref().unwrap())
                .unwrap();
        assert_eq!(results["name"], "op-a");
        assert_eq!(
            serde_json::to_value(&ops[0]).unwrap(),
            results,
            "the history holds the operation whole, its shared spec restored"
        );
    }

    #[test]
    fn running_prefixes_get_progress_history_without_update() {
        let rows = [row("a/", Status::Running, Some("op-a"))];
        let ops = [op("op-a", "a/", "IN_PROGRESS", 10, None)];
        let out = run(&rows, &ops);
        assert!(out.changes.updates.is_empty());
        assert_eq!(out.changes.history.len(), 1);
        assert_eq!(out.changes.history[0].status, Status::Running);
    }

    #[test]
    fn unchanged_finished_prefix_writes_nothing() {
        let rows = [row("a/", Status::Done, Some("op-a"))];
        let ops = [op("op-a", "a/", "SUCCESS", 10, Some(20))];
        assert!(run(&rows, &ops).changes.is_empty());
    }

    #[test]
    fn new_operation_name_is_recorded() {
        let rows = [row("a/", Status::Done, Some("old"))];
        let ops = [op("op-a", "a/", "SUCCESS", 10, Some(20))];
        let out = run(&rows, &ops);
        assert_eq!(out.changes.updates[0].job_name.as_deref(), Some("op-a"));
        assert!(out.changes.history.is_empty(), "status did not change");
    }

    #[test]
    fn aborted_goes_back_to_waiting_and_queued_counts_as_running() {
        let rows = [
            row("a/", Status::Running, Some("x")),
            row("b/", Status::Waiting, None),
        ];
        let ops = [
            op("x", "a/", "ABORTED", 10, Some(20)),
            op("y", "b/", "QUEUED", 10, None),
        ];
        let out = run(&rows, &ops);
        let status_of = |p: &str| {
            out.changes
                .updates
                .iter()
                .find(|u| u.prefix == p)
                .unwrap()
                .status
        };
        assert_eq!(status_of("a/"), Status::Waiting);
        assert_eq!(status_of("b/"), Status::Running);
    }

    #[test]
    fn unknown_status_keeps_the_prefix_status_and_is_reported() {
        let rows = [row("a/", Status::Running, Some("x"))];
        let ops = [op("x", "a/", "TELEPORTING", 10, None)];
        let out = run(&rows, &ops);
        assert!(out.changes.updates.is_empty());
        assert_eq!(out.unknown[0].status, "TELEPORTING");
        assert_eq!(out.changes.history[0].status, Status::Running);
    }

    #[test]
    fn a_pending_start_ignores_the_previous_attempt() {
        let mut pending = row("a/", Status::Running, Some("transferJobs/job-a"));
        pending.last_updated = at(500);
        let ops = [op("failed-before", "a/", "FAILED", 100, Some(200))];
        let out = run(&[pending.clone()], &ops);
        assert!(out.changes.is_empty());
        assert!(out.latest.is_empty());
        let mut fresh = op("fresh", "a/", "IN_PROGRESS", 600, None);
        fresh.transfer_job_name = "transferJobs/job-a".into();
        let out = run(&[pending.clone()], std::slice::from_ref(&fresh));
        assert_eq!(out.changes.updates[0].job_name.as_deref(), Some("fresh"));
        // This host's clock minutes ahead of STS's: the job's operation
        // "began before" the row was written, and is still the one.
        fresh.start_time = Some(at(300));
        let out = run(&[pending], &[fresh]);
        assert_eq!(out.changes.updates[0].job_name.as_deref(), Some("fresh"));
    }

    #[test]
    fn prefixes_not_in_the_table_are_left_alone() {
        let ops = [op("x", "zzz/", "SUCCESS", 10, Some(20))];
        let out = run(&[row("a/", Status::Waiting, None)], &ops);
        assert!(out.changes.is_empty() && out.latest.is_empty());
    }

    #[test]
    fn listing_order_does_not_change_the_latest() {
        let rows = [row("a/", Status::Running, None)];
        let mut ops = vec![
            op("x", "a/", "FAILED", 10, Some(20)),
            op("y", "a/", "SUCCESS", 30, Some(40)),
            op("z", "a/", "FAILED", 30, Some(40)),
        ];
        let forward = latest_of(&rows, &ops, &HashSet::new());
        ops.reverse();
        let backward = latest_of(&rows, &ops, &HashSet::new());
        assert_eq!(forward["a/"].name, "z", "a tie goes to the larger name");
        assert_eq!(backward["a/"].name, "z");
    }

    #[test]
    fn untracked_prefixes_count_once_by_their_latest_operation() {
        let counted = |objects: i64, name: &str, prefix: &str, end: i64| {
            let mut o = op(name, prefix, "SUCCESS", end - 5, Some(end));
            o.counters.objects_copied_to_sink = objects;
            o
        };
        let ops = [
            counted(1, "first", "done/", 10),
            counted(7, "retry", "done/", 20),
            counted(100, "mine", "a/", 20),
            counted(1000, "other", "elsewhere/", 20),
        ];
        let rows = [row("a/", Status::Running, None)];
        let deleted = HashSet::new();
        let mut latest = Latest::new(&rows, &deleted, "src", "dst").counting_others();
        for o in ops.iter().rev() {
            latest.add(o.clone());
        }
        let (tracked, others) = latest.finish();
        assert_eq!(tracked.len(), 1, "only the tracked prefix is kept whole");
        assert_eq!(
            others.objects_copied_to_sink, 1007,
            "each untracked prefix counts its latest operation only"
        );
        let mut plain = Latest::new(&rows, &deleted, "src", "dst");
        for o in ops {
            plain.add(o);
        }
        assert_eq!(plain.finish().1.objects_copied_to_sink, 0);
    }

    #[test]
    fn kept_operations_drop_the_shared_spec_and_get_it_back() {
        let rows = [
            row("a/", Status::Running, None),
            row("b/", Status::Running, None),
        ];
        let mut odd = op("odd", "b/", "IN_PROGRESS", 10, None);
        if let Some(sink) = odd.transfer_spec.gcs_data_sink.as_mut() {
            sink.path = "archive/".into();
        }
        let mut delta = op("delta", "c/", "IN_PROGRESS", 10, None);
        delta.transfer_spec = delta.transfer_spec.clone().modified_since(Some(at(5)));
        let rows = [
            rows[0].clone(),
            rows[1].clone(),
            row("c/", Status::Running, None),
        ];
        let ops = [
            op("plain", "a/", "IN_PROGRESS", 10, None),
            odd.clone(),
            delta.clone(),
        ];
        let latest = latest_of(&rows, &ops, &HashSet::new());
        assert_eq!(
            latest["c/"].transfer_spec, delta.transfer_spec,
            "a pass's spec (lastModifiedSince) is not the shared one: kept"
        );
        assert_eq!(latest["a/"].transfer_spec, TransferSpec::default());
        assert_eq!(
            latest["b/"].transfer_spec, odd.transfer_spec,
            "not shared: kept"
        );
        for (prefix, listed) in [("a/", &ops[0]), ("b/", &odd)] {
            let whole = restored(&latest[prefix], "src", "dst", prefix);
            assert_eq!(&*whole, listed);
        }
    }
}
