//! The STS v1 REST methods of STS_API.md over the local engine, with
//! Google's encodings: enums as names or numbers, camelCase or snake_case
//! keys, int64 as strings, Operation envelopes, google.rpc error bodies.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::model::{JobStatus, OperationStatus, TransferJob, TransferOperation};
use crate::transfer::local::LocalEngine;
use crate::transfer::wire::{camel_case_keys, operation_envelope, MAX_PAGE_SIZE};
use crate::transfer::{glob_match, JobFilter, OperationFilter, TransferError, TransferService};

/// An HTTP answer: status and JSON body.
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    pub(crate) fn ok(body: Value) -> Reply {
        Reply { status: 200, body }
    }

    pub fn error(status: u16, message: impl Into<String>) -> Reply {
        let name = crate::transfer::wire::status_name(status);
        Reply {
            status,
            body: crate::transfer::wire::error_body(status, name, &message.into()),
        }
    }
}

impl From<TransferError> for Reply {
    fn from(error: TransferError) -> Reply {
        match error {
            TransferError::AlreadyExists(m) => Reply::error(409, format!("{m} already exists")),
            TransferError::NotFound(m) => Reply::error(404, format!("{m} not found")),
            TransferError::InvalidArgument(m) => Reply::error(400, m),
            TransferError::PermissionDenied(m) => Reply::error(403, m),
            TransferError::FailedPrecondition(m) => Reply {
                status: 400,
                body: crate::transfer::wire::error_body(400, "FAILED_PRECONDITION", &m),
            },
            TransferError::Api {
                http,
                status,
                message,
            } => Reply {
                status: http,
                body: crate::transfer::wire::error_body(http, &status, &message),
            },
            other => Reply::error(500, other.to_string()),
        }
    }
}

type Query = HashMap<String, String>;

fn bad(message: impl Into<String>) -> Reply {
    Reply::error(400, message)
}

fn parse_json(text: &str, what: &str) -> Result<Value, Reply> {
    if text.trim().is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_str(text)
        .map(camel_case_keys)
        .map_err(|e| bad(format!("{what} is not valid JSON: {e}")))
}

fn filter_of(query: &Query) -> Result<Value, Reply> {
    let text = query
        .get("filter")
        .ok_or_else(|| bad("filter is required"))?;
    let filter = parse_json(text, "filter")?;
    if !filter.is_object() {
        return Err(bad("filter must be a JSON object"));
    }
    Ok(filter)
}

fn project_of(filter: &Value) -> Result<String, Reply> {
    match filter.get("projectId").and_then(Value::as_str) {
        Some(p) if !p.is_empty() => Ok(p.to_string()),
        _ => Err(bad("projectId is required")),
    }
}

