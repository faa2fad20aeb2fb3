//! `sts-emulator`: Google's STS v1 REST API on 127.0.0.1, over the local
//! engine, with fault injection. A control endpoint (`/_emulator/faults`)
//! changes faults while it runs.

mod credentials;
mod faults;
mod logging;
mod routes;
mod server;
mod storage;
pub mod strict;

pub use server::serve;
use server::*;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;

pub use faults::{write_engine_faults, ApiFaults};
use routes::Reply;

use crate::transfer::local::{LocalEngine, Mode};
use crate::transfer::TransferError;

#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Bind { port: u16, source: std::io::Error },
    #[error(transparent)]
    Engine(#[from] TransferError),
}

struct Emulator {
    root: PathBuf,
    engine: LocalEngine,
    /// The same directories as Cloud Storage buckets (JSON API).
    buckets: crate::storage::local::LocalBuckets,
    api_faults: Mutex<ApiFaults>,
    /// Requests seen, for `GET /_emulator/stats` (API-call figures).
    requests: AtomicU64,
    /// Requests considered for fault injection.
    fault_draws: AtomicU64,
    /// Calls per quota group: (times in the last minute, count in the day).
    usage: Mutex<HashMap<&'static str, (std::collections::VecDeque<std::time::Instant>, u64)>>,
    /// Who called, for `GET /_emulator/stats`: `anonymous`, the `iss` of a
    /// bearer JWT (a service account's self-signed token), or `bearer` for
    /// an opaque token. Tokens themselves are never kept or logged.
    callers: Mutex<std::collections::BTreeMap<String, u64>>,
    /// Keys, refresh tokens and issued tokens, once a test asks for
    /// credentials to be checked (`credentials.rs`).
    credentials: Mutex<credentials::Credentials>,
    /// Google's discovery documents of the APIs served (strict mode).
    apis: Vec<strict::Api>,
    /// Requests checked against them, and what they refused.
    checked: AtomicU64,
    violation_count: AtomicU64,
    violations: Mutex<Vec<String>>,
    /// Projects whose STS service agent was asked for (their agents hold
    /// the bucket roles `sts-doctor` reads).
    agents: Mutex<std::collections::BTreeSet<String>>,
    /// Cloud Monitoring stand-in: each series' last write, and the writes.
    series: Mutex<HashMap<String, std::time::Instant>>,
    time_series: Mutex<Vec<Value>>,
    /// Requests admitted, by the discovery document's method id.
    methods: Mutex<std::collections::BTreeMap<String, u64>>,
    /// Forwards BigQuery requests (strict mode in front of bqemulator).
    http: reqwest::Client,
}

/// Violations kept for `/_emulator/stats` (the count goes on past it).
const VIOLATIONS_KEPT: usize = 200;

/// The STS quota group a request counts against (STS_API.md): `run` is in
/// none; every patch (the status patch that deletes a job too) is an
/// update; only `transferJobs.delete` is a delete.
fn quota_group(method: &str, path: &str) -> Option<&'static str> {
    let resource = path.strip_prefix("/v1/")?;
    match (method, resource) {
        ("POST", "transferJobs") => Some("create"),
        ("GET", _) => Some("read"),
        ("POST", r) if r.ends_with(":run") => None,
        ("DELETE", _) => Some("delete"),
        ("PATCH", _) => Some("update"),
        ("POST", r) if r.starts_with("transferOperations/") => Some("control"),
        _ => None,
    }
}

/// Now on the emulator's clock, in Unix seconds.
/// (`clock_offset_seconds`, the engine's fault: STS's clock is Google's).
fn service_now(root: &Path) -> i64 {
    let offset =
        crate::transfer::local::Faults::load(&root.join(crate::transfer::local::ENGINE_DIR))
            .clock_offset_seconds
            .clamp(-86_400 * 365, 86_400 * 365);
    chrono::Utc::now().timestamp() + offset
}

/// The caller an `Authorization` header names (see `Emulator::callers`).
pub fn caller_of(authorization: Option<&str>) -> String {
    let Some(token) = authorization.and_then(|a| a.strip_prefix("Bearer ")) else {
        return "anonymous".into();
    };
    let mut parts = token.split('.');
    let issuer = match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(payload), Some(_)) => base64url(payload)
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .and_then(|claims| claims.get("iss")?.as_str().map(str::to_owned)),
        _ => None,
    };
    issuer.unwrap_or_else(|| "bearer".into())
}

