//! SPEC 7: a prefix is stalled when it was running at the previous sync, is
//! running now on the same operation, and its counters have not moved.

use std::collections::HashMap;

use crate::model::Counters;

/// What a sync saw of one running prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningSnapshot {
    pub operation: String,
    pub counters: Counters,
}

/// Prefixes stalled between two syncs, sorted. Operations with no counters
/// at all (just accepted by STS) are not judged.
pub fn stalled_prefixes(
    previous: &HashMap<String, RunningSnapshot>,
    current: &HashMap<String, RunningSnapshot>,
) -> Vec<String> {
    let mut stalled: Vec<String> = current
        .iter()
        .filter(|(prefix, now)| {
            previous.get(*prefix).is_some_and(|before| {
                before.operation == now.operation
                    && now.counters != Counters::default()
                    && before.counters == now.counters
            })
        })
        .map(|(prefix, _)| prefix.clone())
        .collect();
    stalled.sort();
    stalled
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(operation: &str, copied: i64) -> RunningSnapshot {
        RunningSnapshot {
            operation: operation.into(),
            counters: Counters {
                objects_found_from_source: 10,
                objects_copied_to_sink: copied,
                ..Counters::default()
            },
        }
    }

    #[test]
    fn unchanged_counters_on_the_same_operation_stall() {
        let before = HashMap::from([
            ("a/".to_string(), snap("op1", 3)),
            ("b/".to_string(), snap("op2", 3)),
        ]);
        let now = HashMap::from([
            ("a/".to_string(), snap("op1", 3)),
            ("b/".to_string(), snap("op2", 4)),
        ]);
        assert_eq!(stalled_prefixes(&before, &now), ["a/"]);
    }

    #[test]
    fn new_operations_empty_counters_and_first_sightings_do_not_stall() {
        let before = HashMap::from([("a/".to_string(), snap("op1", 3))]);
        let now = HashMap::from([
            ("a/".to_string(), snap("op9", 3)),
            ("c/".to_string(), snap("op3", 0)),
        ]);
        assert!(stalled_prefixes(&before, &now).is_empty());
        let empty = RunningSnapshot {
            operation: "op1".into(),
            counters: Counters::default(),
        };
        let same = HashMap::from([("a/".to_string(), empty.clone())]);
        assert!(stalled_prefixes(&same, &same.clone()).is_empty());
    }
}
