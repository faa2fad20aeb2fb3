//! Passes (issue 23, cutover): the migration is pass 1; each later pass
//! runs every prefix done in the previous pass again, copying only what
//! changed since. Pure rules here; `sts-cutover` executes them (it
//! requeues the prefixes and hands the manager their [`PassSpec`]s, which
//! [`super::Manager::with_pass_specs`] puts into the jobs it starts).

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};

use crate::model::{OverwriteWhen, PrefixJob, Status, TransferOperation};
use crate::records::PassPrefix;

/// What a pass changes in a prefix's transfer spec.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PassSpec {
    /// `objectConditions.lastModifiedSince`.
    pub modified_since: Option<DateTime<Utc>>,
    /// `transferOptions.overwriteWhen`.
    pub overwrite_when: Option<OverwriteWhen>,
    /// `transferOptions.deleteObjectsUniqueInSink` (a mirror).
    pub delete_unique_in_sink: bool,
}

/// The kind of pass to plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassKind {
    /// Objects modified since the previous pass's start, less the margin.
    Delta,
    /// Every object compared, and what only the destination holds deleted:
    /// STS refuses `deleteObjectsUniqueInSink` with time-based conditions
    /// (INVALID_ARGUMENT), so a mirror pass has none.
    Mirror,
}

/// How far before the previous operation's start a delta pass looks: an
/// object written while that operation was listing, or stamped by a clock
/// a little behind STS's, is copied again rather than missed.
pub const DELTA_MARGIN_SECONDS: i64 = 300;

/// One prefix in the pass to come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPass {
    pub prefix: String,
    pub spec: PassSpec,
}

/// Why a pass cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PassError {
    #[error("{count} prefixes are not done (e.g. {sample}): a pass starts when every prefix of the previous one is done")]
    NotDone { count: usize, sample: String },
    #[error("prefix {0} is done but its successful operation reports no start time")]
    NoStart(String),
}

/// The next pass: every prefix of the job table, which must all be done
/// (the previous pass complete), each with the spec of `kind`. A delta's
/// `lastModifiedSince` is the start of the prefix's latest successful
/// operation as STS reported it (`latest`: by prefix), less `margin`.
pub fn plan_pass(
    jobs: &[PrefixJob],
    latest: &HashMap<String, TransferOperation>,
    kind: PassKind,
    margin: Duration,
) -> Result<Vec<PlannedPass>, PassError> {
    let not_done: Vec<&PrefixJob> = jobs.iter().filter(|j| j.status != Status::Done).collect();
    if let Some(first) = not_done.first() {
        return Err(PassError::NotDone {
            count: not_done.len(),
            sample: first.prefix.clone(),
        });
    }
    jobs.iter()
        .map(|job| {
            let spec = match kind {
                PassKind::Mirror => PassSpec {
                    modified_since: None,
                    overwrite_when: Some(OverwriteWhen::Different),
                    delete_unique_in_sink: true,
                },
                PassKind::Delta => {
                    let start = latest
                        .get(&job.prefix)
                        .filter(|op| op.status == crate::model::OperationStatus::Success)
                        .and_then(|op| op.start_time)
                        .ok_or_else(|| PassError::NoStart(job.prefix.clone()))?;
                    PassSpec {
                        modified_since: Some(start - margin),
                        overwrite_when: Some(OverwriteWhen::Different),
                        delete_unique_in_sink: false,
                    }
                }
            };
            Ok(PlannedPass {
                prefix: job.prefix.clone(),
                spec,
            })
        })
        .collect()
}

