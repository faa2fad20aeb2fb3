//! [`ObjectLister`] over the Cloud Storage JSON API (reqwest, as the STS
//! client): Application Default Credentials, or plain HTTP with none to
//! `STORAGE_EMULATOR_HOST` (Google's own convention). 429, 500, 502, 503,
//! 504 and network errors are retried with exponential backoff and full
//! jitter ([`crate::http::RetryPolicy::cloud_storage`]).
//!
//! Why not a Google crate: google-cloud-storage (Rust) would add a second
//! HTTP and protobuf stack for three GET calls; this reuses ours.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use serde_json::Value;

use super::{
    decode_crc32c, decode_md5, BucketInfo, ListPage, ListRequest, ObjectInfo, ObjectLister,
    StorageError, MAX_PAGE_SIZE,
};
use crate::auth::GoogleAuth;
use crate::http::{self, Failed, Failure, Idempotency, RetryPolicy};

pub const EMULATOR_HOST_VARIABLE: &str = "STORAGE_EMULATOR_HOST";
const GOOGLE_ENDPOINT: &str = "https://storage.googleapis.com";
const LIST_FIELDS: &str =
    "items(name,size,crc32c,md5Hash,generation,updated,storageClass,kmsKeyName,temporaryHold,\
     customTime,timeCreated),prefixes,nextPageToken";

pub struct GcsClient {
    http: reqwest::Client,
    endpoint: String,
    auth: GoogleAuth,
    requests: AtomicU64,
    retry: RetryPolicy,
}

fn int64(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// One `storage#object` resource.
pub fn object_from_json(item: &Value) -> Result<ObjectInfo, StorageError> {
    let name = item
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| StorageError::Malformed(format!("an object without a name: {item}")))?;
    let size = int64(item.get("size"))
        .and_then(|s| u64::try_from(s).ok())
        .ok_or_else(|| StorageError::Malformed(format!("object {name}: no valid size")))?;
    let text = |key: &str| item.get(key).and_then(Value::as_str);
    let time = |key: &str| {
        text(key)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
    };
    Ok(ObjectInfo {
        name: name.to_string(),
        size,
        crc32c: text("crc32c").and_then(decode_crc32c),
        md5: text("md5Hash").and_then(decode_md5),
        generation: int64(item.get("generation")),
        updated: time("updated"),
        metadata: crate::metadata::ObjectMetadata {
            storage_class: text("storageClass").map(str::to_string),
            kms_key_name: text("kmsKeyName").map(str::to_string),
            temporary_hold: item.get("temporaryHold").and_then(Value::as_bool),
            custom_time: time("customTime"),
            time_created: time("timeCreated"),
        },
    })
}

impl GcsClient {
    pub fn new(endpoint: impl Into<String>, auth: GoogleAuth) -> Result<Self, StorageError> {
        let retry = RetryPolicy::cloud_storage();
        let http = retry
            .http_client()
            .map_err(|e| StorageError::Malformed(format!("cannot build the HTTP client: {e}")))?;
        Ok(GcsClient {
            http,
            endpoint: endpoint.into().trim_end_matches('/').to_string(),
            auth,
            requests: AtomicU64::new(0),
            retry,
        })
    }

    /// Google's endpoint with Application Default Credentials, or plain HTTP
    /// to `STORAGE_EMULATOR_HOST` with none.
    pub fn from_environment() -> Result<Self, StorageError> {
        let (endpoint, auth) =
            crate::auth::endpoint_and_auth(EMULATOR_HOST_VARIABLE, GOOGLE_ENDPOINT)?;
        GcsClient::new(endpoint, auth)
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, StorageError> {
        let url = format!("{}/storage/v1/{path}", self.endpoint);
        let outcome = http::retry(
            &self.retry,
            Idempotency::Safe,
            |failed: &Failed<StorageError>| failed.failure,
            |retry| {
                // The first retry is routine; from the second on, say so.
                if retry.retry > 1 {
                    let last = &retry.last.last;
                    tracing::warn!(
                        attempt = retry.retry,
                        "retrying Cloud Storage GET {path}: {last}"
                    );
                }
            },
            || self.attempt(&url, path, query),
        )
        .await;
        outcome.map_err(|gave_up| {
            gave_up.into_error(|attempts, _, last| StorageError::Unavailable { attempts, last })
        })
    }

    /// One attempt of [`GcsClient::get`].
    async fn attempt(
        &self,
        url: &str,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Value, Failed<StorageError>> {
        let permanent = Failed::permanent;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let request = self
            .auth
            .authorize(self.http.get(url).query(query))
            .await
            .map_err(|e| permanent(e.into()))?;
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                let what = format!("GET {path}");
                return Err(Failed::unanswered(e, &what)
                    .unwrap_or_else(|e| permanent(StorageError::Malformed(e.to_string()))));
            }
        };
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| Failed::unread_body(e, &format!("GET {path}")))?;
        if status.is_success() {
            return serde_json::from_str(&text)
                .map_err(|e| permanent(StorageError::Malformed(format!("GET {path}: {e}"))));
        }
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
        Err(Failed {
            failure: Failure::Status(status.as_u16()),
            last: format!("{}: {message}", status.as_u16()),
            answer: Some(StorageError::Api {
                code: status.as_u16(),
                what: format!("GET {path}"),
                message,
            }),
        })
    }
}

