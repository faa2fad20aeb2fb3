//! Strict mode: every request a stand-in receives is checked against Google's
//! discovery document of its API (the contract; `../shared/reference/`), so a
//! request the real service would refuse fails the test that sent it instead
//! of working here. Everything checked is read from the document: methods and
//! path templates, parameters (location, type, enum, pattern, required),
//! request body schemas through `$ref`s, arrays and maps, and the limits the
//! descriptions state in words ("max length is 1024 bytes", "limited to up to
//! 36 ASCII characters", "The max allowed value is 256", the keys and status
//! values a list filter's description gives).

mod filter;
mod values;

use filter::*;
use std::sync::OnceLock;
use values::*;

use regex::Regex;
use serde_json::{Map, Value};

/// One API's discovery document, ready to check requests.
pub struct Api {
    /// Where a stand-in serves it beside the others (`/serviceusage`): APIs
    /// that live on hosts of their own share one emulator by path.
    mount: String,
    /// `/v1/`, `/storage/v1/`, `/bigquery/v2/`.
    base_path: String,
    schemas: Map<String, Value>,
    /// Top-level (system) parameters: `alt`, `fields`, `prettyPrint`, ...
    system: Map<String, Value>,
    methods: Vec<Method>,
    /// The first path segment of every method (`v1`, `b`, `projects`): two
    /// APIs on one base path (STS and Monitoring on `/`) are told apart.
    first_segments: std::collections::HashSet<String>,
}

struct Method {
    id: String,
    http_method: String,
    template: Regex,
    /// Path parameter names in template order.
    path_params: Vec<String>,
    parameters: Map<String, Value>,
    request: Option<String>,
    media_download: bool,
    /// Whether `/upload` + the path takes the object's content as the body
    /// (`supportsMediaUpload`).
    media_upload: bool,
    /// Literal characters in the template: the more specific wins a tie.
    literal_len: usize,
    first_segment: String,
}

/// The discovery documents this project's stand-ins speak, compiled in.
pub const STORAGE_TRANSFER: &str = include_str!("../discovery/storagetransfer.v1.json");
pub const CLOUD_STORAGE: &str = include_str!("../discovery/storage.v1.json");
pub const BIGQUERY: &str = include_str!("../discovery/bigquery.v2.json");
pub const MONITORING: &str = include_str!("../discovery/monitoring.v3.json");
pub const LOGGING: &str = include_str!("../discovery/logging.v2.json");
pub const SERVICE_USAGE: &str = include_str!("../discovery/serviceusage.v1.json");
pub const RESOURCE_MANAGER: &str = include_str!("../discovery/cloudresourcemanager.v1.json");

fn regex(pattern: &'static str, cell: &'static OnceLock<Regex>) -> &'static Regex {
    // The patterns are constants of this file, tested below.
    cell.get_or_init(|| Regex::new(pattern).unwrap_or_else(|e| panic!("bad pattern: {e}")))
}

fn limit_words() -> &'static Regex {
    static CELL: OnceLock<Regex> = OnceLock::new();
    regex(
        r"(?i)(?:up to|at most|no more than|max(?:imum)? length is|max(?:imum)? length of)\s+(\d[\d,]*)\s+(ascii characters|characters|bytes)",
        &CELL,
    )
}

fn max_value_words() -> &'static Regex {
    static CELL: OnceLock<Regex> = OnceLock::new();
    regex(r"(?i)max(?:imum)? allowed value is (\d+)", &CELL)
}

fn filter_keys() -> &'static Regex {
    static CELL: OnceLock<Regex> = OnceLock::new();
    regex(r#""(\w+)"\s*:\s*(\[|")"#, &CELL)
}

fn required_words() -> &'static Regex {
    static CELL: OnceLock<Regex> = OnceLock::new();
    regex(r"`(\w+)` is (?:the only argument that is )?required", &CELL)
}

impl Api {
    /// Parses a discovery document. Fails only on a document that is not
    /// one (the compiled-in ones are checked by a unit test).
    pub fn new(document: &str) -> Result<Api, String> {
        let doc: Value =
            serde_json::from_str(document).map_err(|e| format!("discovery document: {e}"))?;
        let base_path = doc
            .get("basePath")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .or_else(|| {
                doc.get("servicePath")
                    .and_then(Value::as_str)
                    .map(|p| format!("/{p}"))
            })
            .ok_or("discovery document without basePath")?;
        let mut methods = Vec::new();
        collect_methods(doc.get("resources"), &mut methods)?;
        let object = |key: &str| {
            doc.get(key)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };
        let first_segments = methods.iter().map(|m| m.first_segment.clone()).collect();
        Ok(Api {
            mount: String::new(),
            base_path,
            schemas: object("schemas"),
            system: object("parameters"),
            methods,
            first_segments,
        })
    }

