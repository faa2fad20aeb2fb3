//! The start round as a pure function (SPEC 6, issue "start at full speed"):
//! from the unfinished rows, the stalled set, the ramp level and the options
//! to the list of prefixes to resume, start or retry. The manager only
//! executes the plan.

use std::collections::{HashMap, HashSet};

use crate::model::{PrefixJob, Status};

/// The ramp: from level L to L + min(max - L, 2L), so 1, 3, 9, 27, ... up to
/// the maximum; the first round opens one slot. It never falls.
pub fn next_level(level: usize, max: usize) -> usize {
    if level == 0 {
        return max.min(1);
    }
    level + max.saturating_sub(level).min(level.saturating_mul(2))
}

/// What to do for one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Resume its paused operation.
    Resume(String),
    /// A first start.
    Start,
    /// A start after a failure (its wait is over).
    Retry,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub prefix: String,
    pub action: Action,
}

/// Everything the round decides from.
pub struct RoundInput<'a> {
    /// The unfinished rows (sorted by prefix: the table order).
    pub rows: &'a [PrefixJob],
    pub stalled: &'a HashSet<String>,
    /// Slots open now (the ramp level), at most `max`.
    pub level: usize,
    pub max: usize,
    pub allow_new_jobs_when_stalled: bool,
    /// Prefixes in `error` whose retry is due now.
    pub retry_due: &'a HashSet<String>,
    /// Planned bytes per prefix, when known: larger first among new ones.
    pub sizes: &'a HashMap<String, u64>,
    /// No new start at all (the same permanent cause stopped them).
    pub halted: bool,
}

/// Slots free now: the level (never above the maximum) less what runs.
/// Stalled operations do not count as running when the option says so.
pub fn free_slots(input: &RoundInput) -> usize {
    let running = input
        .rows
        .iter()
        .filter(|r| r.status == Status::Running)
        .filter(|r| !(input.allow_new_jobs_when_stalled && input.stalled.contains(&r.prefix)))
        .count();
    input.level.min(input.max).saturating_sub(running)
}

