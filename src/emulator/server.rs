//! The emulator's HTTP server: one handler that routes each request
//! (after the credential and strict checks) and answers it, on 127.0.0.1
//! only.

use super::*;

pub(super) fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

pub(super) async fn handle(
    emulator: Arc<Emulator>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = request.method().as_str().to_string();
    let authorization = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let host = request
        .headers()
        .get(hyper::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let caller = emulator
        .credentials()
        .caller(authorization.as_deref())
        .unwrap_or_else(|| caller_of(authorization.as_deref()));
    let raw_path = request.uri().path().to_string();
    let raw_query = request.uri().query().unwrap_or("").to_string();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| raw_path.clone());
    let content_type = request
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let path = percent_decode(request.uri().path());
    let query: HashMap<String, String> = request
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    // Uploads keep their bytes as sent; every other body is JSON text.
    let raw_body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return Ok(respond(Reply::error(
                400,
                format!("cannot read the body: {e}"),
            )))
        }
    };
    let body = String::from_utf8_lossy(&raw_body).into_owned();
    // Google's token endpoint: not an API call (not counted with them).
    if path == "/token" && method == "POST" {
        let now = service_now(&emulator.root);
        let (status, body) =
            emulator
                .credentials()
                .grant(&body, &format!("http://{host}/token"), now);
        return Ok(respond(Reply { status, body }));
    }
    if !path.starts_with("/_emulator/") {
        emulator.requests.fetch_add(1, Ordering::Relaxed);
        *emulator
            .callers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(caller)
            .or_default() += 1;
    }
    let unauthenticated = if path.starts_with("/_emulator/") {
        None
    } else {
        let now = service_now(&emulator.root);
        emulator
            .credentials()
            .check(authorization.as_deref(), &path, now)
    };
    let reply = if path == "/_emulator/faults" {
        emulator.control(&method, &body)
    } else if path == "/_emulator/objects" {
        emulator.set_object_metadata(&method, &body)
    } else if path == "/_emulator/credentials" {
        emulator.register_credentials(&method, &body)
    } else if path == "/_emulator/stats" {
        Reply {
            status: 200,
            body: serde_json::json!({
                "requests": emulator.requests.load(Ordering::Relaxed),
                "callers": *emulator.callers.lock().unwrap_or_else(|p| p.into_inner()),
                "strict": {
                    "checked": emulator.checked.load(Ordering::Relaxed),
                    "violation_count": emulator.violation_count.load(Ordering::Relaxed),
                    "violations": *emulator.violations.lock().unwrap_or_else(|p| p.into_inner()),
                },
                "methods": *emulator.methods.lock().unwrap_or_else(|p| p.into_inner()),
                "time_series": *emulator.time_series.lock().unwrap_or_else(|p| p.into_inner()),
                "credentials": emulator.credentials().stats(),
            }),
        }
    } else if let Some(reason) = unauthenticated {
        tracing::debug!(%method, %path, "unauthenticated: {reason}");
        Reply::error(
            401,
            format!(
                "Request had invalid authentication credentials ({reason}). Expected OAuth 2 \
                 access token, login cookie or other valid authentication credential."
            ),
        )
    } else if let Some(refused) = emulator.strict_check(&method, &raw_path, &raw_query, &body) {
        refused
    } else if let Some(upstream) = path
        .starts_with("/bigquery/")
        .then(|| emulator.faults().bigquery_upstream)
        .flatten()
    {
        return Ok(emulator
            .forward(
                &upstream,
                &method,
                &path_and_query,
                content_type.as_deref(),
                body,
            )
            .await);
    } else if let Some(field) = emulator
        .faults()
        .cycle_page_tokens
        .then(|| listed_field(&method, &path))
        .flatten()
    {
        // none -> A, A -> B, B -> A: only a lister that remembers every
        // token it has seen stops.
        let next = if query.get("pageToken").is_some_and(|t| t == "A") {
            "B"
        } else {
            "A"
        };
        let mut body = serde_json::json!({ field: [], "nextPageToken": next });
        if field == "items" {
            body["kind"] = "storage#objects".into();
        }
        Reply::ok(body)
    } else if let Some(code) = emulator.injected_error() {
        Reply::error(code, "injected by sts-emulator")
    } else if method == "POST" && path == "/v2/entries:list" {
        match emulator.over_quota("logging_read") {
            Some(quota) => Reply::error(
                429,
                format!(
                    "Quota exceeded for quota metric '{quota}' of service logging.googleapis.com"
                ),
            ),
            None => logging::list_entries(&emulator.engine, &body),
        }
    } else if let Some(quota) =
        quota_group(&method, &path).and_then(|group| emulator.over_quota(group))
    {
        Reply::error(
            429,
            format!("Quota exceeded for quota metric '{quota}' of service storagetransfer.googleapis.com"),
        )
    } else if let Some(project) = path
        .strip_prefix("/v1/googleServiceAccounts/")
        .filter(|_| method == "GET")
    {
        if emulator.faults().no_service_agent {
            Reply::error(403, format!("The caller does not have permission to read the service agent of project {project}"))
        } else {
            emulator
                .agents
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(project.to_string());
            routes::route(
                &emulator.engine,
                &emulator.faults(),
                &method,
                &path,
                &query,
                &body,
            )
            .await
        }
    } else if let Some(reply) = emulator.preflight(&method, &path, &raw_query, &body) {
        reply
    } else if method == "POST" && path.starts_with("/v3/") && path.ends_with("/timeSeries") {
        emulator.write_time_series(&body)
    } else if storage::handles(&path) {
        let buckets = &emulator.buckets;
        let response =
            crate::storage::blocking(|| storage::route(buckets, &method, &path, &query, &raw_body));
        tracing::debug!(%method, %path, status = response.status().as_u16(), "request");
        return Ok(response);
    } else {
        let faults = emulator.faults();
        let lose_reply =
            method == "POST" && path == "/v1/transferJobs" && emulator.take_lost_reply();
        let mut reply =
            routes::route(&emulator.engine, &faults, &method, &path, &query, &body).await;
        if faults.empty_schedule && path.starts_with("/v1/transferJobs") {
            empty_schedules(&mut reply.body);
        }
        if lose_reply && reply.status == 200 {
            reply = Reply::error(503, "the reply was lost (lose_create_replies)");
        }
        reply
    };
    tracing::debug!(%method, %path, status = reply.status, "request");
    Ok(respond(reply))
}

