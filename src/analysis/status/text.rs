//! The report as text: one fact a line (the `--watch` screen).

use super::*;

/// The rate and ETA in one short phrase (the quickstart's live line).
pub fn rate_and_eta(rate: f64, eta: &Eta) -> String {
    let when = match eta.seconds {
        None => "ETA unknown".to_string(),
        Some(s) if eta.estimate => format!("ETA ~{} (estimate)", duration_text(s)),
        Some(s) => format!("ETA {}", duration_text(s)),
    };
    format!("{}/s, {when}", bytes_text(rate))
}

impl StatusReport {
    /// The report as text, one fact a line (the `--watch` screen).
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let count = |s: &str| self.prefixes.get(s).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "Prefixes: {} total: {} done, {} running, {} waiting, {} paused, {} error",
            count("total"),
            count("done"),
            count("running"),
            count("waiting"),
            count("paused"),
            count("error"),
        );
        let o = &self.objects;
        let _ = writeln!(
            out,
            "Objects:  {} found, {} copied, {} skipped, {} failed now ({} failed attempts), {} left",
            o.found, o.copied, o.skipped, o.failed, o.failed_attempts, o.left
        );
        let b = |n: i64| bytes_text(n as f64);
        let _ = writeln!(
            out,
            "Bytes:    {} found, {} copied, {} skipped, {} failed now, {} left",
            b(self.bytes.found),
            b(self.bytes.copied),
            b(self.bytes.skipped),
            b(self.bytes.failed),
            b(self.bytes.left)
        );
        if self.unlisted_prefixes > 0 {
            let _ = writeln!(
                out,
                "          (not counted: {} prefixes not listed yet)",
                self.unlisted_prefixes
            );
        }
        for pass in &self.passes {
            let _ = writeln!(
                out,
                "Pass {} ({}{}): {} objects ({}) found, {} objects ({}) copied, {} deleted",
                pass.pass,
                pass.kind,
                if pass.ended_at.is_some() {
                    ", ended"
                } else {
                    ", current"
                },
                pass.objects_found,
                b(pass.bytes_found),
                pass.objects_copied,
                b(pass.bytes_copied),
                pass.objects_deleted
            );
        }
        let t = &self.throughput;
        let _ = writeln!(
            out,
            "Rate:     {}/s, {:.1} objects/s (over the last {})",
            bytes_text(t.bytes_per_second),
            t.objects_per_second,
            duration_text(t.window_seconds)
        );
        let eta = match self.eta.seconds {
            Some(s) if self.eta.estimate => format!("~{} ({})", duration_text(s), self.eta.basis),
            Some(s) => format!("{} ({})", duration_text(s), self.eta.basis),
            None => format!("unknown ({})", self.eta.basis),
        };
        let _ = writeln!(out, "ETA:      {eta}");
        if self.needs_action_total > 0 {
            let more = self.needs_action_total - self.needs_action.len();
            let _ = writeln!(
                out,
                "Needs action: {} prefixes out of retries (no ETA for them; fix the cause, then \
                 sts-requeue): {}{}",
                self.needs_action_total,
                self.needs_action.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            );
        }
        let _ = writeln!(out, "Stalled:  {}", self.stalled_total);
        for s in &self.stalled {
            let _ = writeln!(
                out,
                "  {} ({}) no counter moved since {}",
                s.prefix,
                s.job_name.as_deref().unwrap_or("-"),
                s.since.format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
        let codes: Vec<String> = self
            .error_codes
            .iter()
            .map(|(code, n)| format!("{code} x{n}"))
            .collect();
        let _ = writeln!(
            out,
            "Failing:  {} prefixes{}",
            self.failing_total,
            if codes.is_empty() {
                String::new()
            } else {
                format!(" ({})", codes.join(", "))
            }
        );
        for f in &self.failing {
            let errors: Vec<String> = f
                .errors
                .iter()
                .map(|e| format!("{} x{}", e.code, e.count))
                .collect();
            let _ = writeln!(
                out,
                "  {} [{}] {}: {}",
                f.prefix,
                f.status,
                f.job_name.as_deref().unwrap_or("-"),
                if errors.is_empty() {
                    "no error details recorded".to_string()
                } else {
                    errors.join(", ")
                }
            );
        }
        if self.failing_total > self.failing.len() {
            let _ = writeln!(
                out,
                "  ... and {} more (--limit, or --json)",
                self.failing_total - self.failing.len()
            );
        }
        let v = &self.verification;
        let _ = writeln!(
            out,
            "Verified: {} done prefixes match, {} mismatched, {} done not verified{}",
            v.verified,
            v.mismatched,
            v.unverified_done,
            if v.stale > 0 {
                format!(
                    " ({} earlier checks no longer count: requeued or copied again since)",
                    v.stale
                )
            } else {
                String::new()
            }
        );
        out
    }
}