/// The specs of a pass as recorded, by prefix: what a resumed pass hands
/// the manager again (only the prefixes of that pass).
pub fn recorded_specs(rows: &[PassPrefix], pass: u32) -> HashMap<String, PassSpec> {
    rows.iter()
        .filter(|r| r.pass == pass)
        .map(|r| {
            (
                r.prefix.clone(),
                PassSpec {
                    modified_since: r.modified_since,
                    overwrite_when: Some(OverwriteWhen::Different),
                    delete_unique_in_sink: r.mirror,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{OperationStatus, TransferSpec};
    use chrono::TimeZone;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + seconds, 0).unwrap()
    }

    fn job(prefix: &str, status: Status) -> PrefixJob {
        PrefixJob {
            prefix: prefix.into(),
            status,
            job_name: Some("transferJobs/j".into()),
            last_updated: at(0),
        }
    }

    fn op(status: &str, start: Option<i64>) -> TransferOperation {
        TransferOperation {
            name: "transferOperations/o".into(),
            project_id: "p".into(),
            transfer_spec: TransferSpec::default(),
            start_time: start.map(at),
            end_time: None,
            status: OperationStatus::from_name(status),
            counters: Default::default(),
            error_breakdowns: vec![],
            transfer_job_name: "transferJobs/j".into(),
            logging_config: None,
        }
    }

    #[test]
    fn a_delta_looks_back_from_the_previous_start_less_the_margin() {
        let jobs = [job("a/", Status::Done), job("b/", Status::Done)];
        let latest = HashMap::from([
            ("a/".to_string(), op("SUCCESS", Some(1000))),
            ("b/".to_string(), op("SUCCESS", Some(2000))),
        ]);
        let planned = plan_pass(&jobs, &latest, PassKind::Delta, Duration::seconds(60)).unwrap();
        assert_eq!(planned.len(), 2);
        assert_eq!(planned[0].spec.modified_since, Some(at(940)));
        assert_eq!(planned[1].spec.modified_since, Some(at(1940)));
        for p in &planned {
            assert_eq!(p.spec.overwrite_when, Some(OverwriteWhen::Different));
            assert!(!p.spec.delete_unique_in_sink);
        }
    }

    #[test]
    fn a_mirror_has_no_time_condition_and_deletes_what_only_the_sink_holds() {
        let jobs = [job("a/", Status::Done)];
        let planned =
            plan_pass(&jobs, &HashMap::new(), PassKind::Mirror, Duration::zero()).unwrap();
        assert_eq!(planned[0].spec.modified_since, None);
        assert!(planned[0].spec.delete_unique_in_sink);
    }

    #[test]
    fn no_pass_while_a_prefix_of_the_previous_one_is_not_done() {
        let jobs = [job("a/", Status::Done), job("b/", Status::Error)];
        let latest = HashMap::from([("a/".to_string(), op("SUCCESS", Some(1)))]);
        let error = plan_pass(&jobs, &latest, PassKind::Delta, Duration::zero()).unwrap_err();
        assert_eq!(
            error,
            PassError::NotDone {
                count: 1,
                sample: "b/".into()
            }
        );
    }

    #[test]
    fn a_delta_needs_the_start_of_a_successful_operation() {
        let jobs = [job("a/", Status::Done)];
        for latest in [
            HashMap::new(),
            HashMap::from([("a/".to_string(), op("SUCCESS", None))]),
            HashMap::from([("a/".to_string(), op("FAILED", Some(5)))]),
        ] {
            assert_eq!(
                plan_pass(&jobs, &latest, PassKind::Delta, Duration::zero()),
                Err(PassError::NoStart("a/".into()))
            );
        }
    }

    #[test]
    fn recorded_specs_are_those_of_the_pass_asked_for() {
        let rows = [
            PassPrefix {
                prefix: "a/".into(),
                pass: 2,
                modified_since: Some(at(5)),
                mirror: false,
            },
            PassPrefix {
                prefix: "b/".into(),
                pass: 1,
                modified_since: None,
                mirror: false,
            },
        ];
        let specs = recorded_specs(&rows, 2);
        assert_eq!(specs.len(), 1);
        assert_eq!(specs["a/"].modified_since, Some(at(5)));
    }
}
