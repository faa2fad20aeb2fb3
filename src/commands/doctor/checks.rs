//! `sts-doctor`: a read-only preflight against the real project. One line
//! per check, with what to fix (the exact `gcloud` command). Nothing is
//! created, changed or started.
//!
//! Each API is reached at Google's endpoint with Application Default
//! Credentials, or, for a stand-in, through its `*_EMULATOR_HOST`: STS,
//! Service Usage and Cloud Resource Manager at
//! `STORAGE_TRANSFER_EMULATOR_HOST` (the last two under `/serviceusage` and
//! `/cloudresourcemanager`, as `sts-emulator` serves them), Cloud Storage at
//! `STORAGE_EMULATOR_HOST`, BigQuery at `BIGQUERY_EMULATOR_HOST`.

use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use crate::auth::{endpoint_and_auth, GoogleAuth};
use crate::error::{Error, Result};
use crate::options::{Options, StateLocation};

/// One check's verdict.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// What to do about it (a command), when not ok.
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DoctorReport {
    pub checks: Vec<Check>,
}

impl DoctorReport {
    pub fn failed(&self) -> usize {
        self.checks.iter().filter(|c| !c.ok).count()
    }

    fn pass(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.checks.push(Check {
            name: name.into(),
            ok: true,
            detail: detail.into(),
            fix: None,
        });
    }

    fn fail(&mut self, name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) {
        self.checks.push(Check {
            name: name.into(),
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        });
    }
}

/// The report, one line per check (and the fix under a failed one).
pub fn render(report: &DoctorReport) -> String {
    let mut out = String::new();
    for check in &report.checks {
        let mark = if check.ok { "ok  " } else { "FAIL" };
        out.push_str(&format!("{mark} {}: {}\n", check.name, check.detail));
        if let Some(fix) = &check.fix {
            out.push_str(&format!("     fix: {fix}\n"));
        }
    }
    let failed = report.failed();
    if failed == 0 {
        out.push_str(&format!("All {} checks passed.", report.checks.len()));
    } else {
        out.push_str(&format!(
            "{failed} of {} checks failed: fix them, then run sts-doctor again.",
            report.checks.len()
        ));
    }
    out
}

/// What the agent needs on each bucket (STS's documented grants), and the
/// permissions the predefined Cloud Storage roles hold of those. IAM's role
/// definitions are not in any discovery document; these are the published
/// contents of the predefined roles, for the few permissions that matter.
const SOURCE_NEEDS: &[&str] = &[
    "storage.buckets.get",
    "storage.objects.list",
    "storage.objects.get",
];
/// With `--move` STS also deletes each source object once copied.
const MOVED_SOURCE_NEEDS: &[&str] = &[
    "storage.buckets.get",
    "storage.objects.list",
    "storage.objects.get",
    "storage.objects.delete",
];
const SINK_NEEDS: &[&str] = &[
    "storage.buckets.get",
    "storage.objects.list",
    "storage.objects.create",
    "storage.objects.delete",
];

fn role_permissions(role: &str) -> &'static [&'static str] {
    match role {
        "roles/storage.admin" | "roles/owner" | "roles/editor" => &[
            "storage.buckets.get",
            "storage.objects.list",
            "storage.objects.get",
            "storage.objects.create",
            "storage.objects.delete",
        ],
        "roles/storage.objectAdmin" | "roles/storage.objectUser" => &[
            "storage.objects.list",
            "storage.objects.get",
            "storage.objects.create",
            "storage.objects.delete",
        ],
        "roles/storage.objectViewer" => &["storage.objects.list", "storage.objects.get"],
        "roles/storage.objectCreator" => &["storage.objects.create"],
        "roles/storage.legacyBucketReader" => &["storage.buckets.get", "storage.objects.list"],
        "roles/storage.legacyBucketWriter" => &[
            "storage.buckets.get",
            "storage.objects.list",
            "storage.objects.create",
            "storage.objects.delete",
        ],
        "roles/storage.legacyBucketOwner" => &[
            "storage.buckets.get",
            "storage.objects.list",
            "storage.objects.create",
            "storage.objects.delete",
        ],
        "roles/storage.legacyObjectReader" | "roles/storage.legacyObjectOwner" => {
            &["storage.objects.get"]
        }
        _ => &[],
    }
}

