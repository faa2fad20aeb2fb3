//! `sts-report`: the sign-off report. One self-contained HTML file (no
//! network needed to open it: styles, plots and data are inside it) and its
//! JSON twin: the migration's totals (the very report `sts-status --json`
//! gives at the same moment), every prefix with its figures, operations,
//! attempts, status, failure codes with samples and verification verdict,
//! and plots of status over time and throughput.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::flags::{last, Flag, FlagGroup};
use super::{Invocation, Running, Tool, REPORT};
use crate::analysis::columns::Column;
use crate::analysis::figures::Amounts;
use crate::analysis::status::{read_inputs, report, StatusParams, StatusReport};
use crate::analysis::timeline::TimelineBuilder;
use crate::error::{Error, Result};
use crate::model::Status;
use crate::options::{Options, GENERAL, STATE, STATUS_RETRIES};
use crate::settings::open_store;

/// Plots have at most this many points.
const PLOT_BUCKETS: usize = 200;
/// Samples of failing object names kept per prefix and code.
const SAMPLES: usize = 3;
/// Lists in the totals are as long as `sts-status`'s default, so the totals
/// equal `sts-status --json` at the same moment.
const TOTALS_LIMIT: usize = 20;

pub const REPORT_FLAGS: &[FlagGroup] = &[FlagGroup {
    heading: "report options",
    flags: &[Flag::value(
        "out",
        "FILE",
        "Write the report to FILE (default: sts-report.html); its JSON twin goes beside it\n\
         with the extension .json",
    )],
}];

pub const TOOL: Tool = Tool {
    name: REPORT,
    about: "Writes the sign-off report: one self-contained HTML file (it opens with no network) and its JSON twin, with the migration's totals (as sts-status --json gives them), every prefix's figures, operations, attempts, status, failure codes with samples and verification verdict, and plots of status over time and throughput.",
    after: "",
    groups: &[&GENERAL, &STATE, &STATUS_RETRIES],
    own: REPORT_FLAGS,
    stops_itself: false,
    run,
};

fn run(invocation: Invocation) -> Running {
    Box::pin(async move {
        let out = PathBuf::from(last(&invocation.flags, "out").unwrap_or("sts-report.html"));
        // Before anything is read: a million prefixes take half a minute.
        check_out(&out)?;
        let report = build(&invocation.options, Utc::now()).await?;
        let (html, json) = write(&report, &out)?;
        crate::outln!(
            "Report of {} prefixes written to {} (and {}).",
            report.prefixes.len(),
            html.display(),
            json.display()
        );
        Ok(0)
    })
}

/// One failure code of a prefix's latest attempt.
#[derive(Debug, Clone, Serialize)]
pub struct CodeSample {
    pub code: String,
    pub count: i64,
    /// The first object names STS gave as samples.
    pub samples: Vec<String>,
}

/// A prefix's verdict from the verification table.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub result: &'static str,
    pub checked_at: DateTime<Utc>,
    /// The prefix was requeued or copied again since the check.
    pub stale: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PrefixLine {
    pub prefix: String,
    pub status: &'static str,
    pub attempts: usize,
    /// Its operations, oldest first.
    pub operations: Vec<String>,
    pub objects: Amounts,
    pub bytes: Amounts,
    pub failure_codes: Vec<CodeSample>,
    pub verification: Option<Verdict>,
}

/// The plots' data: prefixes per status and throughput, per time bucket.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plots {
    pub time: Vec<DateTime<Utc>>,
    pub prefixes: BTreeMap<&'static str, Vec<i64>>,
    pub bytes_per_second: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub generated_at: DateTime<Utc>,
    pub totals: StatusReport,
    pub prefixes: Vec<PrefixLine>,
    pub plots: Plots,
}

