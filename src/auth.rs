//! Google credentials for every Google API the tools call (STS, BigQuery,
//! Cloud Monitoring): Application Default Credentials through
//! google-cloud-auth, or none at all when talking to a local emulator.
//! Tokens never reach a log line or an error message.

use google_cloud_auth::credentials::{AccessTokenCredentials, Builder};

/// The one scope that covers STS, BigQuery and Cloud Monitoring.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "could not load Google credentials ({0}); set GOOGLE_APPLICATION_CREDENTIALS, \
         run `gcloud auth application-default login`, or run on Google Cloud"
    )]
    Load(String),
    #[error("could not get a Google access token: {0}")]
    Token(String),
}

/// Where bearer tokens come from.
#[derive(Clone, Debug)]
pub struct GoogleAuth {
    credentials: Option<AccessTokenCredentials>,
}

impl GoogleAuth {
    /// Application Default Credentials: GOOGLE_APPLICATION_CREDENTIALS, gcloud
    /// user credentials, then the metadata server. Nothing is fetched yet.
    pub fn application_default() -> Result<Self, AuthError> {
        let credentials = Builder::default()
            .with_scopes([CLOUD_PLATFORM_SCOPE])
            .build_access_token_credentials()
            .map_err(|e| AuthError::Load(e.to_string()))?;
        Ok(GoogleAuth {
            credentials: Some(credentials),
        })
    }

    /// No credentials: for emulators (`*_EMULATOR_HOST`).
    pub fn anonymous() -> Self {
        GoogleAuth { credentials: None }
    }

    pub fn is_anonymous(&self) -> bool {
        self.credentials.is_none()
    }

    /// The `Authorization` header value, or `None` when anonymous. Tokens are
    /// cached and refreshed by google-cloud-auth.
    pub async fn authorization(&self) -> Result<Option<String>, AuthError> {
        let Some(credentials) = &self.credentials else {
            return Ok(None);
        };
        let token = credentials
            .access_token()
            .await
            .map_err(|e| AuthError::Token(e.to_string()))?;
        Ok(Some(format!("Bearer {}", token.token)))
    }
}

/// Where a Google API lives and how to authenticate to it: plain HTTP to
/// `$emulator_variable` (`host:port` or a URL) with no credentials when that
/// is set, else `google_endpoint` with Application Default Credentials.
pub fn endpoint_and_auth(
    emulator_variable: &str,
    google_endpoint: &str,
) -> Result<(String, GoogleAuth), AuthError> {
    match std::env::var(emulator_variable) {
        Ok(host) if !host.is_empty() => {
            let endpoint = if host.contains("://") {
                host
            } else {
                format!("http://{host}")
            };
            Ok((endpoint, GoogleAuth::anonymous()))
        }
        _ => Ok((
            google_endpoint.to_string(),
            GoogleAuth::application_default()?,
        )),
    }
}

/// The project named in the ADC file (`project_id` of a service-account key,
/// `quota_project_id` of user credentials), if any.
pub fn project_from_credentials() -> Option<String> {
    let path = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS")?;
    let body = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&body).ok()?;
    ["project_id", "quota_project_id"]
        .iter()
        .find_map(|key| json.get(key).and_then(|v| v.as_str()).map(str::to_owned))
}