/// The permissions of `needs` that `member` lacks under `policy` (a bucket
/// IAM policy as `buckets.getIamPolicy` answers it). Pure.
pub fn missing_permissions(policy: &Value, member: &str, needs: &[&str]) -> Vec<String> {
    let granted: Vec<&str> = policy["bindings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| {
            b["members"]
                .as_array()
                .is_some_and(|m| m.iter().any(|x| x.as_str() == Some(member)))
        })
        .filter_map(|b| b["role"].as_str())
        .flat_map(|role| role_permissions(role).iter().copied())
        .collect();
    needs
        .iter()
        .filter(|p| !granted.contains(p))
        .map(|p| p.to_string())
        .collect()
}

/// Permissions the caller needs on the project: to run the manager and the
/// tools (STS), and the state when it is in BigQuery.
const CALLER_STS: &[&str] = &[
    "storagetransfer.jobs.create",
    "storagetransfer.jobs.get",
    "storagetransfer.jobs.list",
    "storagetransfer.jobs.update",
    "storagetransfer.jobs.run",
    "storagetransfer.operations.get",
    "storagetransfer.operations.list",
    "storagetransfer.operations.pause",
    "storagetransfer.operations.resume",
    // Failed objects, read from STS's transfer logs.
    "logging.logEntries.list",
];
const CALLER_BIGQUERY: &[&str] = &["bigquery.jobs.create", "bigquery.datasets.get"];
const CALLER_BUCKET: &[&str] = &["storage.buckets.get", "storage.objects.list"];

struct Api {
    endpoint: String,
    auth: GoogleAuth,
}

struct Doctor {
    http: reqwest::Client,
}

/// A failed call: the HTTP status (0: no answer) and what was said.
struct CallError {
    status: u16,
    message: String,
}

impl Doctor {
    async fn call(
        &self,
        api: &Api,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> std::result::Result<Value, CallError> {
        let mut request = self.http.request(method, format!("{}{url}", api.endpoint));
        if let Some(body) = body {
            request = request.json(body);
        }
        match api.auth.authorization().await {
            Ok(Some(header)) => request = request.header(reqwest::header::AUTHORIZATION, header),
            Ok(None) => {}
            Err(e) => {
                return Err(CallError {
                    status: 0,
                    message: format!("credentials: {e}"),
                })
            }
        }
        let response = request.send().await.map_err(|e| CallError {
            status: 0,
            message: e.without_url().to_string(),
        })?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(parsed);
        }
        let message = parsed["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| text.chars().take(200).collect());
        Err(CallError { status, message })
    }
}

fn api(variable: &str, google: &str, mount: &str) -> Result<Api> {
    let (endpoint, auth) =
        endpoint_and_auth(variable, google).map_err(|e| Error::Input(e.to_string()))?;
    let emulated = std::env::var(variable).is_ok_and(|v| !v.is_empty());
    let endpoint = if emulated {
        format!("{endpoint}{mount}")
    } else {
        endpoint
    };
    Ok(Api { endpoint, auth })
}

/// The project's transfer jobs between two buckets, page by page (a
/// repeated page token ends the listing with an error, never a loop). The
/// bucket keys narrow the listing where STS honours them; the caller checks
/// the buckets itself.
async fn list_jobs(
    doctor: &Doctor,
    sts: &Api,
    project: &str,
    options: &Options,
) -> std::result::Result<Vec<Value>, CallError> {
    let filter = json!({
        "projectId": project,
        "sourceBucket": options.source_bucket,
        "sinkBucket": options.destination_bucket,
    });
    let filter = segment(&filter.to_string());
    let (mut jobs, mut seen, mut token) =
        (Vec::new(), std::collections::HashSet::new(), String::new());
    loop {
        let mut url = format!("/v1/transferJobs?filter={filter}&pageSize=256");
        if !token.is_empty() {
            url.push_str(&format!("&pageToken={}", segment(&token)));
        }
        let mut page = doctor.call(sts, reqwest::Method::GET, &url, None).await?;
        if let Some(Value::Array(found)) = page.get_mut("transferJobs").map(Value::take) {
            jobs.extend(found);
        }
        token = page["nextPageToken"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if token.is_empty() {
            return Ok(jobs);
        }
        if !seen.insert(token.clone()) {
            return Err(CallError {
                status: 0,
                message: format!("transferJobs.list returned page token '{token}' twice"),
            });
        }
    }
}

/// The permissions of `wanted` a testIamPermissions answer does not hold.
fn not_held<'a>(answer: &Value, wanted: &[&'a str]) -> Vec<&'a str> {
    let held: Vec<&str> = answer["permissions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    wanted
        .iter()
        .copied()
        .filter(|p| !held.contains(p))
        .collect()
}