impl GcsClient {
    /// `POST /upload/storage/v1/b/{bucket}/o?uploadType=media&name=...`:
    /// one request, the whole content as the body. Retried as safe: the
    /// same content written again is the same object.
    async fn insert(
        &self,
        bucket: &str,
        name: &str,
        content: Vec<u8>,
        content_type: &str,
    ) -> Result<(), StorageError> {
        let url = format!("{}/upload/storage/v1/b/{bucket}/o", self.endpoint);
        let what = format!("upload of gs://{bucket}/{name}");
        let query = [("uploadType", "media"), ("name", name)];
        let content = bytes::Bytes::from(content);
        let outcome = http::retry(
            &self.retry,
            Idempotency::Safe,
            |failed: &Failed<StorageError>| failed.failure,
            |retry| {
                if retry.retry > 1 {
                    let last = &retry.last.last;
                    tracing::warn!(attempt = retry.retry, "retrying the {what}: {last}");
                }
            },
            || async {
                self.requests.fetch_add(1, Ordering::Relaxed);
                let request = self
                    .auth
                    .authorize(
                        self.http
                            .post(&url)
                            .query(&query)
                            .header(reqwest::header::CONTENT_TYPE, content_type)
                            .body(content.clone()),
                    )
                    .await
                    .map_err(|e| Failed::permanent(e.into()))?;
                let response = match request.send().await {
                    Ok(response) => response,
                    Err(e) => {
                        return Err(Failed::unanswered(e, &what).unwrap_or_else(|e| {
                            Failed::permanent(StorageError::Malformed(e.to_string()))
                        }))
                    }
                };
                let status = response.status();
                let text = response
                    .text()
                    .await
                    .map_err(|e| Failed::unread_body(e, &what))?;
                if status.is_success() {
                    return Ok(());
                }
                let message = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
                Err(Failed {
                    failure: Failure::Status(status.as_u16()),
                    last: format!("{}: {message}", status.as_u16()),
                    answer: Some(StorageError::Api {
                        code: status.as_u16(),
                        what: what.clone(),
                        message,
                    }),
                })
            },
        )
        .await;
        outcome.map_err(|gave_up| {
            gave_up.into_error(|attempts, _, last| StorageError::Unavailable { attempts, last })
        })
    }
}

fn not_found_is_bucket(bucket: &str) -> impl Fn(StorageError) -> StorageError + '_ {
    move |e| match e {
        StorageError::Api { code: 404, .. } => StorageError::BucketNotFound(bucket.to_string()),
        other => other,
    }
}

#[async_trait]
impl ObjectLister for GcsClient {
    async fn get_bucket(&self, bucket: &str) -> Result<BucketInfo, StorageError> {
        super::validate_bucket_name(bucket).map_err(StorageError::InvalidArgument)?;
        let body = self
            .get(&format!("b/{bucket}"), &[])
            .await
            .map_err(not_found_is_bucket(bucket))?;
        Ok(BucketInfo {
            name: body["name"].as_str().unwrap_or(bucket).to_string(),
            location: body["location"].as_str().map(str::to_owned),
        })
    }

    async fn list_page(&self, request: &ListRequest) -> Result<ListPage, StorageError> {
        super::validate_bucket_name(&request.bucket).map_err(StorageError::InvalidArgument)?;
        let mut query = vec![
            (
                "maxResults",
                request
                    .max_results
                    .unwrap_or(MAX_PAGE_SIZE)
                    .min(MAX_PAGE_SIZE)
                    .to_string(),
            ),
            ("fields", LIST_FIELDS.to_string()),
        ];
        if !request.prefix.is_empty() {
            query.push(("prefix", request.prefix.clone()));
        }
        if let Some(delimiter) = &request.delimiter {
            query.push(("delimiter", delimiter.clone()));
        }
        if let Some(token) = &request.page_token {
            query.push(("pageToken", token.clone()));
        }
        let body = self
            .get(&format!("b/{}/o", request.bucket), &query)
            .await
            .map_err(not_found_is_bucket(&request.bucket))?;
        let objects = match body.get("items") {
            Some(Value::Array(items)) => items
                .iter()
                .map(object_from_json)
                .collect::<Result<Vec<_>, _>>()?,
            _ => Vec::new(),
        };
        let prefixes = match body.get("prefixes") {
            Some(Value::Array(found)) => found
                .iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        Ok(ListPage {
            objects,
            prefixes,
            next_page_token: body["nextPageToken"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
        })
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    async fn upload(
        &self,
        bucket: &str,
        name: &str,
        content: Vec<u8>,
        content_type: &str,
    ) -> Result<(), StorageError> {
        super::validate_bucket_name(bucket).map_err(StorageError::InvalidArgument)?;
        self.insert(bucket, name, content, content_type)
            .await
            .map_err(not_found_is_bucket(bucket))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_decode_as_the_json_api_writes_them() {
        let object = object_from_json(&json!({
            "name": "a/b", "size": "12", "crc32c": "4waSgw==",
            "md5Hash": "1B2M2Y8AsgTpgAmY7PhCfg==", "generation": "1700000000000000",
            "updated": "2026-01-02T03:04:05.678Z"
        }))
        .unwrap();
        assert_eq!(object.size, 12);
        assert_eq!(object.crc32c, Some(0xE306_9283));
        assert!(object.md5.is_some());
        assert_eq!(object.generation, Some(1_700_000_000_000_000));
        assert!(object.updated.is_some());
        // Composite objects have no md5Hash.
        let composite =
            object_from_json(&json!({"name": "c", "size": 3, "crc32c": "AAAAAA=="})).unwrap();
        assert_eq!((composite.md5, composite.crc32c), (None, Some(0)));
        assert!(object_from_json(&json!({"size": "1"})).is_err());
        assert!(object_from_json(&json!({"name": "x", "size": "-1"})).is_err());
    }
}