/// The round: paused prefixes first (resuming keeps their progress), then
/// waiting ones (largest planned size first when sizes are known, else table
/// order), then retries whose wait is over; as many as there are free slots.
pub fn plan_round(input: &RoundInput) -> Vec<Planned> {
    if input.halted {
        return vec![];
    }
    let slots = free_slots(input);
    if slots == 0 {
        return vec![];
    }
    let mut paused = Vec::new();
    let mut waiting = Vec::new();
    let mut retries = Vec::new();
    for row in input.rows {
        match (row.status, row.job_name.as_deref()) {
            (Status::Paused, Some(operation)) => paused.push(Planned {
                prefix: row.prefix.clone(),
                action: Action::Resume(operation.to_string()),
            }),
            // A paused row without an operation to resume starts anew.
            (Status::Paused, None) | (Status::Waiting, _) => waiting.push(row),
            (Status::Error, _) if input.retry_due.contains(&row.prefix) => retries.push(Planned {
                prefix: row.prefix.clone(),
                action: Action::Retry,
            }),
            _ => {}
        }
    }
    // Stable: equal (or unknown) sizes keep the table order.
    waiting.sort_by_key(|r| std::cmp::Reverse(input.sizes.get(&r.prefix).copied().unwrap_or(0)));
    paused
        .into_iter()
        .chain(waiting.into_iter().map(|r| Planned {
            prefix: r.prefix.clone(),
            action: Action::Start,
        }))
        .chain(retries)
        .take(slots)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn row(prefix: &str, status: Status, job: Option<&str>) -> PrefixJob {
        PrefixJob {
            prefix: prefix.into(),
            status,
            job_name: job.map(str::to_owned),
            last_updated: chrono::Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
        }
    }

    struct Case {
        rows: Vec<PrefixJob>,
        stalled: HashSet<String>,
        retry_due: HashSet<String>,
        sizes: HashMap<String, u64>,
        level: usize,
        max: usize,
        allow: bool,
        halted: bool,
    }

    impl Case {
        fn new(rows: Vec<PrefixJob>, level: usize, max: usize) -> Case {
            Case {
                rows,
                stalled: HashSet::new(),
                retry_due: HashSet::new(),
                sizes: HashMap::new(),
                level,
                max,
                allow: false,
                halted: false,
            }
        }
        fn plan(&self) -> Vec<(String, Action)> {
            plan_round(&RoundInput {
                rows: &self.rows,
                stalled: &self.stalled,
                level: self.level,
                max: self.max,
                allow_new_jobs_when_stalled: self.allow,
                retry_due: &self.retry_due,
                sizes: &self.sizes,
                halted: self.halted,
            })
            .into_iter()
            .map(|p| (p.prefix, p.action))
            .collect()
        }
    }

    fn waiting(n: usize) -> Vec<PrefixJob> {
        (0..n)
            .map(|i| row(&format!("p{i:02}/"), Status::Waiting, None))
            .collect()
    }

    #[test]
    fn the_level_grows_one_three_nine_and_stops_at_the_maximum() {
        let mut levels = vec![];
        let mut level = 0;
        for _ in 0..6 {
            level = next_level(level, 20);
            levels.push(level);
        }
        assert_eq!(levels, [1, 3, 9, 20, 20, 20]);
        assert_eq!(next_level(0, 0), 0);
        assert_eq!(next_level(usize::MAX / 2, usize::MAX), usize::MAX);
    }

    #[test]
    fn nothing_pending_starts_nothing() {
        let rows = vec![
            row("a/", Status::Running, Some("o")),
            row("b/", Status::Done, None),
        ];
        assert!(Case::new(rows, 9, 20).plan().is_empty());
    }

    #[test]
    fn freed_slots_are_refilled_up_to_the_level_never_above_the_maximum() {
        let mut rows = waiting(30);
        rows[0].status = Status::Running;
        // Level 3 with one running: two more.
        assert_eq!(Case::new(rows.clone(), 3, 20).plan().len(), 2);
        // A level above the maximum is held to it.
        assert_eq!(Case::new(rows.clone(), 50, 20).plan().len(), 19);
        // Running at or over the maximum: none.
        let full: Vec<PrefixJob> = (0..21)
            .map(|i| row(&format!("r{i}/"), Status::Running, Some("o")))
            .chain(waiting(3))
            .collect();
        assert!(Case::new(full, 20, 20).plan().is_empty());
    }

    #[test]
    fn paused_first_then_waiting_then_retries() {
        let rows = vec![
            row("a/", Status::Error, Some("op-a")),
            row("b/", Status::Waiting, None),
            row("c/", Status::Paused, Some("op-c")),
            row("d/", Status::Error, Some("op-d")),
        ];
        let mut case = Case::new(rows, 9, 20);
        case.retry_due = ["a/".to_string()].into();
        assert_eq!(
            case.plan(),
            [
                ("c/".to_string(), Action::Resume("op-c".into())),
                ("b/".to_string(), Action::Start),
                ("a/".to_string(), Action::Retry),
            ]
        );
    }

    #[test]
    fn larger_planned_prefixes_start_first() {
        let mut case = Case::new(waiting(4), 2, 20);
        case.sizes = [("p02/".to_string(), 50), ("p03/".to_string(), 900)].into();
        let planned: Vec<String> = case.plan().into_iter().map(|(p, _)| p).collect();
        assert_eq!(planned, ["p03/", "p02/"]);
        // Unknown sizes keep the table order.
        let planned: Vec<String> = Case::new(waiting(4), 2, 20)
            .plan()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(planned, ["p00/", "p01/"]);
    }

    #[test]
    fn stalled_jobs_free_their_slots_only_when_allowed() {
        let mut rows = waiting(5);
        rows.push(row("s/", Status::Running, Some("o")));
        let mut case = Case::new(rows, 1, 20);
        case.stalled = ["s/".to_string()].into();
        assert!(case.plan().is_empty());
        case.allow = true;
        assert_eq!(case.plan().len(), 1);
    }

    #[test]
    fn a_halted_migration_starts_nothing() {
        let mut case = Case::new(waiting(5), 9, 20);
        case.halted = true;
        assert!(case.plan().is_empty());
    }
}