fn segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Runs every check; never changes anything.
pub async fn run(options: &Options) -> Result<DoctorReport> {
    let project = crate::settings::project_id(options)?;
    let doctor = Doctor {
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Input(format!("HTTP client: {e}")))?,
    };
    const STS_VAR: &str = "STORAGE_TRANSFER_EMULATOR_HOST";
    let usage = api(
        STS_VAR,
        "https://serviceusage.googleapis.com",
        "/serviceusage",
    )?;
    let manager = api(
        STS_VAR,
        "https://cloudresourcemanager.googleapis.com",
        "/cloudresourcemanager",
    )?;
    let sts = api(STS_VAR, "https://storagetransfer.googleapis.com", "")?;
    let storage = api(
        "STORAGE_EMULATOR_HOST",
        "https://storage.googleapis.com",
        "",
    )?;
    let bigquery_state = matches!(options.state_location()?, StateLocation::BigQuery);
    let mut report = DoctorReport::default();

    // 0. Credentials: without a token every other check fails the same way.
    if let Err(e) = sts.auth.authorization().await {
        report.fail(
            "credentials",
            e.to_string(),
            "gcloud auth application-default login (or set GOOGLE_APPLICATION_CREDENTIALS to a key file)",
        );
        return Ok(report);
    }

    // 1. The APIs the options use are enabled.
    let mut services = vec!["storagetransfer.googleapis.com", "storage.googleapis.com"];
    if bigquery_state {
        services.push("bigquery.googleapis.com");
    }
    if options.publish_heartbeat {
        services.push("monitoring.googleapis.com");
    }
    // The manager reads failed objects from Cloud Logging (unless
    // --no-object-logs, which is the manager's option, not the doctor's).
    services.push("logging.googleapis.com");
    for service in services {
        let name = format!("API {service}");
        let url = format!("/v1/projects/{}/services/{service}", segment(&project));
        match doctor.call(&usage, reqwest::Method::GET, &url, None).await {
            Ok(state) if state["state"] == "ENABLED" => report.pass(name, "enabled"),
            Ok(state) => report.fail(
                name,
                format!("state {}", state["state"]),
                format!("gcloud services enable {service} --project {project}"),
            ),
            Err(e) => report.fail(
                name,
                format!("cannot read its state (HTTP {}): {}", e.status, e.message),
                format!(
                    "gcloud services enable {service} --project {project} (reading it needs serviceusage.services.get)"
                ),
            ),
        }
    }

    // 2. The STS service agent.
    let url = format!("/v1/googleServiceAccounts/{}", segment(&project));
    let agent = match doctor.call(&sts, reqwest::Method::GET, &url, None).await {
        Ok(found) => match found["accountEmail"].as_str() {
            Some(email) => {
                report.pass("STS service agent", email);
                Some(email.to_string())
            }
            None => {
                report.fail(
                    "STS service agent",
                    "googleServiceAccounts.get named no account",
                    format!("gcloud transfer authorize --add-missing --project {project}"),
                );
                None
            }
        },
        Err(e) => {
            report.fail(
                "STS service agent",
                format!("googleServiceAccounts.get answered HTTP {}: {}", e.status, e.message),
                format!(
                    "gcloud services enable storagetransfer.googleapis.com --project {project} && gcloud transfer authorize --add-missing --project {project}"
                ),
            );
            None
        }
    };

    // 3. The agent's roles on both buckets, and 4. the caller's access.
    let (source_needs, source_role) = if options.r#move {
        (MOVED_SOURCE_NEEDS, "roles/storage.objectAdmin")
    } else {
        (SOURCE_NEEDS, "roles/storage.objectViewer")
    };
    for (option, bucket, needs, role) in [
        ("source", &options.source_bucket, source_needs, source_role),
        (
            "destination",
            &options.destination_bucket,
            SINK_NEEDS,
            "roles/storage.objectAdmin",
        ),
    ] {
        let name = format!("agent on gs://{bucket} ({option})");
        let url = format!("/storage/v1/b/{}/iam", segment(bucket));
        match (&agent, doctor.call(&storage, reqwest::Method::GET, &url, None).await) {
            (None, _) => report.fail(name, "no service agent to check", "fix the service agent first"),
            (Some(email), Ok(policy)) => {
                let member = format!("serviceAccount:{email}");
                let missing = missing_permissions(&policy, &member, needs);
                let grant = format!(
                    "gcloud storage buckets add-iam-policy-binding gs://{bucket} --member={member} --role={role} && \
                     gcloud storage buckets add-iam-policy-binding gs://{bucket} --member={member} --role=roles/storage.legacyBucketReader"
                );
                if missing.is_empty() {
                    report.pass(name, "granted what STS needs");
                } else {
                    report.fail(name, format!("lacks {}", missing.join(", ")), grant);
                }
            }
            (Some(_), Err(e)) => report.fail(
                name,
                format!("cannot read the bucket's IAM policy (HTTP {}): {}", e.status, e.message),
                if e.status == 404 {
                    format!("check the bucket name, or create it: gcloud storage buckets create gs://{bucket} --project {project}")
                } else {
                    format!("ask for storage.buckets.getIamPolicy on gs://{bucket} (roles/storage.admin), then run sts-doctor again")
                },
            ),
        }
        let query: String = CALLER_BUCKET
            .iter()
            .map(|p| format!("permissions={p}"))
            .collect::<Vec<_>>()
            .join("&");
        let url = format!(
            "/storage/v1/b/{}/iam/testPermissions?{query}",
            segment(bucket)
        );
        let name = format!("you on gs://{bucket} ({option})");
        match doctor
            .call(&storage, reqwest::Method::GET, &url, None)
            .await
        {
            Ok(answer) => {
                let missing = not_held(&answer, CALLER_BUCKET);
                if missing.is_empty() {
                    report.pass(name, "can list it (sts-plan, sts-verify)");
                } else {
                    report.fail(
                        name,
                        format!("lacks {}", missing.join(", ")),
                        format!(
                            "gcloud storage buckets add-iam-policy-binding gs://{bucket} --member=user:YOU --role=roles/storage.objectViewer"
                        ),
                    );
                }
            }
            Err(e) => report.fail(
                name,
                format!("cannot test permissions (HTTP {}): {}", e.status, e.message),
                format!("check the bucket name gs://{bucket} and your credentials"),
            ),
        }
    }

    // 4. The caller's permissions on the project.
    let mut wanted: Vec<&str> = CALLER_STS.to_vec();
    if bigquery_state {
        wanted.extend(CALLER_BIGQUERY);
    }
    let url = format!("/v1/projects/{}:testIamPermissions", segment(&project));
    let body = json!({ "permissions": wanted });
    match doctor
        .call(&manager, reqwest::Method::POST, &url, Some(&body))
        .await
    {
        Ok(answer) => {
            let missing = not_held(&answer, &wanted);
            if missing.is_empty() {
                report.pass("you on the project", "may run transfers and the state");
            } else {
                // The role that grants each missing permission, once each.
                let mut roles: Vec<&str> = missing
                    .iter()
                    .map(|p| {
                        if p.starts_with("bigquery.") {
                            "roles/bigquery.user"
                        } else if p.starts_with("logging.") {
                            "roles/logging.viewer"
                        } else {
                            "roles/storagetransfer.user"
                        }
                    })
                    .collect();
                roles.sort();
                roles.dedup();
                let fix = roles
                    .iter()
                    .map(|role| format!("gcloud projects add-iam-policy-binding {project} --member=user:YOU --role={role}"))
                    .collect::<Vec<_>>()
                    .join(" && ");
                report.fail(
                    "you on the project",
                    format!("lacks {}", missing.join(", ")),
                    fix,
                );
            }
        }
        Err(e) => report.fail(
            "you on the project",
            format!("cannot test permissions (HTTP {}): {}", e.status, e.message),
            format!(
                "gcloud services enable cloudresourcemanager.googleapis.com --project {project}"
            ),
        ),
    }

    // 5. The dataset and its location, for BigQuery state.
    if bigquery_state {
        let bigquery = api(
            "BIGQUERY_EMULATOR_HOST",
            "https://bigquery.googleapis.com",
            "",
        )?;
        let name = format!("dataset {}", options.dataset);
        let url = format!(
            "/bigquery/v2/projects/{}/datasets/{}",
            segment(&project),
            segment(&options.dataset)
        );
        match doctor.call(&bigquery, reqwest::Method::GET, &url, None).await {
            Ok(dataset) => {
                let location = dataset["location"].as_str().unwrap_or("unknown");
                if location.eq_ignore_ascii_case(&options.dataset_location) {
                    report.pass(name, format!("exists, in {location}"));
                } else {
                    report.fail(
                        name,
                        format!("is in {location}, not {} (--dataset-location)", options.dataset_location),
                        format!("pass --dataset-location {location}, or use another --dataset"),
                    );
                }
            }
            Err(e) if e.status == 404 => report.fail(
                name,
                "does not exist",
                format!(
                    "sts-prepare-tables --state bigquery --project {project} --dataset {} --dataset-location {}",
                    options.dataset, options.dataset_location
                ),
            ),
            Err(e) => report.fail(
                name,
                format!("cannot read it (HTTP {}): {}", e.status, e.message),
                format!("gcloud projects add-iam-policy-binding {project} --member=user:YOU --role=roles/bigquery.user"),
            ),
        }
    }

    // 6. Reusable jobs on these buckets: another migration's, or ours with
    // someone else's schedule.
    let our_pool = crate::transfer::pool_job_prefix(
        &options.source_bucket,
        &options.destination_bucket,
        &crate::settings::migration_key(options),
    );
    match list_jobs(&doctor, &sts, &project, options).await {
        Ok(jobs) => {
            let on_buckets = |j: &&Value| {
                j["name"].as_str().is_some_and(crate::transfer::is_pool_job)
                    && j["transferSpec"]["gcsDataSource"]["bucketName"] == options.source_bucket.as_str()
                    && j["transferSpec"]["gcsDataSink"]["bucketName"] == options.destination_bucket.as_str()
                    && j["status"] != "DELETED"
            };
            let pool: Vec<&Value> = jobs.iter().filter(on_buckets).collect();
            let name = |j: &&Value| j["name"].as_str().unwrap_or_default().to_string();
            let others: Vec<String> = pool
                .iter()
                .filter(|j| !name(j).starts_with(&our_pool))
                .map(name)
                .collect();
            let scheduled: Vec<String> = pool
                .iter()
                .filter(|j| name(j).starts_with(&our_pool))
                .filter(|j| j["schedule"]["scheduleStartDate"].is_object())
                .map(name)
                .collect();
            if !others.is_empty() {
                report.fail(
                    "reusable jobs",
                    format!(
                        "{} reusable jobs of another migration (another job table) run between these buckets (first: {}); this one will not touch them",
                        others.len(),
                        others[0]
                    ),
                    "make sure the two job tables hold no common or overlapping prefix (sts-status on each), or run one migration from one table",
                );
            } else if !scheduled.is_empty() {
                report.fail(
                    "reusable jobs",
                    format!(
                        "{} of this migration's reusable jobs carry a schedule this manager never sets (first: {})",
                        scheduled.len(),
                        scheduled[0]
                    ),
                    format!("look at who changed it: gcloud transfer jobs describe {} --project {project}", scheduled[0]),
                );
            } else {
                report.pass(
                    "reusable jobs",
                    format!("{} of this migration on these buckets, none of another", pool.len()),
                );
            }
        }
        Err(e) => report.fail(
            "reusable jobs",
            format!("cannot list transfer jobs (HTTP {}): {}", e.status, e.message),
            format!("gcloud projects add-iam-policy-binding {project} --member=user:YOU --role=roles/storagetransfer.user"),
        ),
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_grants_are_read_as_permissions() {
        let agent = "serviceAccount:a@x";
        let policy = json!({ "bindings": [
            { "role": "roles/storage.objectViewer", "members": [agent] },
            { "role": "roles/storage.legacyBucketReader", "members": ["user:b@x", agent] },
            { "role": "roles/storage.admin", "members": ["user:b@x"] },
        ]});
        assert!(missing_permissions(&policy, agent, SOURCE_NEEDS).is_empty());
        assert_eq!(
            missing_permissions(&policy, agent, SINK_NEEDS),
            ["storage.objects.create", "storage.objects.delete"]
        );
        assert_eq!(
            missing_permissions(&json!({}), agent, SOURCE_NEEDS).len(),
            3
        );
    }

    #[test]
    fn the_report_names_each_failure_and_its_fix() {
        let mut report = DoctorReport::default();
        report.pass("a", "fine");
        report.fail("b", "broken", "gcloud fix b");
        let text = render(&report);
        assert!(text.contains("ok   a: fine"));
        assert!(text.contains("FAIL b: broken\n     fix: gcloud fix b"));
        assert!(text.ends_with("1 of 2 checks failed: fix them, then run sts-doctor again."));
        assert_eq!(report.failed(), 1);
    }
}
