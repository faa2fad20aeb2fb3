//! Every failed object by name: when an operation whose job logs failed
//! copies (`loggingConfig`) ends with failed objects, the sync reads its
//! failure entries from Cloud Logging (`entries.list`, operations batched
//! into one filter, paged, paced under Logging's read quota) into the
//! failed-objects table. Entries arrive late (Logging's ingestion): an
//! operation is read again at later syncs until the table holds as many of
//! its objects as its `objectsFromSourceFailed` counter says, or
//! [`LOG_PATIENCE`] has passed since it was first seen ended (then the
//! missing count is said once).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::sync::LatestOps;
use super::{CycleSummary, Manager};
use crate::model::TransferOperation;
use crate::records::FailedObject;
use crate::transfer::logs::{chunk_operations, LoggedFailure, LogsError};

/// How long failure entries are awaited after an operation is first seen
/// ended: Cloud Logging's ingestion is minutes at worst; STS's own
/// file-system transfer logs are "typically available within 15 minutes of
/// job completion".
pub const LOG_PATIENCE: Duration = Duration::from_secs(15 * 60);
/// Pages read per sync at most (each a request under the read quota): a
/// huge backlog is read over several syncs, never holding one up for long.
pub const MAX_PAGES_PER_SYNC: usize = 20;

/// An operation whose failed objects are not all in the table yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Awaited {
    pub prefix: String,
    /// Its `objectsFromSourceFailed`.
    pub expected: u64,
    /// In the table at the last count.
    pub stored: u64,
    /// When this manager first saw it ended.
    pub since: Instant,
}

/// The ended operations among `latest` whose failed objects are logged
/// (their loggingConfig asks for failed copies) and counted, and which are
/// not awaited or settled already: (operation, prefix, expected).
pub fn newly_ended(latest: &LatestOps, known: &dyn Fn(&str) -> bool) -> Vec<(String, String, u64)> {
    let mut found: Vec<(String, String, u64)> = latest
        .iter()
        .filter(|(_, op)| logs_failures(op) && !known(&op.name))
        .map(|(prefix, op)| {
            (
                op.name.clone(),
                prefix.clone(),
                op.counters.objects_from_source_failed.max(0) as u64,
            )
        })
        .collect();
    found.sort();
    found
}

fn logs_failures(op: &TransferOperation) -> bool {
    op.end_time.is_some()
        && op.counters.objects_from_source_failed > 0
        && op
            .logging_config
            .as_ref()
            .is_some_and(|l| l.logs_failed("COPY"))
}

/// What to do with the awaited operations now: which to read, and which
/// to stop awaiting (complete, or past `patience`: with how many missing).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub read: Vec<String>,
    pub complete: Vec<String>,
    pub gave_up: Vec<(String, u64)>,
}

pub fn plan(awaited: &BTreeMap<String, Awaited>, now: Instant, patience: Duration) -> Plan {
    let mut plan = Plan::default();
    for (operation, a) in awaited {
        if a.stored >= a.expected {
            plan.complete.push(operation.clone());
        } else if now.saturating_duration_since(a.since) >= patience {
            plan.gave_up
                .push((operation.clone(), a.expected - a.stored));
        } else {
            plan.read.push(operation.clone());
        }
    }
    plan
}

/// Table rows of logged failures: each with its operation's prefix;
/// entries of operations not asked for are dropped.
pub fn rows_of(failures: Vec<LoggedFailure>, prefixes: &HashMap<&str, &str>) -> Vec<FailedObject> {
    failures
        .into_iter()
        .filter_map(|f| {
            let prefix = prefixes.get(f.operation.as_str())?.to_string();
            Some(FailedObject {
                prefix,
                object: f.object,
                action: f.action,
                error_code: f.error_code,
                message: f.message,
                operation: f.operation,
                time: f.time,
            })
        })
        .collect()
}