    /// The same API served under `mount` (`/serviceusage`).
    pub fn mounted(mut self, mount: &str) -> Api {
        self.mount = mount.to_string();
        self
    }

    /// Whether `path` belongs to this API (its base path, or the media
    /// download path beside it).
    pub fn serves(&self, path: &str) -> bool {
        let Some(path) = path.strip_prefix(&self.mount) else {
            return false;
        };
        let path = path
            .strip_prefix("/download")
            .or_else(|| path.strip_prefix("/upload"))
            .filter(|p| p.starts_with(&self.base_path))
            .unwrap_or(path);
        path.strip_prefix(&self.base_path).is_some_and(|rest| {
            let first = rest.split(['/', ':']).next().unwrap_or_default();
            self.first_segments.contains(first)
        })
    }

    /// Checks one request: `path` as sent (still percent-encoded), `query`
    /// the raw query string. Answers the method's id, or what is wrong.
    pub fn check(
        &self,
        http_method: &str,
        path: &str,
        query: &str,
        body: &str,
    ) -> Result<String, String> {
        let path = path.strip_prefix(&self.mount).unwrap_or(path);
        let (download, path) = match path.strip_prefix("/download") {
            Some(rest) if rest.starts_with(&self.base_path) => (true, rest),
            _ => (false, path),
        };
        let (upload, path) = match path.strip_prefix("/upload") {
            Some(rest) if rest.starts_with(&self.base_path) => (true, rest),
            _ => (false, path),
        };
        let relative = path
            .strip_prefix(&self.base_path)
            .ok_or_else(|| format!("{path} is outside {}", self.base_path))?;
        let query: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let mut refused = None;
        let mut candidates: Vec<(&Method, Vec<(String, String)>)> = Vec::new();
        for method in self.methods.iter().filter(|m| m.http_method == http_method) {
            let Some(captures) = method.template.captures(relative) else {
                continue;
            };
            let values: Vec<(String, String)> = method
                .path_params
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let raw = captures.get(i + 1).map_or("", |m| m.as_str());
                    (name.clone(), percent_decode(raw))
                })
                .collect();
            match values
                .iter()
                .try_for_each(|(name, value)| path_param_ok(method, name, value))
            {
                Ok(()) => candidates.push((method, values)),
                Err(e) => refused = Some(e),
            }
        }
        candidates.sort_by_key(|(m, _)| std::cmp::Reverse(m.literal_len));
        let Some((method, _)) = candidates.into_iter().next() else {
            return Err(
                refused.unwrap_or_else(|| format!("no method of the API is {http_method} {path}"))
            );
        };
        if download && !method.media_download {
            return Err(format!("{} has no media download", method.id));
        }
        if upload && !method.media_upload {
            return Err(format!("{} has no media upload", method.id));
        }
        self.check_query(method, &query)?;
        if upload {
            // A media upload's body is the object's content, not JSON;
            // the protocol is the system parameter `uploadType`.
            return match query.iter().find(|(n, _)| n == "uploadType") {
                Some((_, kind)) if kind == "media" => Ok(method.id.clone()),
                Some((_, kind)) => Err(format!(
                    "{}: uploadType {kind:?} with a plain body (only \"media\" sends the content alone)",
                    method.id
                )),
                None => Err(format!("{}: an upload without uploadType", method.id)),
            };
        }
        self.check_body(method, body)?;
        Ok(method.id.clone())
    }

    fn check_query(&self, method: &Method, query: &[(String, String)]) -> Result<(), String> {
        for (name, value) in query {
            // `$alt` is the system parameter Google's GAPIC clients send
            // (`json;enum-encoding=int`); the others are in the document.
            if name == "$alt" {
                continue;
            }
            let spec = method
                .parameters
                .get(name)
                .filter(|p| p.get("location").and_then(Value::as_str) == Some("query"))
                .or_else(|| self.system.get(name))
                .ok_or_else(|| format!("{}: unknown query parameter {name:?}", method.id))?;
            let repeated = spec.get("repeated").and_then(Value::as_bool) == Some(true);
            if !repeated && query.iter().filter(|(n, _)| n == name).count() > 1 {
                return Err(format!("{}: {name} given more than once", method.id));
            }
            check_scalar_text(&method.id, name, spec, value)?;
            if name == "filter" {
                check_filter(&method.id, spec, value)?;
            }
        }
        for (name, spec) in &method.parameters {
            let required = spec.get("required").and_then(Value::as_bool) == Some(true);
            let in_query = spec.get("location").and_then(Value::as_str) == Some("query");
            if required && in_query && !query.iter().any(|(n, _)| n == name) {
                return Err(format!(
                    "{}: required query parameter {name} missing",
                    method.id
                ));
            }
        }
        Ok(())
    }

    fn check_body(&self, method: &Method, body: &str) -> Result<(), String> {
        let text = body.trim();
        let Some(schema) = &method.request else {
            return if text.is_empty() {
                Ok(())
            } else {
                Err(format!("{} takes no request body", method.id))
            };
        };
        let value: Value = if text.is_empty() {
            Value::Object(Map::new())
        } else {
            serde_json::from_str(text)
                .map_err(|e| format!("{}: the body is not JSON: {e}", method.id))?
        };
        self.check_value(&value, &serde_json::json!({ "$ref": schema }), schema, 0)
            .map_err(|e| format!("{}: {e}", method.id))
    }

    /// `value` against a schema (or property) `spec`, `at` naming it.
    fn check_value(
        &self,
        value: &Value,
        spec: &Value,
        at: &str,
        depth: usize,
    ) -> Result<(), String> {
        if depth > 64 {
            return Err(format!("{at}: nested too deeply"));
        }
        if value.is_null() {
            return Ok(());
        }
        if let Some(name) = spec.get("$ref").and_then(Value::as_str) {
            let schema = self
                .schemas
                .get(name)
                .ok_or_else(|| format!("{at}: the document has no schema {name}"))?;
            return self.check_value(value, schema, at, depth + 1);
        }
        let kind = spec.get("type").and_then(Value::as_str).unwrap_or("any");
        match kind {
            "object" => {
                let object = value
                    .as_object()
                    .ok_or_else(|| format!("{at}: expected an object, got {}", kind_of(value)))?;
                let properties = spec.get("properties").and_then(Value::as_object);
                let additional = spec.get("additionalProperties");
                for (key, item) in object {
                    let property = properties.and_then(|p| {
                        p.get(key)
                            .map(|s| (key.clone(), s))
                            .or_else(|| p.get(&camel(key)).map(|s| (camel(key), s)))
                    });
                    match (property, additional) {
                        (Some((name, sub)), _) => {
                            self.check_value(item, sub, &format!("{at}.{name}"), depth + 1)?;
                            check_described_limits(item, sub, &format!("{at}.{name}"))?;
                        }
                        (None, Some(sub)) => {
                            self.check_value(item, sub, &format!("{at}[{key:?}]"), depth + 1)?
                        }
                        (None, None) => return Err(format!("{at}: unknown field {key:?}")),
                    }
                }
                for (name, sub) in properties.into_iter().flatten() {
                    let described = sub.get("description").and_then(Value::as_str).unwrap_or("");
                    let present = object
                        .get(name)
                        .or_else(|| object.get(&snake(name)))
                        .is_some_and(|v| !v.is_null());
                    if described.starts_with("Required.") && !present {
                        return Err(format!("{at}: required field {name} missing"));
                    }
                }
                Ok(())
            }
            "array" => {
                let items = value
                    .as_array()
                    .ok_or_else(|| format!("{at}: expected an array, got {}", kind_of(value)))?;
                let item_spec = spec.get("items").cloned().unwrap_or(Value::Null);
                for (i, item) in items.iter().enumerate() {
                    self.check_value(item, &item_spec, &format!("{at}[{i}]"), depth + 1)?;
                }
                Ok(())
            }
            "any" => Ok(()),
            _ => check_scalar_json(at, spec, value),
        }
    }
}

