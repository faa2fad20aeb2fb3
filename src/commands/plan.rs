//! `sts-plan`: list the source bucket, propose balanced prefixes, and write
//! them only when asked (`--out FILE`, `--load`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::flags::{Flag, FlagGroup, ToolFlags};
use super::{Invocation, Running, Tool, PLAN};
use crate::error::{Error, Result};
use crate::options::{Options, BUCKETS, GENERAL, STATE, TRANSFER};
use crate::plan::{balance, plan, PlannedPrefix, Target};
use crate::settings::{create_store, open_lister};
use crate::storage::{list_concurrently, ListProgress};

/// Listings run at once by default.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// `10GiB`, `500 MB`, `1e12`, `123`: a byte count.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a size (examples: 500GB, 2TiB, 1048576)"))?;
    let scale: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "pb" => 1e15,
        "kib" => 1024.0,
        "mib" => 1024f64.powi(2),
        "gib" => 1024f64.powi(3),
        "tib" => 1024f64.powi(4),
        "pib" => 1024f64.powi(5),
        _ => return Err(format!("'{text}': unknown unit '{unit}'")),
    };
    let bytes = number * scale;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("'{text}' must be at least one byte"));
    }
    Ok(bytes as u64)
}

/// Bytes for people: `1.5 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    crate::format::bytes(bytes as f64)
}

#[derive(Debug, Clone)]
pub struct PlanArgs {
    pub target: Target,
    pub out: Option<PathBuf>,
    pub load: bool,
    pub concurrency: usize,
    /// A BigQuery table of the source's object inventory: plan with SQL.
    pub source_inventory: Option<String>,
}

/// `sts-plan`'s own flags.
pub const PLAN_FLAGS: &[FlagGroup] = &[FlagGroup {
    heading: "plan options",
    flags: &[
        Flag::value(
            "shards",
            "N",
            "Propose about N prefixes balanced by bytes (default: 100)",
        ),
        Flag::value(
            "shard-bytes",
            "SIZE",
            "Propose prefixes of at most about SIZE each (500GB, 2TiB, ...), instead of --shards",
        ),
        Flag::value(
            "out",
            "FILE",
            "Write the prefixes to FILE as the JSON array sts-prepare-tables loads",
        ),
        Flag::switch(
            "load",
            "Load the prefixes into the job table (creating the tables) and keep each\n\
             prefix's planned objects and bytes in the plan table beside it",
        ),
        CONCURRENCY,
        Flag::value(
            "source-inventory",
            "TABLE",
            "With --state bigquery: plan from this object inventory table\n\
             ([project.]dataset.table with Cloud Storage inventory report columns:\n\
             bucket, name, size, ...) with SQL instead of listing the bucket",
        ),
    ],
}];

/// `--concurrency`, shared by sts-plan and sts-verify.
pub const CONCURRENCY: Flag =
    Flag::value("concurrency", "N", "Listings to run at once (default: 16)");

pub const TOOL: Tool = Tool {
    name: PLAN,
    about: "Lists the source bucket and proposes prefixes balanced by bytes: every object covered by exactly one prefix, none a prefix of another.",
    after: "Nothing is written without --out or --load.",
    groups: &[&GENERAL, &STATE, &TRANSFER, &BUCKETS],
    own: PLAN_FLAGS,
    stops_itself: false,
    run,
};

fn run(invocation: Invocation) -> Running {
    Box::pin(async move {
        let args = PlanArgs::parse(&invocation.flags).map_err(Error::Input)?;
        let report = run_plan(&invocation.options, &args).await?;
        crate::out!("{}", render(&report));
        Ok(0)
    })
}

pub fn concurrency_flag(found: &ToolFlags) -> std::result::Result<usize, String> {
    match found.get("concurrency").and_then(|v| v.last()) {
        None => Ok(DEFAULT_CONCURRENCY),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => Ok(n),
            _ => Err(format!(
                "option '--concurrency': '{text}' is not a number from 1 to 1000"
            )),
        },
    }
}