impl Manager {
    /// The sync's part: note newly ended operations with failed objects,
    /// read what is awaited, and settle what is complete or too late.
    /// Problems are warnings (the next sync tries again), never a failed
    /// cycle.
    pub(super) async fn collect_failed_objects(
        &mut self,
        latest: &LatestOps,
        summary: &mut CycleSummary,
    ) {
        let Some(logs) = self.logs.clone() else {
            return;
        };
        let known =
            |name: &str| self.awaited_logs.contains_key(name) || self.settled_logs.contains(name);
        let new = newly_ended(latest, &known);
        if !new.is_empty() {
            // After a restart, some may be in the table already.
            let names: Vec<String> = new.iter().map(|(o, _, _)| o.clone()).collect();
            let stored = match self.store.count_failed_objects(&names).await {
                Ok(stored) => stored,
                Err(e) => {
                    self.warn_failed_objects(summary, format!("counting stored ones: {e}"));
                    return;
                }
            };
            let now = Instant::now();
            for (operation, prefix, expected) in new {
                let stored = stored.get(&operation).copied().unwrap_or(0);
                self.awaited_logs.insert(
                    operation,
                    Awaited {
                        prefix,
                        expected,
                        stored,
                        since: now,
                    },
                );
            }
        }
        let plan = plan(&self.awaited_logs, Instant::now(), self.log_patience);
        self.settle(&plan);
        if plan.read.is_empty() {
            return;
        }
        if let Err(e) = self.read_logs(logs.as_ref(), &plan.read).await {
            self.warn_failed_objects(summary, e);
        }
        let after = plan_of_read(&self.awaited_logs, &plan.read);
        self.settle(&after);
    }

    fn warn_failed_objects(&self, summary: &mut CycleSummary, problem: String) {
        tracing::warn!("failed objects: {problem} (trying again at the next sync)");
        summary.errors.push(format!("failed objects: {problem}"));
    }

    fn settle(&mut self, plan: &Plan) {
        for operation in &plan.complete {
            if let Some(a) = self.awaited_logs.remove(operation) {
                tracing::info!(
                    prefix = %a.prefix,
                    operation = %operation,
                    "failed objects: all {} recorded",
                    a.expected
                );
                self.settled_logs.insert(operation.clone());
            }
        }
        for (operation, missing) in &plan.gave_up {
            if let Some(a) = self.awaited_logs.remove(operation) {
                tracing::warn!(
                    prefix = %a.prefix,
                    operation = %operation,
                    "failed objects: {missing} of {} never appeared in Cloud Logging within {} \
                     min of the operation's end; the table names {}; the operation's \
                     errorBreakdowns keep samples",
                    a.expected,
                    self.log_patience.as_secs() / 60,
                    a.stored
                );
                self.settled_logs.insert(operation.clone());
            }
        }
    }

    /// Reads the failure entries of `operations` (batched into as few
    /// filters as Logging's length limit allows, paged), stores them, and
    /// counts what the table holds of each.
    async fn read_logs(
        &mut self,
        logs: &dyn crate::transfer::logs::TransferLogs,
        operations: &[String],
    ) -> Result<(), String> {
        let prefixes: HashMap<&str, &str> = operations
            .iter()
            .filter_map(|o| Some((o.as_str(), self.awaited_logs.get(o)?.prefix.as_str())))
            .collect();
        let mut pages = 0;
        let mut problem = None;
        let cursor = self.log_cursor.take();
        'chunks: for chunk in chunk_operations(&self.project_id, operations) {
            let mut token: Option<String> = resume_token(cursor.as_ref(), &chunk);
            loop {
                if pages == MAX_PAGES_PER_SYNC {
                    // The next sync goes on from here if it reads the same
                    // operations (else it starts them afresh).
                    self.log_cursor = token.map(|t| (chunk.clone(), t));
                    break 'chunks;
                }
                pages += 1;
                let page = match logs
                    .failed_objects(&self.project_id, &chunk, token.as_deref())
                    .await
                {
                    Ok(page) => page,
                    Err(e) => {
                        problem = Some(describe(&e));
                        break 'chunks;
                    }
                };
                let rows = rows_of(page.failures, &prefixes);
                if !rows.is_empty() {
                    self.store
                        .save_failed_objects(&rows)
                        .await
                        .map_err(|e| format!("recording {} of them: {e}", rows.len()))?;
                }
                match page.next_page_token {
                    Some(next) => token = Some(next),
                    None => break,
                }
            }
        }
        tracing::debug!(
            operations = operations.len(),
            requests = pages,
            "failed objects: read Cloud Logging"
        );
        let stored = self
            .store
            .count_failed_objects(operations)
            .await
            .map_err(|e| format!("counting stored ones: {e}"))?;
        for operation in operations {
            if let Some(a) = self.awaited_logs.get_mut(operation) {
                a.stored = stored.get(operation).copied().unwrap_or(0);
            }
        }
        problem.map_or(Ok(()), Err)
    }

    /// Operations whose failed objects are still awaited (for `done`).
    pub(super) fn awaiting_failed_objects(&self) -> usize {
        self.awaited_logs.len()
    }
}