fn collect_methods(resources: Option<&Value>, into: &mut Vec<Method>) -> Result<(), String> {
    let Some(resources) = resources.and_then(Value::as_object) else {
        return Ok(());
    };
    for resource in resources.values() {
        for (name, method) in resource
            .get("methods")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let text = |key: &str| method.get(key).and_then(Value::as_str).unwrap_or("");
            let (template, path_params, literal_len) =
                compile_template(text("path")).map_err(|e| format!("method {name}: {e}"))?;
            let first_segment = text("path")
                .split(['/', ':', '{'])
                .next()
                .unwrap_or_default()
                .to_string();
            into.push(Method {
                id: text("id").to_string(),
                http_method: text("httpMethod").to_string(),
                template,
                path_params,
                parameters: method
                    .get("parameters")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default(),
                request: method
                    .get("request")
                    .and_then(|r| r.get("$ref"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                media_download: method.get("supportsMediaDownload").and_then(Value::as_bool)
                    == Some(true),
                media_upload: method.get("supportsMediaUpload").and_then(Value::as_bool)
                    == Some(true),
                literal_len,
                first_segment,
            });
        }
        collect_methods(resource.get("resources"), into)?;
    }
    Ok(())
}

/// A path template (`v1/{+jobName}:run`, `b/{bucket}/o/{object}`) as an
/// anchored regex: `{+x}` may hold slashes (reserved expansion), `{x}` not.
fn compile_template(template: &str) -> Result<(Regex, Vec<String>, usize), String> {
    let mut pattern = String::from("^");
    let mut names = Vec::new();
    let mut literal_len = 0;
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        pattern.push_str(&regex::escape(&rest[..open]));
        literal_len += open;
        let close = rest[open..]
            .find('}')
            .map(|c| open + c)
            .ok_or_else(|| format!("unclosed {{ in {template}"))?;
        let name = &rest[open + 1..close];
        match name.strip_prefix('+') {
            Some(reserved) => {
                pattern.push_str("(.+?)");
                names.push(reserved.to_string());
            }
            None => {
                pattern.push_str("([^/]+)");
                names.push(name.to_string());
            }
        }
        rest = &rest[close + 1..];
    }
    pattern.push_str(&regex::escape(rest));
    literal_len += rest.len();
    pattern.push('$');
    let compiled = Regex::new(&pattern).map_err(|e| e.to_string())?;
    Ok((compiled, names, literal_len))
}

