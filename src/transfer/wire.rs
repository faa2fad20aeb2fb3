//! STS v1 REST encoding shared by our client and our emulator: the
//! long-running Operation envelope, google.rpc error bodies, and the key
//! spellings Google's clients send.

use serde_json::{json, Map, Value};

use crate::model::{OperationStatus, TransferOperation};

pub const OPERATION_METADATA_TYPE: &str =
    "type.googleapis.com/google.storagetransfer.v1.TransferOperation";
pub const EMPTY_TYPE: &str = "type.googleapis.com/google.protobuf.Empty";
/// STS's largest page.
pub const MAX_PAGE_SIZE: usize = 256;

/// A TransferOperation wrapped as a google.longrunning.Operation.
pub fn operation_envelope(op: &TransferOperation) -> Value {
    let mut metadata = match serde_json::to_value(op) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    metadata.insert(
        "@type".into(),
        Value::String(OPERATION_METADATA_TYPE.into()),
    );
    let mut envelope =
        json!({ "name": op.name, "metadata": metadata, "done": !op.status.is_active() });
    match op.status {
        OperationStatus::Success => envelope["response"] = json!({ "@type": EMPTY_TYPE }),
        OperationStatus::Failed => {
            envelope["error"] = json!({ "code": 2, "message": "the transfer operation failed: see errorBreakdowns" })
        }
        OperationStatus::Aborted => {
            envelope["error"] =
                json!({ "code": 1, "message": "the transfer operation was cancelled" })
        }
        _ => {}
    }
    envelope
}

/// The TransferOperation inside an Operation envelope.
pub fn operation_from_envelope(envelope: &Value) -> Result<TransferOperation, String> {
    let metadata = envelope.get("metadata").ok_or_else(|| {
        format!(
            "operation {} has no metadata",
            envelope.get("name").unwrap_or(&Value::Null)
        )
    })?;
    serde_json::from_value(metadata.clone())
        .map_err(|e| format!("malformed TransferOperation: {e}"))
}

/// The google.rpc status name for an HTTP status.
pub fn status_name(http: u16) -> &'static str {
    match http {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ALREADY_EXISTS",
        412 => "FAILED_PRECONDITION",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// The HTTP status Google answers a google.rpc code with.
pub fn http_of(code: &str) -> u16 {
    match code {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => 400,
        "UNAUTHENTICATED" => 401,
        "PERMISSION_DENIED" => 403,
        "NOT_FOUND" => 404,
        "ALREADY_EXISTS" | "ABORTED" => 409,
        "RESOURCE_EXHAUSTED" => 429,
        "CANCELLED" => 499,
        "UNIMPLEMENTED" => 501,
        "UNAVAILABLE" => 503,
        "DEADLINE_EXCEEDED" => 504,
        _ => 500,
    }
}

pub fn error_body(http: u16, status: &str, message: &str) -> Value {
    json!({ "error": { "code": http, "message": message, "status": status } })
}

pub fn snake_to_camel(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' && !out.is_empty() {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Rewrites every object key to camelCase (Airflow's hook and other clients
/// send snake_case), leaving `@type` and values alone.
pub fn camel_case_keys(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (snake_to_camel(&k), camel_case_keys(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(camel_case_keys).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_camel_case_recursively() {
        let v = camel_case_keys(
            json!({"project_id": "p", "transfer_job": {"transfer_spec": {"gcs_data_source": {"bucket_name": "b"}}}, "@type": "x", "alreadyCamel": [{"a_b": 1}]}),
        );
        assert_eq!(
            v,
            json!({"projectId": "p", "transferJob": {"transferSpec": {"gcsDataSource": {"bucketName": "b"}}}, "@type": "x", "alreadyCamel": [{"aB": 1}]})
        );
    }

    #[test]
    fn envelope_round_trips_and_marks_done() {
        let op: TransferOperation = serde_json::from_value(json!({"name": "transferOperations/x", "status": "SUCCESS", "transferJobName": "transferJobs/j"})).unwrap();
        let env = operation_envelope(&op);
        assert_eq!(env["done"], true);
        assert_eq!(env["metadata"]["@type"], OPERATION_METADATA_TYPE);
        assert_eq!(env["response"]["@type"], EMPTY_TYPE);
        assert_eq!(operation_from_envelope(&env).unwrap(), op);
    }
}