fn base64url(text: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    Some(out)
}

impl Emulator {
    /// Strict mode: the request against its API's discovery document.
    /// A violation is answered 400 INVALID_ARGUMENT (as Google answers) and
    /// recorded for `/_emulator/stats`, so the test that sent it fails.
    fn strict_check(&self, method: &str, raw_path: &str, query: &str, body: &str) -> Option<Reply> {
        if self.faults().lenient {
            return None;
        }
        let api = self.apis.iter().find(|api| api.serves(raw_path))?;
        self.checked.fetch_add(1, Ordering::Relaxed);
        let problem = match api.check(method, raw_path, query, body) {
            Ok(id) => {
                *self
                    .methods
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(id)
                    .or_default() += 1;
                return None;
            }
            Err(problem) => problem,
        };
        tracing::warn!("strict: refused {method} {raw_path}: {problem}");
        let mut violations = self.violations.lock().unwrap_or_else(|p| p.into_inner());
        if violations.len() < VIOLATIONS_KEPT {
            violations.push(format!("{method} {raw_path}: {problem}"));
        } else if let Some(last) = violations.last_mut() {
            // The count still grows past what is kept.
            *last = format!("... and more (latest: {method} {raw_path}: {problem})");
        }
        drop(violations);
        self.violation_count.fetch_add(1, Ordering::Relaxed);
        Some(Reply::error(
            400,
            format!("strict mode (Google's discovery document refuses this): {problem}"),
        ))
    }

    /// Cloud Monitoring's `timeSeries.create`, as far as a heartbeat needs:
    /// the writes are kept for `/_emulator/stats`, and a point written to a
    /// series less than 5 s after its last one is refused, as Monitoring
    /// refuses it.
    fn write_time_series(&self, body: &str) -> Reply {
        let request: Value = serde_json::from_str(body).unwrap_or_default();
        let keys: Vec<String> = request["timeSeries"]
            .as_array()
            .map(|all| {
                all.iter()
                    .map(|ts| format!("{}|{}", ts["metric"], ts["resource"]))
                    .collect()
            })
            .unwrap_or_default();
        let now = std::time::Instant::now();
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let too_soon = |key: &String| {
            series
                .get(key)
                .is_some_and(|t| now.duration_since(*t) < std::time::Duration::from_secs(5))
        };
        if keys.iter().any(too_soon) {
            return Reply::error(
                400,
                "One or more TimeSeries could not be written: One or more points were written \
                 more frequently than the maximum sampling period configured for the metric.",
            );
        }
        for key in keys {
            series.insert(key, now);
        }
        drop(series);
        let mut writes = self.time_series.lock().unwrap_or_else(|p| p.into_inner());
        if writes.len() < 1000 {
            writes.push(request);
        }
        Reply::ok(serde_json::json!({}))
    }