/// Reads everything the report shows, at `now`.
pub async fn build(options: &Options, now: DateTime<Utc>) -> Result<Report> {
    let store = open_store(options)?;
    let params = StatusParams {
        stall_after: chrono::Duration::milliseconds((options.stall_after * 1000.0) as i64),
        ..StatusParams::new(
            !options.no_retry_on_job_error,
            options.max_retries,
            TOTALS_LIMIT,
        )
    };
    let inputs = read_inputs(store.as_ref(), now, &params).await?;
    let totals = report(&inputs, now, &params);
    let verdicts: HashMap<&str, &crate::records::Verification> = inputs
        .verifications
        .iter()
        .map(|v| (v.prefix.as_str(), v))
        .collect();
    let prefixes = inputs
        .jobs
        .iter()
        .map(|job| {
            let earlier = inputs.earlier.get(&job.prefix);
            let latest = inputs.latest.get(&job.prefix);
            let operations: Vec<String> = earlier
                .into_iter()
                .flatten()
                .chain(latest)
                .map(|s| s.op.name.clone())
                .collect();
            let figures = inputs.figures_of(&job.prefix);
            let failure_codes = latest
                .map(|s| {
                    s.op.error_breakdowns
                        .iter()
                        .map(|e| CodeSample {
                            code: e.error_code.clone(),
                            count: e.error_count,
                            samples: e
                                .error_log_entries
                                .iter()
                                .take(SAMPLES)
                                .map(|l| l.url.clone())
                                .collect(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let verification = verdicts.get(job.prefix.as_str()).map(|v| Verdict {
                result: v.result.as_str(),
                checked_at: v.checked_at,
                stale: crate::analysis::verification::is_stale(v, Some(job)),
            });
            PrefixLine {
                prefix: job.prefix.clone(),
                status: job.status.as_str(),
                attempts: operations.len(),
                operations,
                objects: figures.objects,
                bytes: figures.bytes,
                failure_codes,
                verification,
            }
        })
        .collect();
    // The snapshots are in the lines now: freed before the timeline's scan.
    drop(verdicts);
    drop(inputs.latest);
    drop(inputs.earlier);
    drop(inputs.earlier_sums);
    let mut timeline = TimelineBuilder::new(&inputs.jobs);
    store.scan_history(&mut |row| timeline.add(row)).await?;
    let (frame, _) = timeline.finish(PLOT_BUCKETS);
    let mut plots = Plots::default();
    if let Some(Column::TimestampMicros { values, .. }) = frame.column("time") {
        plots.time = values
            .iter()
            .filter_map(|m| DateTime::from_timestamp_micros(*m))
            .collect();
    }
    for status in Status::ALL {
        if let Some(Column::Int64 { values, .. }) = frame.column(status.as_str()) {
            plots.prefixes.insert(status.as_str(), values.clone());
        }
    }
    if let Some(Column::Float64 { values, .. }) = frame.column("bytes_per_second") {
        plots.bytes_per_second = values.clone();
    }
    Ok(Report {
        generated_at: now,
        totals,
        prefixes,
        plots,
    })
}

/// The JSON twin's path: `FILE` with the extension `.json`.
pub fn twin(html: &Path) -> PathBuf {
    html.with_extension("json")
}

/// Refuses an `--out` the report could not be written to, or whose JSON
/// twin would overwrite the page itself.
pub fn check_out(html: &Path) -> Result<()> {
    if html.as_os_str().is_empty() {
        return Err(Error::Input("--out needs a file name".into()));
    }
    if twin(html) == html {
        return Err(Error::Input(format!(
            "--out {}: the JSON twin is the same name with the extension .json, so it \
             would overwrite the page; name the page .html",
            html.display()
        )));
    }
    if html.is_dir() {
        return Err(Error::Input(format!(
            "--out {} is a folder: give a file name, such as {}",
            html.display(),
            html.join("sts-report.html").display()
        )));
    }
    let folder = html.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(folder) = folder.filter(|f| !f.is_dir()) {
        return Err(Error::Input(format!(
            "--out {}: the folder {} does not exist",
            html.display(),
            folder.display()
        )));
    }
    Ok(())
}

/// Writes the HTML and its JSON twin, each whole or not at all (a
/// temporary file renamed into place); returns both paths. Both are
/// streamed to disk (a million prefixes make a JSON of hundreds of MB:
/// never held as text, here or in the page).
pub fn write(report: &Report, html: &Path) -> Result<(PathBuf, PathBuf)> {
    let twin = twin(html);
    write_whole(&twin, |out| {
        serde_json::to_writer(&mut *out, report).map_err(std::io::Error::other)
    })?;
    write_whole(html, |out| render_to(out, report))?;
    Ok((html.to_path_buf(), twin))
}

/// Writes `path` through `body` into a temporary file renamed into place:
/// the file is whole or absent, never half-written.
fn write_whole(
    path: &Path,
    body: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    let temp = path.with_extension("tmp-sts-report");
    let written = std::fs::File::create(&temp).and_then(|file| {
        let mut out = std::io::BufWriter::new(file);
        body(&mut out)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&temp, path)
    });
    written.map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        Error::Input(format!("cannot write {}: {e}", path.display()))
    })
}

/// Inside `<script>`, "</" would end the element and "<!--" can change how
/// the rest is parsed: every '<' is written as "\u003c", which JSON reads
/// as the same text ('<' only ever occurs inside its strings). One byte at
/// a time, so nothing depends on where writes split.
struct ScriptSafe<W> {
    inner: W,
}

impl<W: std::io::Write> std::io::Write for ScriptSafe<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for (i, part) in buf.split(|b| *b == b'<').enumerate() {
            if i > 0 {
                self.inner.write_all(b"\\u003c")?;
            }
            self.inner.write_all(part)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A line plot as inline SVG: one polyline per series, or "no data yet".
fn plot(title: &str, series: &[(&str, &str, Vec<f64>)], unit: &str) -> String {
    let (w, h, pad) = (720.0, 220.0, 40.0);
    let points = series.iter().map(|(_, _, v)| v.len()).max().unwrap_or(0);
    let top = series
        .iter()
        .flat_map(|(_, _, v)| v.iter().copied())
        .fold(0.0_f64, f64::max);
    let mut svg = format!(
        "<figure><figcaption>{}</figcaption><svg viewBox=\"0 0 {w} {h}\" role=\"img\">",
        escape(title)
    );
    if points < 2 || top <= 0.0 {
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">no data yet</text></svg></figure>",
            w / 2.0,
            h / 2.0
        ));
        return svg;
    }
    let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / (points - 1) as f64;
    let y = |v: f64| h - pad - (h - 2.0 * pad) * v / top;
    svg.push_str(&format!(
        "<line x1=\"{pad}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" class=\"axis\"/>\
         <text x=\"{pad}\" y=\"{2}\" class=\"scale\">{3} {unit}</text>",
        h - pad,
        w - pad,
        pad - 8.0,
        crate::format::bytes(top)
            .replace(" B", "")
            .trim_end_matches(' '),
    ));
    for (index, (name, colour, values)) in series.iter().enumerate() {
        let line: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\
             <text x=\"{}\" y=\"{}\" fill=\"{colour}\">{}</text>",
            line.join(" "),
            w - pad - 90.0,
            pad + 14.0 * index as f64,
            escape(name)
        ));
    }
    svg.push_str("</svg></figure>");
    svg
}