/// Where a read of `chunk` starts: where the last sync stopped, when it
/// stopped in this very set of operations (a page token is only good for
/// the same filter).
pub fn resume_token(cursor: Option<&(Vec<String>, String)>, chunk: &[String]) -> Option<String> {
    cursor
        .filter(|(operations, _)| operations.as_slice() == chunk)
        .map(|(_, token)| token.clone())
}

/// After a read, the read operations that are complete now.
fn plan_of_read(awaited: &BTreeMap<String, Awaited>, read: &[String]) -> Plan {
    Plan {
        complete: read
            .iter()
            .filter(|o| awaited.get(*o).is_some_and(|a| a.stored >= a.expected))
            .cloned()
            .collect(),
        ..Plan::default()
    }
}

fn describe(e: &LogsError) -> String {
    format!("reading Cloud Logging: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Counters, LoggingConfig, OperationStatus, TransferSpec};

    fn op(name: &str, failed: i64, ended: bool, logged: bool) -> Box<TransferOperation> {
        Box::new(TransferOperation {
            name: name.into(),
            project_id: "p".into(),
            transfer_spec: TransferSpec::default(),
            start_time: None,
            end_time: ended.then(chrono::Utc::now),
            status: if ended {
                OperationStatus::Failed
            } else {
                OperationStatus::InProgress
            },
            counters: Counters {
                objects_from_source_failed: failed,
                ..Counters::default()
            },
            error_breakdowns: vec![],
            transfer_job_name: "transferJobs/j".into(),
            logging_config: logged.then(|| LoggingConfig::failed_objects(false)),
        })
    }

    #[test]
    fn only_ended_logged_operations_with_failed_objects_are_awaited() {
        let mut latest = LatestOps::new();
        latest.insert("a/".into(), op("o/a", 7, true, true));
        latest.insert("b/".into(), op("o/b", 7, false, true)); // running
        latest.insert("c/".into(), op("o/c", 0, true, true)); // nothing failed
        latest.insert("d/".into(), op("o/d", 3, true, false)); // not logged
        latest.insert("e/".into(), op("o/e", 2, true, true));
        let found = newly_ended(&latest, &|name| name == "o/e");
        assert_eq!(found, [("o/a".to_string(), "a/".to_string(), 7)]);
    }

    #[test]
    fn the_plan_reads_the_incomplete_and_gives_up_after_patience() {
        let start = Instant::now();
        let awaited = |expected, stored, since| Awaited {
            prefix: "p/".into(),
            expected,
            stored,
            since,
        };
        let mut all = BTreeMap::new();
        all.insert("complete".to_string(), awaited(3, 3, start));
        all.insert("late".to_string(), awaited(5, 2, start));
        let patience = Duration::from_secs(900);
        let now = start + Duration::from_secs(60);
        assert_eq!(
            plan(&all, now, patience),
            Plan {
                read: vec!["late".into()],
                complete: vec!["complete".into()],
                gave_up: vec![],
            }
        );
        let later = start + patience;
        assert_eq!(plan(&all, later, patience).gave_up, [("late".into(), 3)]);
    }

    #[test]
    fn a_read_resumes_only_in_the_same_operations() {
        let chunk = vec!["o/a".to_string(), "o/b".to_string()];
        let cursor = (chunk.clone(), "page-21".to_string());
        assert_eq!(
            resume_token(Some(&cursor), &chunk).as_deref(),
            Some("page-21")
        );
        assert_eq!(resume_token(Some(&cursor), &chunk[..1]), None);
        assert_eq!(resume_token(None, &chunk), None);
    }

    #[test]
    fn rows_take_their_operations_prefix() {
        let failure = |operation: &str| LoggedFailure {
            operation: operation.into(),
            object: "a/x".into(),
            action: "COPY".into(),
            error_code: "NOT_FOUND".into(),
            message: "m".into(),
            time: chrono::Utc::now(),
        };
        let prefixes = HashMap::from([("o/a", "a/")]);
        let rows = rows_of(vec![failure("o/a"), failure("o/other")], &prefixes);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].prefix, "a/");
        assert_eq!(rows[0].operation, "o/a");
    }
}
