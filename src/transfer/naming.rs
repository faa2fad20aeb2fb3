//! Job names the manager chooses itself, so creating a job is idempotent: a
//! repeated create of the same prefix's job answers ALREADY_EXISTS.

use super::TransferError;

/// FNV-1a: stable across builds and platforms (std's hasher is not).
fn fnv1a64(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// `transferJobs/sts-jm-<readable part of the prefix>-<hash>`: the same
/// source, destination and prefix always give the same valid name.
pub fn job_name_for_prefix(source_bucket: &str, destination_bucket: &str, prefix: &str) -> String {
    let readable: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let readable = readable.trim_matches('-');
    let hash = fnv1a64(&[source_bucket, destination_bucket, prefix]);
    if readable.is_empty() {
        format!("transferJobs/sts-jm-{hash:016x}")
    } else {
        format!("transferJobs/sts-jm-{readable}-{hash:016x}")
    }
}

/// `transferJobs/sts-jm-pool-<hash>-<k>`: the `k`-th reusable job of one
/// migration (`migration`: its job table, wherever it is kept) between one
/// source and destination. A start patches a free one's include prefix and
/// runs it, so starts spend no create quota. Two migrations between the same
/// buckets never share a job.
pub fn pool_job_name(
    source_bucket: &str,
    destination_bucket: &str,
    migration: &str,
    k: usize,
) -> String {
    format!(
        "{}{k:04}",
        pool_job_prefix(source_bucket, destination_bucket, migration)
    )
}

/// `transferJobs/sts-jm-pool-<hash>-`: what every job of one migration's
/// pool starts with (see [`pool_job_name`]).
pub fn pool_job_prefix(source_bucket: &str, destination_bucket: &str, migration: &str) -> String {
    let hash = fnv1a64(&[source_bucket, destination_bucket, "pool", migration]);
    format!("{POOL_MARK}{hash:016x}-")
}

const POOL_MARK: &str = "transferJobs/sts-jm-pool-";

/// Whether `name` is a reusable job of this tool (of any migration).
pub fn is_pool_job(name: &str) -> bool {
    name.starts_with(POOL_MARK)
}

/// STS's rules for a client-chosen job name.
pub fn validate_job_name(name: &str) -> Result<(), TransferError> {
    let invalid = |why: &str| {
        Err(TransferError::InvalidArgument(format!(
            "job name '{name}' {why}"
        )))
    };
    let Some(id) = name.strip_prefix("transferJobs/") else {
        return invalid("must start with 'transferJobs/'");
    };
    if name.len() > 128 {
        return invalid("is longer than 128 characters");
    }
    if id.starts_with("OPI") {
        return invalid("may not start with 'transferJobs/OPI'");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    {
        return invalid("may hold only letters, digits and '-._~'");
    }
    if !id.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric()) {
        return invalid("must end with a letter or digit");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_migrations_between_the_same_buckets_have_disjoint_pools() {
        let a: Vec<String> = (0..50)
            .map(|k| pool_job_name("s", "d", "sqlite:/a.db:sts_job", k))
            .collect();
        let b: Vec<String> = (0..50)
            .map(|k| pool_job_name("s", "d", "sqlite:/b.db:sts_job", k))
            .collect();
        assert!(a.iter().all(|name| !b.contains(name)));
        assert_eq!(a[7], pool_job_name("s", "d", "sqlite:/a.db:sts_job", 7));
        assert!(a.iter().all(|name| validate_job_name(name).is_ok()));
        let prefix = pool_job_prefix("s", "d", "sqlite:/a.db:sts_job");
        assert!(a
            .iter()
            .all(|name| name.starts_with(&prefix) && is_pool_job(name)));
        assert!(!b[0].starts_with(&prefix));
    }

    #[test]
    fn names_are_deterministic_valid_and_distinct() {
        let a = job_name_for_prefix("src", "dst", "logs/2019/");
        assert_eq!(a, job_name_for_prefix("src", "dst", "logs/2019/"));
        assert!(a.starts_with("transferJobs/sts-jm-logs-2019-"));
        assert_ne!(a, job_name_for_prefix("src", "other", "logs/2019/"));
        assert_ne!(a, job_name_for_prefix("src", "dst", "logs/2019-"));
        let long = "x".repeat(1024);
        for prefix in ["logs/2019/", "", "///", &long, "ünïcode/"] {
            validate_job_name(&job_name_for_prefix("src", "dst", prefix)).unwrap();
        }
    }

    #[test]
    fn sts_name_rules_are_enforced() {
        for bad in [
            "jobs/x",
            "transferJobs/OPIx",
            "transferJobs/a-",
            "transferJobs/a b",
            "transferJobs/",
        ] {
            assert!(validate_job_name(bad).is_err(), "{bad}");
        }
        assert!(validate_job_name(&format!("transferJobs/{}", "a".repeat(120))).is_err());
    }
}
