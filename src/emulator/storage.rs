//! The Cloud Storage JSON API methods plan and verify use, over the same
//! bucket directories the engine copies: buckets.get, objects.list (prefix,
//! delimiter, maxResults, pageToken) and objects.get (metadata, or the
//! content with `alt=media`), with `crc32c` and `md5Hash` encoded as Cloud
//! Storage encodes them. Google's clients reach it via STORAGE_EMULATOR_HOST.

use std::collections::HashMap;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use http_body_util::Full;
use hyper::Response;
use serde_json::{json, Value};

use super::routes::Reply;
use crate::storage::local::LocalBuckets;
use crate::storage::{encode_crc32c, encode_md5, ListRequest, ObjectInfo, StorageError};

/// Is this a Cloud Storage path?
pub fn handles(path: &str) -> bool {
    path.starts_with("/storage/v1/")
        || path.starts_with("/download/storage/v1/")
        || path.starts_with("/upload/storage/v1/")
}

fn time(at: Option<DateTime<Utc>>) -> String {
    at.unwrap_or_else(Utc::now)
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A `storage#object` resource as the JSON API writes it (int64 as strings).
pub fn object_json(bucket: &str, object: &ObjectInfo) -> Value {
    let generation = object.generation.unwrap_or(1).to_string();
    let mut body = json!({
        "kind": "storage#object",
        "id": format!("{bucket}/{}/{generation}", object.name),
        "name": object.name,
        "bucket": bucket,
        "generation": generation,
        "metageneration": "1",
        "contentType": "application/octet-stream",
        "storageClass": object
            .metadata
            .storage_class
            .as_deref()
            .unwrap_or(crate::metadata::DEFAULT_STORAGE_CLASS),
        "size": object.size.to_string(),
        "timeCreated": time(object.metadata.time_created.or(object.updated)),
        "updated": time(object.updated),
    });
    if let Some(key) = &object.metadata.kms_key_name {
        body["kmsKeyName"] = json!(key);
    }
    if let Some(held) = object.metadata.temporary_hold {
        body["temporaryHold"] = json!(held);
    }
    if let Some(custom) = object.metadata.custom_time {
        body["customTime"] = json!(time(Some(custom)));
    }
    if let Some(crc) = object.crc32c {
        body["crc32c"] = json!(encode_crc32c(crc));
    }
    if let Some(md5) = &object.md5 {
        body["md5Hash"] = json!(encode_md5(md5));
        body["etag"] = json!(encode_md5(md5));
    }
    body
}

fn error_reply(error: StorageError) -> Reply {
    match error {
        StorageError::BucketNotFound(bucket) => Reply::error(
            404,
            format!("The specified bucket does not exist: {bucket}"),
        ),
        StorageError::InvalidArgument(message) => Reply::error(400, message),
        other => Reply::error(500, other.to_string()),
    }
}

fn json_response(reply: Reply) -> Response<Full<Bytes>> {
    super::respond(reply)
}

/// Answers one Cloud Storage request.
pub fn route(
    buckets: &LocalBuckets,
    method: &str,
    path: &str,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Response<Full<Bytes>> {
    if let Some(rest) = path.strip_prefix("/upload/storage/v1/b/") {
        return json_response(upload(buckets, method, rest, query, body));
    }
    let download = path.starts_with("/download/");
    let rest = path
        .trim_start_matches("/download")
        .trim_start_matches("/storage/v1/");
    if method != "GET" {
        return json_response(Reply::error(
            405,
            format!("the emulator serves only GET for Cloud Storage, not {method}"),
        ));
    }
    let Some(after_b) = rest.strip_prefix("b/") else {
        return json_response(Reply::error(404, format!("no method GET {path}")));
    };
    let (bucket, tail) = match after_b.split_once('/') {
        Some((bucket, tail)) => (bucket, Some(tail)),
        None => (after_b, None),
    };
    let reply = match tail {
        None => buckets.bucket(bucket).map(|info| {
            Reply::ok(json!({
                "kind": "storage#bucket",
                "id": info.name,
                "name": info.name,
                "location": info.location.unwrap_or_else(|| "US".into()),
                "storageClass": "STANDARD",
                "metageneration": "1",
                "timeCreated": time(None),
                "updated": time(None),
            }))
        }),
        Some("o") => list(buckets, bucket, query),
        Some(object) => match object.strip_prefix("o/") {
            Some(name) if download || query.get("alt").is_some_and(|a| a == "media") => {
                return media(buckets, bucket, name);
            }
            Some(name) => match buckets.object(bucket, name) {
                Ok(Some(found)) => Ok(Reply::ok(object_json(bucket, &found))),
                Ok(None) => Ok(Reply::error(
                    404,
                    format!("No such object: {bucket}/{name}"),
                )),
                Err(e) => Err(e),
            },
            None => Ok(Reply::error(404, format!("no method GET {path}"))),
        },
    };
    json_response(reply.unwrap_or_else(error_reply))
}

/// `objects.insert` as a media upload (`uploadType=media`, the object's
/// name in `name`, the content as the body): what manifests are written
/// with. Multipart and resumable uploads are not served.
fn upload(
    buckets: &LocalBuckets,
    method: &str,
    rest: &str,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Reply {
    let Some(bucket) = rest.strip_suffix("/o").filter(|b| !b.contains('/')) else {
        return Reply::error(404, format!("no upload method at {rest}"));
    };
    if method != "POST" {
        return Reply::error(405, format!("uploads are POST, not {method}"));
    }
    if query.get("uploadType").map(String::as_str) != Some("media") {
        return Reply::error(
            400,
            "the emulator serves only uploadType=media (one request, the content as the body)",
        );
    }
    let Some(name) = query.get("name").filter(|n| !n.is_empty()) else {
        return Reply::error(400, "Required parameter: name");
    };
    let stored = buckets
        .put(bucket, name, body)
        .and_then(|()| buckets.object(bucket, name));
    match stored {
        Ok(Some(found)) => Reply::ok(object_json(bucket, &found)),
        Ok(None) => Reply::error(500, format!("{bucket}/{name} vanished once written")),
        Err(e) => error_reply(e),
    }
}

fn list(
    buckets: &LocalBuckets,
    bucket: &str,
    query: &HashMap<String, String>,
) -> Result<Reply, StorageError> {
    let max_results = match query.get("maxResults") {
        None => None,
        Some(text) => Some(text.parse::<usize>().map_err(|_| {
            StorageError::InvalidArgument(format!("maxResults '{text}' is not a number"))
        })?),
    }
    .map(|n| n.min(crate::storage::MAX_PAGE_SIZE))
    .or(Some(crate::storage::MAX_PAGE_SIZE));
    let page = buckets.page(&ListRequest {
        bucket: bucket.to_string(),
        prefix: query.get("prefix").cloned().unwrap_or_default(),
        delimiter: query.get("delimiter").cloned().filter(|d| !d.is_empty()),
        page_token: query.get("pageToken").cloned().filter(|t| !t.is_empty()),
        max_results,
        checksums: true,
    })?;
    let mut body = json!({
        "kind": "storage#objects",
        "items": page.objects.iter().map(|o| object_json(bucket, o)).collect::<Vec<_>>(),
    });
    if !page.prefixes.is_empty() {
        body["prefixes"] = json!(page.prefixes);
    }
    if let Some(token) = page.next_page_token {
        body["nextPageToken"] = json!(token);
    }
    Ok(Reply::ok(body))
}

fn media(buckets: &LocalBuckets, bucket: &str, name: &str) -> Response<Full<Bytes>> {
    let path = match buckets.object_path(bucket, name) {
        Ok(Some(path)) => path,
        Ok(None) => {
            return json_response(Reply::error(
                404,
                format!("No such object: {bucket}/{name}"),
            ))
        }
        Err(e) => return json_response(error_reply(e)),
    };
    let content = match std::fs::read(&path) {
        Ok(content) => content,
        Err(e) => return json_response(Reply::error(500, format!("{bucket}/{name}: {e}"))),
    };
    let crc = crc32c::crc32c(&content);
    let mut response = Response::new(Full::new(Bytes::from(content)));
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(value) =
        hyper::header::HeaderValue::from_str(&format!("crc32c={}", encode_crc32c(crc)))
    {
        headers.insert("x-goog-hash", value);
    }
    response
}
