//! SPEC 6: how many jobs to start this round, ramping 1, 2, 4, 8 ... up to the
//! maximum (the Cloud Storage ramp-up guidance).

pub fn jobs_to_start(running: usize, pending: usize, max_concurrent: usize) -> usize {
    let wanted = if pending == 0 || running > max_concurrent {
        0
    } else if running == 0 {
        1
    } else {
        (max_concurrent - running).min(2 * running)
    };
    wanted.min(pending)
}

#[cfg(test)]
mod tests {
    use super::jobs_to_start;

    #[test]
    fn nothing_pending_starts_nothing() {
        assert_eq!(jobs_to_start(0, 0, 20), 0);
        assert_eq!(jobs_to_start(5, 0, 20), 0);
    }

    #[test]
    fn over_the_maximum_starts_nothing() {
        assert_eq!(jobs_to_start(21, 10, 20), 0);
        assert_eq!(jobs_to_start(20, 10, 20), 0);
    }

    #[test]
    fn idle_starts_one_then_doubles_up_to_the_maximum() {
        let mut running = 0;
        let mut seen = vec![];
        for _ in 0..7 {
            running += jobs_to_start(running, 1000, 20);
            seen.push(running);
        }
        assert_eq!(seen, [1, 3, 9, 20, 20, 20, 20]);
        assert_eq!(jobs_to_start(1, 1000, 20), 2);
        assert_eq!(jobs_to_start(2, 1000, 20), 4);
        assert_eq!(jobs_to_start(18, 1000, 20), 2);
    }

    #[test]
    fn never_more_than_pending() {
        assert_eq!(jobs_to_start(4, 3, 20), 3);
        assert_eq!(jobs_to_start(0, 1, 1), 1);
    }
}
