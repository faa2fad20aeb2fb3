//! The heartbeat (SPEC 8) written to Cloud Monitoring's REST API: one int64
//! point per metric, on the `global` resource of the chosen project.

use async_trait::async_trait;
use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::auth::GoogleAuth;
use crate::http::{self, Failure, Idempotency, RetryPolicy};
use crate::manager::Heartbeat;

pub const EMULATOR_HOST_VARIABLE: &str = "MONITORING_EMULATOR_HOST";
const GOOGLE_ENDPOINT: &str = "https://monitoring.googleapis.com";

pub struct CloudMonitoring {
    http: reqwest::Client,
    endpoint: String,
    auth: GoogleAuth,
    project: String,
    retry: RetryPolicy,
}

impl CloudMonitoring {
    pub fn new(
        endpoint: impl Into<String>,
        auth: GoogleAuth,
        project: String,
    ) -> Result<Self, String> {
        let retry = RetryPolicy::monitoring();
        let http = retry
            .http_client()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(CloudMonitoring {
            http,
            endpoint: endpoint.into().trim_end_matches('/').to_string(),
            auth,
            project,
            retry,
        })
    }

    /// Google's endpoint with Application Default Credentials, or plain HTTP
    /// to `MONITORING_EMULATOR_HOST` with none.
    pub fn from_environment(project: String) -> Result<Self, String> {
        let (endpoint, auth) =
            crate::auth::endpoint_and_auth(EMULATOR_HOST_VARIABLE, GOOGLE_ENDPOINT)
                .map_err(|e| e.to_string())?;
        CloudMonitoring::new(endpoint, auth, project)
    }
}

/// The `timeSeries.create` body for these points, all stamped `end_time`.
pub fn time_series_body(project: &str, points: &[(String, i64)], end_time: &str) -> Value {
    let series: Vec<Value> = points
        .iter()
        .map(|(metric, value)| {
            json!({
                "metric": { "type": metric },
                "resource": { "type": "global", "labels": { "project_id": project } },
                "metricKind": "GAUGE",
                "valueType": "INT64",
                "points": [{ "interval": { "endTime": end_time }, "value": { "int64Value": value.to_string() } }],
            })
        })
        .collect();
    json!({ "timeSeries": series })
}

#[async_trait]
impl Heartbeat for CloudMonitoring {
    async fn publish(&self, points: &[(String, i64)]) -> Result<(), String> {
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        let body = time_series_body(&self.project, points, &now);
        // timeSeries.create takes no request id, and a repeat of a write that
        // arrived is refused (points go in order): only a request that never
        // left may be repeated. The policy makes one attempt anyway: the
        // next cycle writes fresh points.
        http::retry(
            &self.retry,
            Idempotency::Unsafe,
            |(failure, _): &(Failure, String)| *failure,
            |_| {},
            || self.write(&body),
        )
        .await
        .map_err(|gave_up| gave_up.last.1)
    }
}

impl CloudMonitoring {
    /// One `timeSeries.create`.
    async fn write(&self, body: &Value) -> Result<(), (Failure, String)> {
        let url = format!("{}/v3/projects/{}/timeSeries", self.endpoint, self.project);
        let response = self.auth.post_json(&self.http, url, body).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let message: String = text.chars().take(300).collect();
        Err((
            Failure::Status(status.as_u16()),
            format!("Cloud Monitoring answered {status}: {message}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_one_series_per_point() {
        let points = vec![(
            "custom.googleapis.com/sts_job_manager/status/done".to_string(),
            3,
        )];
        let body = time_series_body("p", &points, "2026-01-01T00:00:00Z");
        let series = &body["timeSeries"][0];
        assert_eq!(
            series["metric"]["type"],
            "custom.googleapis.com/sts_job_manager/status/done"
        );
        assert_eq!(series["resource"]["labels"]["project_id"], "p");
        assert_eq!(series["points"][0]["value"]["int64Value"], "3");
    }
}