fn amounts_row(name: &str, a: &Amounts, bytes: bool) -> String {
    let show = |n: i64| {
        if bytes {
            crate::format::bytes(n as f64)
        } else {
            n.to_string()
        }
    };
    format!(
        "<tr><th>{name}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        show(a.found),
        show(a.copied),
        show(a.skipped),
        show(a.failed),
        show(a.failed_attempts)
    )
}

/// Writes the HTML page: the totals, the plots, and the report's JSON
/// (streamed, script-safe) from which the script renders every prefix, a
/// page of rows at a time.
pub fn render_to(out: &mut impl std::io::Write, report: &Report) -> std::io::Result<()> {
    let t = &report.totals;
    let count = |s: &str| t.prefixes.get(s).copied().unwrap_or(0);
    let status_series: Vec<(&str, &str, Vec<f64>)> = [
        ("done", "#2a7"),
        ("running", "#27c"),
        ("waiting", "#999"),
        ("error", "#c33"),
        ("paused", "#c90"),
    ]
    .iter()
    .map(|(name, colour)| {
        let values = report
            .plots
            .prefixes
            .get(name)
            .map(|v| v.iter().map(|n| *n as f64).collect())
            .unwrap_or_default();
        (*name, *colour, values)
    })
    .collect();
    let throughput = vec![("bytes/s", "#27c", report.plots.bytes_per_second.clone())];
    let v = &t.verification;
    write!(
        out,
        r##"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>sts-job-manager sign-off report</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}
th,td{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}
th{{background:#f4f4f4}} td.l,th.l{{text-align:left}}
svg{{width:100%;max-width:720px;border:1px solid #ddd}}
.axis{{stroke:#999}} .scale{{font-size:11px;fill:#555}}
.bad{{color:#c33;font-weight:bold}}
</style></head><body>
<h1>Sign-off report</h1>
<p>Generated {generated}. {total} prefixes: {done} done, {running} running, {waiting} waiting,
{paused} paused, {error} in error.</p>
<h2>Totals</h2>
<table><tr><th></th><th>found</th><th>copied</th><th>skipped</th><th>failing now</th><th>failed attempts</th></tr>
{objects}{bytes}</table>
<p>Verification: {verified} done prefixes match, <span class="{mismatch_class}">{mismatched} mismatched</span>,
{unverified} done prefixes not verified, {stale} earlier checks no longer count.
Needs action: {needs_action} prefixes out of retries. Stalled: {stalled}.</p>
<h2>Over time</h2>
{status_plot}
{throughput_plot}
<h2>Every prefix</h2>
<p><input id="filter" placeholder="filter by prefix or status"> <span id="shown"></span>
<button id="prev">previous</button> <button id="next">next</button></p>
<table id="prefixes"><thead><tr><th class="l">prefix</th><th class="l">status</th><th>attempts</th>
<th>objects found</th><th>copied</th><th>failing now</th><th>bytes found</th><th>bytes copied</th>
<th class="l">failure codes (samples)</th><th class="l">verification</th><th class="l">operations</th></tr></thead>
<tbody></tbody></table>
<script type="application/json" id="data">"##,
        generated = report.generated_at.to_rfc3339(),
        total = count("total"),
        done = count("done"),
        running = count("running"),
        waiting = count("waiting"),
        paused = count("paused"),
        error = count("error"),
        objects = amounts_row("objects", &t.objects, false),
        bytes = amounts_row("bytes", &t.bytes, true),
        verified = v.verified,
        mismatched = v.mismatched,
        mismatch_class = if v.mismatched > 0 { "bad" } else { "" },
        unverified = v.unverified_done,
        stale = v.stale,
        needs_action = t.needs_action_total,
        stalled = t.stalled_total,
        status_plot = plot("Prefixes per status", &status_series, ""),
        throughput_plot = plot("Throughput", &throughput, "B/s"),
    )?;
    let mut data = ScriptSafe { inner: &mut *out };
    serde_json::to_writer(&mut data, report).map_err(std::io::Error::other)?;
    write!(
        out,
        r##"</script>
<script>
const report = JSON.parse(document.getElementById("data").textContent);
const page = 500; let start = 0;
const text = (s) => document.createTextNode(s);
function rows() {{
  const f = document.getElementById("filter").value;
  return report.prefixes.filter(p => !f || p.prefix.includes(f) || p.status === f);
}}
function draw() {{
  const all = rows(); const body = document.querySelector("#prefixes tbody");
  body.textContent = "";
  for (const p of all.slice(start, start + page)) {{
    const tr = document.createElement("tr");
    const codes = p.failure_codes.map(c => c.code + " x" + c.count + (c.samples.length ? " (" + c.samples.join(", ") + ")" : "")).join("; ");
    const v = p.verification ? p.verification.result + " " + p.verification.checked_at + (p.verification.stale ? " (stale)" : "") : "";
    for (const [value, left] of [[p.prefix, 1], [p.status, 1], [p.attempts], [p.objects.found], [p.objects.copied], [p.objects.failed], [p.bytes.found], [p.bytes.copied], [codes, 1], [v, 1], [p.operations.join(", "), 1]]) {{
      const td = document.createElement("td"); if (left) td.className = "l";
      td.appendChild(text(String(value))); tr.appendChild(td);
    }}
    body.appendChild(tr);
  }}
  document.getElementById("shown").textContent = (all.length ? start + 1 : 0) + "-" + Math.min(start + page, all.length) + " of " + all.length;
}}
document.getElementById("filter").oninput = () => {{ start = 0; draw(); }};
document.getElementById("next").onclick = () => {{ if (start + page < rows().length) start += page; draw(); }};
document.getElementById("prev").onclick = () => {{ start = Math.max(0, start - page); draw(); }};
draw();
</script>
<noscript><p>The table of every prefix needs JavaScript; every figure is also in the JSON twin.</p></noscript>
</body></html>
"##
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_and_empty_plots_say_so() {
        assert_eq!(
            escape("<a href='x'>&\""),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;"
        );
        let empty = plot("Throughput", &[("bytes/s", "#000", vec![])], "B/s");
        assert!(empty.contains("no data yet"), "{empty}");
        let drawn = plot(
            "Throughput",
            &[("bytes/s", "#000", vec![1.0, 4.0, 2.0])],
            "B/s",
        );
        assert!(drawn.contains("<polyline") && !drawn.contains("no data yet"));
        assert_eq!(twin(Path::new("/x/r.html")), Path::new("/x/r.json"));
    }

    #[test]
    fn an_out_the_report_cannot_take_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let refused = |out: &Path, says: &str| match check_out(out) {
            Err(Error::Input(message)) => assert!(message.contains(says), "{message}"),
            other => panic!("{} not refused: {other:?}", out.display()),
        };
        refused(Path::new(""), "needs a file name");
        refused(&dir.path().join("r.json"), "overwrite the page");
        refused(dir.path(), "is a folder");
        refused(&dir.path().join("no/r.html"), "does not exist");
        assert!(check_out(&dir.path().join("r.html")).is_ok());
        assert!(check_out(Path::new("r.html")).is_ok());
        assert!(check_out(Path::new("report")).is_ok());
    }

    #[test]
    fn script_safe_data_holds_no_angle_bracket_and_reads_back_the_same() {
        use std::io::Write;
        let text = r#"{"p":"a</script><!--<script>x</</"}"#;
        for split in 0..=text.len() {
            let mut out = Vec::new();
            let mut safe = ScriptSafe { inner: &mut out };
            safe.write_all(&text.as_bytes()[..split]).unwrap();
            safe.write_all(&text.as_bytes()[split..]).unwrap();
            let written = String::from_utf8(out).unwrap();
            assert!(!written.contains('<'), "split at {split}: {written}");
            let read: serde_json::Value = serde_json::from_str(&written).unwrap();
            assert_eq!(read["p"], "a</script><!--<script>x</</");
        }
    }
}