impl PlanArgs {
    pub fn parse(found: &ToolFlags) -> std::result::Result<PlanArgs, String> {
        let last = |flag: &str| found.get(flag).and_then(|v| v.last()).cloned();
        let target = match (last("shards"), last("shard-bytes")) {
            (Some(_), Some(_)) => {
                return Err("give --shards or --shard-bytes, not both".into());
            }
            (Some(n), None) => match n.parse::<u64>() {
                Ok(n) if (1..=1_000_000).contains(&n) => Target::Shards(n),
                _ => {
                    return Err(format!(
                        "option '--shards': '{n}' is not a number from 1 to 1000000"
                    ))
                }
            },
            (None, Some(size)) => Target::ShardBytes(
                parse_size(&size).map_err(|e| format!("option '--shard-bytes': {e}"))?,
            ),
            (None, None) => Target::Shards(100),
        };
        Ok(PlanArgs {
            target,
            out: last("out").map(PathBuf::from),
            load: found.contains_key("load"),
            concurrency: concurrency_flag(found)?,
            source_inventory: last("source-inventory"),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    pub bucket: String,
    pub planned: Vec<PlannedPrefix>,
    pub objects: u64,
    pub bytes: u64,
    /// Largest prefix's bytes over the mean.
    pub balance: f64,
    pub list_requests: u64,
    pub loaded: Option<usize>,
    pub already_present: Option<usize>,
    pub written_to: Option<String>,
}

/// Shows listing progress on stderr until dropped: a line rewritten in
/// place on a terminal, else a log line every 10 s.
pub struct ProgressLine {
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ProgressLine {
    pub fn start(what: &'static str, progress: Arc<ListProgress>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let task = tokio::spawn(async move {
            let every = if terminal {
                Duration::from_millis(250)
            } else {
                Duration::from_secs(10)
            };
            let started = std::time::Instant::now();
            loop {
                tokio::time::sleep(every).await;
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let objects = progress.objects.load(Ordering::Relaxed);
                let bytes = progress.bytes.load(Ordering::Relaxed);
                let rate = objects as f64 / started.elapsed().as_secs_f64().max(0.001);
                let line = format!(
                    "{what}: {objects} objects, {} ({rate:.0} objects/s)",
                    human_bytes(bytes)
                );
                if terminal {
                    eprint!("\r{line}   ");
                } else {
                    tracing::info!("{line}");
                }
            }
            if terminal {
                eprintln!();
            }
        });
        ProgressLine {
            stop,
            task: Some(task),
        }
    }

    pub async fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Writes `prefixes` as a JSON array to `path`, whole or not at all.
fn write_prefix_file(path: &Path, planned: &[PlannedPrefix]) -> Result<()> {
    let prefixes: Vec<&str> = planned.iter().map(|p| p.prefix.as_str()).collect();
    let body = serde_json::to_string_pretty(&prefixes)
        .map_err(|e| Error::Input(format!("cannot encode the prefixes: {e}")))?;
    let temp = path.with_extension("tmp-sts-plan");
    let written = std::fs::write(&temp, body + "\n").and_then(|()| std::fs::rename(&temp, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        Error::Input(format!("cannot write {}: {e}", path.display()))
    })
}

/// A planned prefix that overlaps one already in the job table (one a
/// prefix of the other, not equal) would copy objects twice.
pub fn overlap_with_table(
    existing: &[String],
    planned: &[PlannedPrefix],
) -> Option<(String, String)> {
    let mut all: Vec<(&str, bool)> = existing
        .iter()
        .map(|p| (p.as_str(), true))
        .chain(planned.iter().map(|p| (p.prefix.as_str(), false)))
        .collect();
    all.sort_unstable();
    all.dedup_by(|b, a| a.0 == b.0);
    // Sorted, a prefix sits right before the names that extend it; check
    // each against the nearest earlier entry that is a prefix of it.
    let mut open: Vec<(&str, bool)> = Vec::new();
    for (prefix, in_table) in all {
        while open.last().is_some_and(|(o, _)| !prefix.starts_with(o)) {
            open.pop();
        }
        // Prefixes of the table overlapping each other are not this plan's doing.
        if let Some((outer, _)) = open.iter().find(|(_, t)| *t != in_table) {
            return Some(if in_table {
                (outer.to_string(), prefix.to_string())
            } else {
                (prefix.to_string(), outer.to_string())
            });
        }
        open.push((prefix, in_table));
    }
    None
}

/// The BigQuery store the options name, for inventories (which need it).
pub fn inventory_store(options: &Options) -> Result<crate::store::bigquery::BigQueryStore> {
    if options.state_location()? != crate::options::StateLocation::BigQuery {
        return Err(Error::Input(
            "object inventories are BigQuery tables: use them with --state bigquery".into(),
        ));
    }
    Ok(crate::store::bigquery::BigQueryStore::open(
        &crate::settings::bigquery_settings(options),
    )?)
}

/// The plan from an inventory table: one query per level of the name trie.
async fn plan_from_inventory(
    options: &Options,
    table: &str,
    target: crate::plan::Target,
) -> Result<(Vec<PlannedPrefix>, u64)> {
    use crate::storage::inventory::{Inventory, InventoryReader};
    let store = inventory_store(options)?;
    let inventory = Inventory::parse(table, &store.job_table().project, &options.source_bucket)?;
    let root = InventoryReader::new(store.api())
        .root(&inventory)
        .await?
        .ok_or_else(|| {
            Error::Input(format!(
                "inventory {table} holds no objects of bucket {}: nothing to plan",
                options.source_bucket
            ))
        })?;
    let fine = crate::plan::fine_weight(root.weight(), target);
    let queries = std::sync::atomic::AtomicU64::new(1);
    let tree = crate::plan::build_tree_by_levels(root, fine, |parents| {
        let (store, inventory, queries) = (&store, &inventory, &queries);
        async move {
            queries.fetch_add(1, Ordering::Relaxed);
            InventoryReader::new(store.api())
                .children(inventory, &parents)
                .await
        }
    })
    .await?;
    let planned = crate::plan::plan_tree(&tree, target)
        .map_err(|e| Error::Input(format!("inventory {table}: {e}")))?;
    Ok((planned, queries.load(Ordering::Relaxed)))
}

async fn plan_from_listing(
    options: &Options,
    args: &PlanArgs,
) -> Result<(Vec<PlannedPrefix>, u64)> {
    let lister = open_lister(options)?;
    let bucket = options.source_bucket.clone();
    lister.get_bucket(&bucket).await?;
    let progress = Arc::new(ListProgress::default());
    let line = ProgressLine::start("listing", Arc::clone(&progress));
    let listed = list_concurrently(
        Arc::clone(&lister),
        &bucket,
        "",
        false,
        args.concurrency,
        progress,
    )
    .await;
    line.finish().await;
    let objects = listed?;
    let pairs: Vec<(&str, u64)> = objects.iter().map(|o| (o.name.as_str(), o.size)).collect();
    let planned = crate::storage::blocking(|| plan(&pairs, "", args.target))
        .map_err(|e| Error::Input(format!("bucket {bucket}: {e}")))?;
    Ok((planned, lister.requests()))
}

pub async fn run_plan(options: &Options, args: &PlanArgs) -> Result<PlanReport> {
    let (planned, requests) = match &args.source_inventory {
        Some(table) => plan_from_inventory(options, table, args.target).await?,
        None => plan_from_listing(options, args).await?,
    };
    let bucket = options.source_bucket.clone();
    let mut report = PlanReport {
        bucket,
        objects: planned.iter().map(|p| p.objects).sum(),
        bytes: planned.iter().map(|p| p.bytes).sum(),
        balance: balance(&planned),
        list_requests: requests,
        planned,
        loaded: None,
        already_present: None,
        written_to: None,
    };
    if args.load {
        let store = create_store(options)?;
        store.prepare().await?;
        let existing: Vec<String> = store
            .read_jobs()
            .await?
            .into_iter()
            .map(|j| j.prefix)
            .collect();
        if let Some((planned, present)) = overlap_with_table(&existing, &report.planned) {
            return Err(Error::Input(format!(
                "planned prefix '{planned}' overlaps '{present}' already in the job table \
                 (objects would be copied twice); nothing was loaded"
            )));
        }
        let prefixes: Vec<String> = report.planned.iter().map(|p| p.prefix.clone()).collect();
        // The plan first: a crash between the two leaves planned sizes for
        // prefixes not loaded yet (read for no one; the rerun loads them),
        // never loaded prefixes whose sizes are lost (counted unlisted).
        store.save_plan(&report.planned).await?;
        let loaded = store.load_prefixes(&prefixes).await?;
        report.loaded = Some(loaded.inserted);
        report.already_present = Some(loaded.already_present);
    }
    if let Some(path) = &args.out {
        write_prefix_file(path, &report.planned)?;
        report.written_to = Some(path.display().to_string());
    }
    Ok(report)
}

/// The table, totals and balance `sts-plan` prints.
pub fn render(report: &PlanReport) -> String {
    let width = report
        .planned
        .iter()
        .map(|p| p.prefix.chars().count())
        .max()
        .unwrap_or(6)
        .clamp(6, 80);
    let mut out = format!("{:<width$}  {:>12}  {:>12}\n", "prefix", "objects", "bytes");
    for p in &report.planned {
        out.push_str(&format!(
            "{:<width$}  {:>12}  {:>12}\n",
            p.prefix,
            p.objects,
            human_bytes(p.bytes)
        ));
    }
    out.push_str(&format!(
        "{} prefixes over {} objects, {} ({} bytes) in bucket {}; balance (largest / mean): {:.2}\n",
        report.planned.len(),
        report.objects,
        human_bytes(report.bytes),
        report.bytes,
        report.bucket,
        report.balance
    ));
    match (&report.written_to, report.loaded) {
        (None, None) => {
            out.push_str("Nothing written: pass --out FILE or --load to use this plan.\n")
        }
        (written, loaded) => {
            if let Some(path) = written {
                out.push_str(&format!("Wrote the prefixes to {path}.\n"));
            }
            if let Some(loaded) = loaded {
                out.push_str(&format!(
                    "Loaded {loaded} prefixes into the job table ({} already present); \
                     planned sizes are in the plan table.\n",
                    report.already_present.unwrap_or(0)
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tool_flags_parse_beside_the_shared_options_and_are_checked() {
        let parse = |list: &[&str]| -> std::result::Result<(Options, ToolFlags), String> {
            match super::super::parse(&TOOL, &args(list)).map_err(|e| e.to_string())? {
                super::super::Parsed::Run(options, flags) => Ok((*options, flags)),
                super::super::Parsed::Print(text) => Err(text),
            }
        };
        let (options, found) = parse(&[
            "--shards",
            "8",
            "--state",
            "sqlite:x",
            "--load",
            "--out=p.json",
        ])
        .unwrap();
        assert_eq!(options.state, "sqlite:x");
        let parsed = PlanArgs::parse(&found).unwrap();
        assert_eq!(parsed.target, Target::Shards(8));
        assert!(parsed.load);
        assert_eq!(parsed.out, Some(PathBuf::from("p.json")));
        for (bad, expected) in [
            (&["--shards"][..], "--shards"),
            (&["--shards", "0"][..], "--shards"),
            (&["--shards", "2", "--shard-bytes", "1GB"][..], "not both"),
            (&["--shard-bytes", "12 parsecs"][..], "unknown unit"),
            (&["--load=yes"][..], "--load"),
            (&["--concurrency", "0"][..], "--concurrency"),
        ] {
            let err = parse(bad)
                .and_then(|(_, found)| PlanArgs::parse(&found).map(|_| ()))
                .unwrap_err();
            assert!(err.contains(expected), "{bad:?}: {err}");
        }
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("123").unwrap(), 123);
        assert_eq!(parse_size("1.5GB").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("2 TiB").unwrap(), 2 * 1024u64.pow(4));
        assert!(parse_size("0").is_err());
        assert!(parse_size("-5GB").is_err());
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn overlaps_with_the_job_table_are_found() {
        let planned = |p: &[&str]| -> Vec<PlannedPrefix> {
            p.iter()
                .map(|s| PlannedPrefix {
                    prefix: s.to_string(),
                    objects: 1,
                    bytes: 1,
                })
                .collect()
        };
        let existing = vec!["logs/".to_string(), "x/1".to_string()];
        assert_eq!(
            overlap_with_table(&existing, &planned(&["logs/", "m/"])),
            None
        );
        assert_eq!(
            overlap_with_table(&existing, &planned(&["logs/2019/", "m/"])),
            Some(("logs/2019/".into(), "logs/".into()))
        );
        assert_eq!(
            overlap_with_table(&existing, &planned(&["x/"])),
            Some(("x/".into(), "x/1".into()))
        );
    }
}