    /// The calls `sts-doctor` makes beyond STS: Service Usage, Cloud
    /// Resource Manager's and Cloud Storage's testIamPermissions, and bucket
    /// IAM policies, each answerable the failing way (`ApiFaults`).
    fn preflight(&self, method: &str, path: &str, raw_query: &str, body: &str) -> Option<Reply> {
        let faults = self.faults();
        let asked = |from_query: bool| -> Vec<String> {
            if from_query {
                url::form_urlencoded::parse(raw_query.as_bytes())
                    .filter(|(k, _)| k == "permissions")
                    .map(|(_, v)| v.into_owned())
                    .collect()
            } else {
                serde_json::from_str::<Value>(body)
                    .ok()
                    .and_then(|b| b.get("permissions").cloned())
                    .and_then(|p| serde_json::from_value::<Vec<String>>(p).ok())
                    .unwrap_or_default()
            }
        };
        let granted = |asked: Vec<String>| -> Vec<String> {
            asked
                .into_iter()
                .filter(|p| !faults.caller_denied.contains(p))
                .collect()
        };
        if let Some(rest) = path.strip_prefix("/serviceusage/v1/") {
            let (_, service) = rest.rsplit_once("/services/")?;
            let state = if faults.disabled_apis.iter().any(|s| s == service) {
                "DISABLED"
            } else {
                "ENABLED"
            };
            return Some(Reply::ok(
                serde_json::json!({ "name": rest, "state": state }),
            ));
        }
        if path.starts_with("/cloudresourcemanager/v1/projects/")
            && path.ends_with(":testIamPermissions")
            && method == "POST"
        {
            return Some(Reply::ok(
                serde_json::json!({ "permissions": granted(asked(false)) }),
            ));
        }
        let rest = path.strip_prefix("/storage/v1/b/")?;
        let (bucket, tail) = rest.split_once('/')?;
        if !matches!(tail, "iam" | "iam/testPermissions") {
            return None;
        }
        if self.buckets.bucket(bucket).is_err() {
            return Some(Reply::error(
                404,
                format!("The specified bucket does not exist: {bucket}"),
            ));
        }
        if tail == "iam/testPermissions" {
            return Some(Reply::ok(serde_json::json!({
                "kind": "storage#testIamPermissionsResponse",
                "permissions": granted(asked(true)),
            })));
        }
        let agents: Vec<String> = self
            .agents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|project| {
                format!(
                    "serviceAccount:{}",
                    crate::transfer::default_service_account(project)
                )
            })
            .collect();
        let roles = faults
            .bucket_roles
            .get(bucket)
            .cloned()
            .unwrap_or_else(|| vec!["roles/storage.admin".into()]);
        let bindings: Vec<Value> = roles
            .iter()
            .map(|role| serde_json::json!({ "role": role, "members": agents }))
            .collect();
        Some(Reply::ok(serde_json::json!({
            "kind": "storage#policy",
            "resourceId": format!("projects/_/buckets/{bucket}"),
            "version": 1,
            "etag": "CAE=",
            "bindings": bindings,
        })))
    }

    /// Whether this create's reply is to be lost (`lose_create_replies`).
    fn take_lost_reply(&self) -> bool {
        let mut faults = self.api_faults.lock().unwrap_or_else(|p| p.into_inner());
        if faults.lose_create_replies == 0 {
            return false;
        }
        faults.lose_create_replies -= 1;
        true
    }

    fn faults(&self) -> ApiFaults {
        self.api_faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Forwards a BigQuery request to the upstream emulator as it came.
    async fn forward(
        &self,
        upstream: &str,
        method: &str,
        path_and_query: &str,
        content_type: Option<&str>,
        body: String,
    ) -> Response<Full<Bytes>> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut request = self
            .http
            .request(method, format!("http://{upstream}{path_and_query}"))
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        let (status, content_type, bytes) = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let content_type = response
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                match response.bytes().await {
                    Ok(bytes) => (status, content_type, bytes),
                    Err(e) => return respond(Reply::error(502, format!("upstream: {e}"))),
                }
            }
            Err(e) => return respond(Reply::error(502, format!("upstream {upstream}: {e}"))),
        };
        let mut response = Response::new(Full::new(bytes));
        *response.status_mut() =
            hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
        if let Some(value) =
            content_type.and_then(|c| hyper::header::HeaderValue::from_str(&c).ok())
        {
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, value);
        }
        response
    }

    /// Every `1/rate`-th request (evenly spread, so a test's share is exact
    /// over any window) is answered with the next configured error code.
    fn injected_error(&self) -> Option<u16> {
        let faults = self
            .api_faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if faults.api_error_rate <= 0.0 {
            return None;
        }
        let n = self.fault_draws.fetch_add(1, Ordering::Relaxed);
        let before = (n as f64 * faults.api_error_rate).floor();
        let after = ((n + 1) as f64 * faults.api_error_rate).floor();
        (after > before)
            .then(|| faults.api_error_codes[(after as usize) % faults.api_error_codes.len()])
    }

    /// Counts a call against its quota group; the quota it exceeds, if any
    /// (the call is then refused and not counted, as on STS).
    fn over_quota(&self, group: &'static str) -> Option<String> {
        let faults = self
            .api_faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let per_minute = faults.quota(&format!("{group}_per_minute"));
        let per_day = faults.quota(&format!("{group}_per_day"));
        if per_minute.is_none() && per_day.is_none() {
            return None;
        }
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let (recent, today) = usage.entry(group).or_default();
        let now = std::time::Instant::now();
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t).as_secs() >= 60)
        {
            recent.pop_front();
        }
        if let Some(limit) = per_day.filter(|limit| *today >= *limit) {
            return Some(format!("{group} requests per day ({limit})"));
        }
        if let Some(limit) = per_minute.filter(|limit| recent.len() as u64 >= *limit) {
            return Some(format!("{group} requests per minute ({limit})"));
        }
        recent.push_back(now);
        *today += 1;
        None
    }

    fn credentials(&self) -> std::sync::MutexGuard<'_, credentials::Credentials> {
        self.credentials.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `POST /_emulator/credentials`: public keys and refresh tokens to
    /// accept, and credentials checked from then on (`credentials.rs`).
    fn register_credentials(&self, method: &str, body: &str) -> Reply {
        if method == "POST" {
            let registration = match serde_json::from_str(body) {
                Ok(r) => r,
                Err(e) => return Reply::error(400, format!("credentials: {e}")),
            };
            if let Err(e) = self.credentials().register(registration) {
                return Reply::error(400, e);
            }
        }
        Reply::ok(self.credentials().stats())
    }

    /// `POST /_emulator/objects`: sets what Cloud Storage would know of an
    /// object and a file cannot hold (`{"bucket", "name", "storageClass",
    /// "kmsKeyName", "temporaryHold", "customTime", "timeCreated"}`; fields
    /// left out are unset), for tests of `--preserve`. Answers the object's
    /// resource as `objects.get` does.
    fn set_object_metadata(&self, method: &str, body: &str) -> Reply {
        #[derive(serde::Deserialize)]
        struct Request {
            bucket: String,
            name: String,
            #[serde(flatten)]
            metadata: crate::metadata::ObjectMetadata,
        }
        if method != "POST" {
            return Reply::error(405, "/_emulator/objects takes POST");
        }
        let request: Request = match serde_json::from_str(body) {
            Ok(r) => r,
            Err(e) => return Reply::error(400, format!("objects: {e}")),
        };
        let buckets = match crate::storage::local::LocalBuckets::open(&self.root) {
            Ok(b) => b,
            Err(e) => return Reply::error(500, e.to_string()),
        };
        match buckets.object_path(&request.bucket, &request.name) {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Reply::error(
                    404,
                    format!("No such object: {}/{}", request.bucket, request.name),
                )
            }
            Err(e) => return Reply::error(400, e.to_string()),
        }
        let saved = crate::transfer::local::open_db(&self.root)
            .map_err(|e| e.to_string())
            .and_then(|conn| {
                crate::transfer::local::metadata::save(
                    &conn,
                    &request.bucket,
                    &request.name,
                    &request.metadata,
                )
            });
        if let Err(e) = saved {
            return Reply::error(500, e);
        }
        match buckets.object(&request.bucket, &request.name) {
            Ok(Some(found)) => Reply::ok(storage::object_json(&request.bucket, &found)),
            Ok(None) => Reply::error(404, format!("No such object: {}", request.name)),
            Err(e) => Reply::error(500, e.to_string()),
        }
    }

    fn control(&self, method: &str, body: &str) -> Reply {
        let mut current = self.api_faults.lock().unwrap_or_else(|p| p.into_inner());
        if method == "POST" {
            let request: Value = match serde_json::from_str(body) {
                Ok(v) => v,
                Err(e) => return Reply::error(400, format!("faults: {e}")),
            };
            match faults::apply_control(&self.root, &current, &request) {
                Ok(api) => *current = api,
                Err(e) => return Reply::error(400, e),
            }
        }
        let engine = crate::transfer::local::Faults::load(
            &self.root.join(crate::transfer::local::ENGINE_DIR),
        );
        let mut body = serde_json::to_value(&*current).unwrap_or_default();
        if let (Value::Object(map), Ok(Value::Object(engine))) =
            (&mut body, serde_json::to_value(engine))
        {
            map.extend(engine);
        }
        Reply { status: 200, body }
    }
}

#[cfg(test)]
mod tests {
    use super::caller_of;

    #[test]
    fn callers_are_named_by_their_token_issuer_never_by_the_token() {
        assert_eq!(caller_of(None), "anonymous");
        assert_eq!(caller_of(Some("Bearer ya29.opaque")), "bearer");
        // {"alg":"RS256"} . {"iss":"sa@p.iam.gserviceaccount.com"} . signature
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJzYUBwLmlhbS5nc2VydmljZWFjY291bnQuY29tIn0.c2ln";
        assert_eq!(
            caller_of(Some(&format!("Bearer {jwt}"))),
            "sa@p.iam.gserviceaccount.com"
        );
    }
}