fn strings(filter: &Value, key: &str) -> Vec<String> {
    filter
        .get(key)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn enums<T>(
    filter: &Value,
    key: &str,
    parse: impl Fn(&Value) -> Option<T>,
) -> Result<Vec<T>, Reply> {
    let Some(items) = filter.get(key) else {
        return Ok(vec![]);
    };
    let items = items
        .as_array()
        .ok_or_else(|| bad(format!("{key} must be a list")))?;
    items
        .iter()
        .map(|v| parse(v).ok_or_else(|| bad(format!("{key}: unknown value {v}"))))
        .collect()
}

fn operation_status(value: &Value) -> Option<OperationStatus> {
    let status: OperationStatus = serde_json::from_value(value.clone()).ok()?;
    (!matches!(status, OperationStatus::Unknown(_))).then_some(status)
}

fn job_status(value: &Value) -> Option<JobStatus> {
    let status: JobStatus = serde_json::from_value(value.clone()).ok()?;
    (status != JobStatus::Unspecified).then_some(status)
}

/// `pageSize`: 0 or missing is the maximum.
fn page_size(query: &Query) -> Result<usize, Reply> {
    match query.get("pageSize").map(|s| s.parse::<usize>()) {
        None => Ok(MAX_PAGE_SIZE),
        Some(Ok(0)) => Ok(MAX_PAGE_SIZE),
        Some(Ok(n)) => Ok(n.min(MAX_PAGE_SIZE)),
        Some(Err(_)) => Err(bad("pageSize must be a number")),
    }
}

/// `pageSize` and `pageToken` (an offset into a listing made whole).
fn page_bounds(query: &Query) -> Result<(usize, usize), Reply> {
    let size = page_size(query)?;
    let start = match query.get("pageToken").filter(|t| !t.is_empty()) {
        None => 0,
        Some(token) => token
            .parse::<usize>()
            .map_err(|_| bad("invalid pageToken"))?,
    };
    Ok((size, start))
}

fn page<T>(items: Vec<T>, query: &Query) -> Result<(Vec<T>, Option<String>), Reply> {
    let (size, start) = page_bounds(query)?;
    let total = items.len();
    let chosen: Vec<T> = items.into_iter().skip(start).take(size).collect();
    let next = (start + size < total).then(|| (start + size).to_string());
    Ok((chosen, next))
}

fn time_bound(filter: &Value, key: &str) -> Result<Option<DateTime<Utc>>, Reply> {
    filter
        .get(key)
        .and_then(Value::as_str)
        .map(|t| DateTime::parse_from_rfc3339(t).map(|t| t.with_timezone(&Utc)))
        .transpose()
        .map_err(|e| bad(format!("{key}: {e}")))
}

/// A fresh numeric job id, as STS gives when the client chooses none.
fn generated_job_name() -> String {
    let nanos = Utc::now()
        .timestamp_nanos_opt()
        .unwrap_or_default()
        .unsigned_abs();
    format!("transferJobs/{}", nanos % 10_000_000_000_000_000_000)
}

pub async fn route(
    engine: &LocalEngine,
    faults: &super::ApiFaults,
    method: &str,
    path: &str,
    query: &Query,
    body: &str,
) -> Reply {
    match dispatch(engine, faults, method, path, query, body).await {
        Ok(reply) | Err(reply) => reply,
    }
}

async fn dispatch(
    engine: &LocalEngine,
    faults: &super::ApiFaults,
    method: &str,
    path: &str,
    query: &Query,
    body: &str,
) -> Result<Reply, Reply> {
    let Some(resource) = path.strip_prefix("/v1/") else {
        return Err(Reply::error(404, format!("no such path {path}")));
    };
    let (resource, action) = match resource.rsplit_once(':') {
        Some((r, a)) => (r, Some(a)),
        None => (resource, None),
    };
    let segments: Vec<&str> = resource.split('/').collect();
    match (method, segments.as_slice(), action) {
        ("POST", ["transferJobs"], None) => create_job(engine, body).await,
        ("GET", ["transferJobs"], None) => list_jobs(engine, query, faults).await,
        ("GET", ["transferJobs", _], None) => {
            let project = query
                .get("projectId")
                .ok_or_else(|| bad("projectId is required"))?;
            Ok(Reply::ok(to_json(&engine.get_job(resource, project)?)?))
        }
        ("PATCH", ["transferJobs", _], None) => patch_job(engine, resource, body),
        ("DELETE", ["transferJobs", _], None) => {
            let project = query
                .get("projectId")
                .ok_or_else(|| bad("projectId is required"))?;
            engine.patch_job(resource, project, Some(JobStatus::Deleted), None)?;
            Ok(Reply::ok(json!({})))
        }
        ("POST", ["transferJobs", _], Some("run")) => {
            let request = parse_json(body, "body")?;
            let project = project_of(&request)?;
            let operation = engine.run_job_operation(resource, &project)?;
            Ok(Reply::ok(operation_envelope(
                &engine.get_operation(&operation)?,
            )))
        }
        ("GET", ["transferOperations"], None) => list_operations(engine, query).await,
        ("GET", ["transferOperations", _], None) => Ok(Reply::ok(operation_envelope(
            &engine.get_operation(resource)?,
        ))),
        ("POST", ["transferOperations", _], Some(verb @ ("pause" | "resume" | "cancel"))) => {
            match verb {
                "pause" => engine.pause_operation(resource).await?,
                "resume" => engine.resume_operation(resource).await?,
                _ => engine.cancel_operation(resource).await?,
            }
            Ok(Reply::ok(json!({})))
        }
        ("GET", ["googleServiceAccounts", project], None) => Ok(Reply::ok(json!({
            "accountEmail": crate::transfer::default_service_account(project),
            "subjectId": "100000000000000000000",
        }))),
        _ => Err(Reply::error(404, format!("no method {method} {path}"))),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Value, Reply> {
    serde_json::to_value(value).map_err(|e| Reply::error(500, e.to_string()))
}

async fn create_job(engine: &LocalEngine, body: &str) -> Result<Reply, Reply> {
    let request = parse_json(body, "TransferJob")?;
    let mut job: TransferJob =
        serde_json::from_value(request).map_err(|e| bad(format!("TransferJob: {e}")))?;
    if job.status == JobStatus::Unspecified {
        return Err(bad("status is required"));
    }
    if job.name.is_empty() {
        job.name = generated_job_name();
    }
    Ok(Reply::ok(to_json(&engine.create_job(&job).await?)?))
}

async fn list_jobs(
    engine: &LocalEngine,
    query: &Query,
    faults: &super::ApiFaults,
) -> Result<Reply, Reply> {
    let filter = filter_of(query)?;
    let project_id = project_of(&filter)?;
    let statuses = enums(&filter, "jobStatuses", job_status)?;
    let names = strings(&filter, "jobNames");
    // `ignore_bucket_filter`: the bucket keys narrow nothing (they are
    // documented with dataBackend QUERY_REPLICATION_CONFIGS).
    let by_bucket = |key: &str| {
        filter
            .get(key)
            .and_then(Value::as_str)
            .filter(|_| !faults.ignore_bucket_filter)
    };
    let (source, sink) = (by_bucket("sourceBucket"), by_bucket("sinkBucket"));
    let jobs: Vec<TransferJob> = engine
        .list_jobs(&JobFilter {
            project_id,
            statuses,
            ..JobFilter::default()
        })
        .await?
        .into_iter()
        .filter(|j| names.is_empty() || names.contains(&j.name))
        .filter(|j| source.is_none_or(|s| j.transfer_spec.source_bucket() == Some(s)))
        .filter(|j| sink.is_none_or(|s| j.transfer_spec.sink_bucket() == Some(s)))
        .collect();
    let (jobs, next) = page(jobs, query)?;
    let mut reply = json!({ "transferJobs": to_json(&jobs)? });
    if let Some(next) = next {
        reply["nextPageToken"] = json!(next);
    }
    Ok(Reply::ok(reply))
}

fn patch_job(engine: &LocalEngine, name: &str, body: &str) -> Result<Reply, Reply> {
    let request = parse_json(body, "body")?;
    let project = project_of(&request)?;
    let update = request.get("transferJob").cloned().unwrap_or(json!({}));
    let mask = request
        .get("updateTransferJobFieldMask")
        .and_then(Value::as_str)
        .unwrap_or("");
    let fields: Vec<String> = mask
        .split(',')
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .collect();
    if fields.is_empty() {
        return Err(bad("updateTransferJobFieldMask is required"));
    }
    let mut status = None;
    let mut description = None;
    let mut spec = None;
    let mut logging = None;
    for field in &fields {
        match field.as_str() {
            "logging_config" | "loggingConfig" => {
                logging = Some(match update.get("loggingConfig") {
                    None | Some(Value::Null) => None,
                    Some(value) => Some(
                        serde_json::from_value::<crate::model::LoggingConfig>(value.clone())
                            .map_err(|e| bad(format!("loggingConfig: {e}")))?,
                    ),
                });
            }
            "transfer_spec" | "transferSpec" => {
                let value = update
                    .get("transferSpec")
                    .cloned()
                    .ok_or_else(|| bad("transferJob.transferSpec is missing"))?;
                spec = Some(
                    serde_json::from_value::<crate::model::TransferSpec>(value)
                        .map_err(|e| bad(format!("transferSpec: {e}")))?,
                );
            }
            "status" => {
                status = Some(
                    update
                        .get("status")
                        .and_then(job_status)
                        .ok_or_else(|| bad("transferJob.status is missing or unknown"))?,
                )
            }
            "description" => {
                description = Some(
                    update
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                )
            }
            other => return Err(bad(format!("the emulator cannot update field '{other}'"))),
        }
    }
    if let Some(spec) = &spec {
        engine.patch_job_spec(name, &project, spec, logging.take())?;
    }
    if let Some(logging) = logging {
        engine.patch_job_logging(name, &project, logging)?;
    }
    if status.is_none() && description.is_none() {
        return Ok(Reply::ok(to_json(&engine.get_job(name, &project)?)?));
    }
    Ok(Reply::ok(to_json(&engine.patch_job(
        name,
        &project,
        status,
        description.as_deref(),
    )?)?))
}

async fn list_operations(engine: &LocalEngine, query: &Query) -> Result<Reply, Reply> {
    // GAPIC clients put the name in the path (/v1/{name=transferOperations}),
    // the discovery client in the query: either is fine, a wrong one is not.
    if query.get("name").is_some_and(|n| n != "transferOperations") {
        return Err(bad("name must be 'transferOperations'"));
    }
    let filter = filter_of(query)?;
    let project_id = project_of(&filter)?;
    let statuses = enums(&filter, "transferStatuses", operation_status)?;
    let op_names = strings(&filter, "operationNames");
    let op_pattern = filter.get("operationNamePattern").and_then(Value::as_str);
    let (min_time, max_time) = (
        time_bound(&filter, "minCreationTime")?,
        time_bound(&filter, "maxCreationTime")?,
    );
    let engine_filter = OperationFilter {
        project_id,
        // Looked up by name and judged by creation time in the engine.
        operation_names: op_names,
        min_creation_time: min_time,
        job_names: strings(&filter, "jobNames"),
        job_name_pattern: filter
            .get("jobNamePattern")
            .and_then(Value::as_str)
            .map(str::to_owned),
        statuses,
        limit: None,
    };
    let engine_filters_all = op_pattern.is_none() && max_time.is_none();
    let (operations, next) = if engine_filters_all {
        // The engine applies every filter asked: let it page, decoding one
        // page; the token is its cursor.
        let size = page_size(query)?;
        let cursor = match query.get("pageToken").filter(|t| !t.is_empty()) {
            None => None,
            Some(token) => Some(token.parse::<i64>().map_err(|_| bad("invalid pageToken"))?),
        };
        let (operations, next) = engine.list_operations_page(&engine_filter, cursor, size)?;
        (operations, next.map(|n| n.to_string()))
    } else {
        let operations: Vec<TransferOperation> = engine
            .list_operations(&engine_filter)
            .await?
            .into_iter()
            .filter(|op| op_pattern.is_none_or(|p| glob_match(p, &op.name)))
            .filter(|op| max_time.is_none_or(|t| op.start_time.is_some_and(|s| s <= t)))
            .collect();
        page(operations, query)?
    };
    let mut reply =
        json!({ "operations": operations.iter().map(operation_envelope).collect::<Vec<_>>() });
    if let Some(next) = next {
        reply["nextPageToken"] = json!(next);
    }
    Ok(Reply::ok(reply))
}