/// The field a list answer carries its items in, for the lists
/// `cycle_page_tokens` breaks.
pub(super) fn listed_field(method: &str, path: &str) -> Option<&'static str> {
    if method != "GET" {
        return None;
    }
    match path {
        "/v1/transferJobs" => Some("transferJobs"),
        "/v1/transferOperations" => Some("operations"),
        _ if path.starts_with("/storage/v1/b/") && path.ends_with("/o") => Some("items"),
        _ => None,
    }
}

/// `"schedule": {}` on every job of a reply that has no schedule, as STS
/// may answer for a job created without one.
pub(super) fn empty_schedules(body: &mut Value) {
    let mut mark = |job: &mut Value| {
        if let Value::Object(job) = job {
            if job
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.starts_with("transferJobs/"))
            {
                job.entry("schedule")
                    .or_insert_with(|| serde_json::json!({}));
            }
        }
    };
    if let Some(Value::Array(jobs)) = body.get_mut("transferJobs") {
        jobs.iter_mut().for_each(&mut mark);
    } else {
        mark(body);
    }
}

pub(super) fn respond(reply: Reply) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(reply.body.to_string())));
    *response.status_mut() = hyper::StatusCode::from_u16(reply.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    response
}

/// Serves until `stop` resolves; calls `ready` with the bound address first.
pub async fn serve(
    root: &Path,
    port: u16,
    api_faults: ApiFaults,
    ready: impl FnOnce(SocketAddr),
    stop: impl Future<Output = ()>,
) -> Result<(), EmulatorError> {
    let engine = LocalEngine::open(root, Mode::Execute)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|source| EmulatorError::Bind { port, source })?;
    let address = listener
        .local_addr()
        .map_err(|source| EmulatorError::Bind { port, source })?;
    let emulator = Arc::new(Emulator {
        root: root.to_path_buf(),
        engine,
        buckets: crate::storage::local::LocalBuckets::open(root)
            .map_err(|e| TransferError::InvalidArgument(e.to_string()))?,
        api_faults: Mutex::new(api_faults),
        requests: AtomicU64::new(0),
        fault_draws: AtomicU64::new(0),
        usage: Mutex::new(HashMap::new()),
        callers: Mutex::new(Default::default()),
        credentials: Mutex::new(Default::default()),
        apis: [
            strict::STORAGE_TRANSFER,
            strict::CLOUD_STORAGE,
            strict::BIGQUERY,
            strict::MONITORING,
            strict::LOGGING,
        ]
        .into_iter()
        .map(strict::Api::new)
        .chain([
            strict::Api::new(strict::SERVICE_USAGE).map(|a| a.mounted("/serviceusage")),
            strict::Api::new(strict::RESOURCE_MANAGER).map(|a| a.mounted("/cloudresourcemanager")),
        ])
        .collect::<Result<_, _>>()
        .map_err(TransferError::InvalidArgument)?,
        checked: AtomicU64::new(0),
        violation_count: AtomicU64::new(0),
        violations: Mutex::new(Vec::new()),
        methods: Mutex::new(Default::default()),
        series: Mutex::new(HashMap::new()),
        agents: Mutex::new(Default::default()),
        time_series: Mutex::new(Vec::new()),
        http: reqwest::Client::new(),
    });
    ready(address);
    tokio::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(connection) => connection,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    continue;
                }
            },
            _ = &mut stop => return Ok(()),
        };
        let emulator = Arc::clone(&emulator);
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request| handle(Arc::clone(&emulator), request));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
}