fn path_param_ok(method: &Method, name: &str, value: &str) -> Result<(), String> {
    let Some(spec) = method.parameters.get(name) else {
        return Ok(());
    };
    if let Some(pattern) = spec.get("pattern").and_then(Value::as_str) {
        let matched = Regex::new(pattern)
            .map(|r| r.is_match(value))
            .unwrap_or(true);
        if !matched {
            return Err(format!(
                "{}: path parameter {name}={value:?} does not match {pattern}",
                method.id
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sts() -> Api {
        Api::new(STORAGE_TRANSFER).expect("the STS document")
    }

    #[test]
    fn the_compiled_in_documents_load() {
        for doc in [
            STORAGE_TRANSFER,
            CLOUD_STORAGE,
            BIGQUERY,
            MONITORING,
            LOGGING,
            SERVICE_USAGE,
            RESOURCE_MANAGER,
        ] {
            let api = Api::new(doc).expect("a discovery document");
            assert!(api.methods.len() > 5);
        }
        // Every constant pattern compiles.
        let _ = (
            limit_words(),
            max_value_words(),
            filter_keys(),
            required_words(),
        );
    }

    #[test]
    fn good_requests_pass() {
        let api = sts();
        let filter = r#"{"projectId":"p","jobNames":["transferJobs/a"],"transferStatuses":["in_progress","SUCCESS"],"minCreationTime":"2026-01-01T00:00:00Z"}"#;
        let query = format!(
            "filter={}&pageSize=256",
            url::form_urlencoded::byte_serialize(filter.as_bytes()).collect::<String>()
        );
        assert_eq!(
            api.check("GET", "/v1/transferOperations", &query, ""),
            Ok("storagetransfer.transferOperations.list".into())
        );
        let job = r#"{"name":"transferJobs/sjm-1","projectId":"p","status":"ENABLED","description":"d",
            "transferSpec":{"gcsDataSource":{"bucketName":"a"},"gcs_data_sink":{"bucket_name":"b"},
            "objectConditions":{"includePrefixes":["x/"]}}}"#;
        assert!(api.check("POST", "/v1/transferJobs", "", job).is_ok());
        // GAPIC: numeric enums and its $alt parameter.
        assert!(api
            .check(
                "POST",
                "/v1/transferJobs",
                "$alt=json;enum-encoding=int",
                r#"{"status":1,"projectId":"p"}"#
            )
            .is_ok());
        assert_eq!(
            api.check(
                "POST",
                "/v1/transferJobs/sjm-1:run",
                "",
                r#"{"projectId":"p"}"#
            ),
            Ok("storagetransfer.transferJobs.run".into())
        );
        assert!(api
            .check("POST", "/v1/transferOperations/op-1:pause", "", "")
            .is_ok());
        let gcs = Api::new(CLOUD_STORAGE).expect("storage");
        assert_eq!(
            gcs.check(
                "POST",
                "/upload/storage/v1/b/src/o",
                "uploadType=media&name=m%2Fa.csv",
                "\"a,b\"\nplain\n"
            ),
            Ok("storage.objects.insert".into())
        );
        assert!(gcs
            .check("POST", "/upload/storage/v1/b/src/o", "name=m.csv", "x")
            .is_err());
        assert!(gcs
            .check(
                "POST",
                "/upload/storage/v1/b/src/o",
                "uploadType=media&nam=x",
                "x"
            )
            .is_err());
        assert!(gcs
            .check(
                "POST",
                "/upload/storage/v1/b/src/o/x",
                "uploadType=media",
                "x"
            )
            .is_err());
        assert!(gcs.serves("/upload/storage/v1/b/x/o"));
        assert_eq!(
            gcs.check("GET", "/storage/v1/b/src/o/a%2Fb.txt", "alt=media", ""),
            Ok("storage.objects.get".into())
        );
        assert!(gcs
            .check(
                "GET",
                "/download/storage/v1/b/src/o/a%2Fb.txt",
                "alt=media",
                ""
            )
            .is_ok());
        assert_eq!(
            gcs.check(
                "GET",
                "/storage/v1/b/src/o",
                "prefix=a/&maxResults=1000&pageToken=t",
                ""
            ),
            Ok("storage.objects.list".into())
        );
    }

    #[test]
    fn each_class_of_bad_request_is_refused() {
        let api = sts();
        let bq = Api::new(BIGQUERY).expect("bigquery");
        let list = |filter: &str, extra: &str| {
            let encoded: String = url::form_urlencoded::byte_serialize(filter.as_bytes()).collect();
            api.check(
                "GET",
                "/v1/transferOperations",
                &format!("filter={encoded}{extra}"),
                "",
            )
        };
        let refused = |r: Result<String, String>, words: &str| {
            let e = r.expect_err(words);
            assert!(e.contains(words), "{e:?} should say {words:?}");
        };
        // Unknown method or path.
        refused(
            api.check("GET", "/v1/transferThings", "", ""),
            "transferThings",
        );
        refused(api.check("PUT", "/v1/transferJobs/a", "", ""), "no method");
        // Path parameter pattern.
        refused(
            api.check("POST", "/v1/transferJobs/a:pause", "", ""),
            "does not match",
        );
        // Unknown query parameter, a repeated one, a wrong type, over the described max.
        refused(
            list(r#"{"projectId":"p"}"#, "&bogus=1"),
            "unknown query parameter",
        );
        refused(
            list(r#"{"projectId":"p"}"#, "&pageSize=ten"),
            "not an integer",
        );
        refused(list(r#"{"projectId":"p"}"#, "&pageSize=257"), "outside");
        // Required query parameter.
        refused(
            api.check("GET", "/v1/transferOperations", "", ""),
            "required query parameter",
        );
        // The filter: unknown key, undocumented status, required key, types.
        refused(list(r#"{"projectId":"p","bucket":"x"}"#, ""), "unknown key");
        refused(
            list(r#"{"projectId":"p","transferStatuses":["QUEUED"]}"#, ""),
            "QUEUED",
        );
        refused(list(r#"{"jobNames":["a"]}"#, ""), "projectId is required");
        refused(
            list(r#"{"projectId":"p","jobNames":"a"}"#, ""),
            "must be an array",
        );
        refused(
            list(r#"{"projectId":"p","minCreationTime":"yesterday"}"#, ""),
            "RFC 3339",
        );
        // Body: unknown field (nested through $ref), wrong type, enum, required, limit.
        refused(
            api.check(
                "POST",
                "/v1/transferJobs",
                "",
                r#"{"transferSpec":{"gcsDataSource":{"bucket":"a"}}}"#,
            ),
            "unknown field",
        );
        refused(
            api.check("POST", "/v1/transferJobs", "", r#"{"projectId":7}"#),
            "not a valid string",
        );
        refused(
            api.check("POST", "/v1/transferJobs", "", r#"{"status":"RUNNING"}"#),
            "not one of",
        );
        refused(
            api.check(
                "POST",
                "/v1/transferJobs",
                "",
                r#"{"transferSpec":{"gcsDataSource":{}}}"#,
            ),
            "required field bucketName",
        );
        refused(
            api.check("POST", "/v1/transferJobs/a:run", "", "{}"),
            "required field projectId",
        );
        let long = "x".repeat(1025);
        refused(
            api.check(
                "POST",
                "/v1/transferJobs",
                "",
                &format!(r#"{{"description":"{long}"}}"#),
            ),
            "1025 bytes",
        );
        // A map's values are checked too (labels are map<string,string>).
        refused(
            bq.check(
                "POST",
                "/bigquery/v2/projects/p/queries",
                "",
                r#"{"query":"SELECT 1","labels":{"a":1}}"#,
            ),
            "not a valid string",
        );
        refused(
            bq.check(
                "POST",
                "/bigquery/v2/projects/p/queries",
                "",
                r#"{"query":"SELECT 1","requestId":"sts-job-manager-12345-1234567890123456789-1"}"#,
            ),
            "the document allows 36",
        );
        refused(
            bq.check("POST", "/bigquery/v2/projects/p/queries", "", "{}"),
            "required field query",
        );
        assert!(bq
            .check(
                "POST",
                "/bigquery/v2/projects/p/queries",
                "",
                r#"{"query":"SELECT 1","requestId":"0123456789abcdef-0123-4567-89ab-cdef","useLegacySql":false}"#
            )
            .is_ok());
    }

    #[test]
    fn apis_on_one_base_path_are_told_apart() {
        let sts = sts();
        let monitoring = Api::new(MONITORING).expect("monitoring");
        let gcs = Api::new(CLOUD_STORAGE).expect("storage");
        assert!(sts.serves("/v1/transferJobs") && !sts.serves("/v3/projects/p/timeSeries"));
        assert!(
            monitoring.serves("/v3/projects/p/timeSeries")
                && !monitoring.serves("/v1/transferJobs")
        );
        assert!(!sts.serves("/storage/v1/b/x") && gcs.serves("/storage/v1/b/x"));
        assert!(gcs.serves("/download/storage/v1/b/x/o/y"));
        let point = r#"{"timeSeries":[{"metric":{"type":"custom.googleapis.com/x","labels":{}},
            "resource":{"type":"global","labels":{"project_id":"p"}},
            "points":[{"interval":{"endTime":"2026-01-01T00:00:00Z"},"value":{"int64Value":"3"}}]}]}"#;
        assert_eq!(
            monitoring.check("POST", "/v3/projects/p/timeSeries", "", point),
            Ok("monitoring.projects.timeSeries.create".into())
        );
        assert!(monitoring
            .check(
                "POST",
                "/v3/projects/p/timeSeries",
                "",
                r#"{"timeSeries":[{"points":[{"value":{"int64Value":"x"}}]}]}"#
            )
            .is_err());
    }

    #[test]
    fn filter_rules_are_read_from_the_descriptions() {
        let doc: Value = serde_json::from_str(STORAGE_TRANSFER).expect("json");
        let describe = |resource: &str| {
            doc["resources"][resource]["methods"]["list"]["parameters"]["filter"]["description"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        let ops = filter_rules(&describe("transferOperations"));
        assert_eq!(
            ops.statuses,
            ["IN_PROGRESS", "PAUSED", "SUCCESS", "FAILED", "ABORTED"]
        );
        assert_eq!(ops.required, ["projectId"]);
        assert!(ops.keys.contains(&("operationNames".into(), true)));
        let jobs = filter_rules(&describe("transferJobs"));
        assert_eq!(jobs.statuses, ["ENABLED", "DISABLED", "DELETED"]);
        assert!(jobs.keys.contains(&("sinkBucket".into(), false)));
    }
}
