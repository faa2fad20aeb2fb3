//! Google credentials for every Google API the tools call (STS, BigQuery,
//! Cloud Monitoring): Application Default Credentials through
//! google-cloud-auth, credentials handed over by the caller (a credentials
//! JSON, or a source of access tokens such as an Airflow connection), or
//! none at all when talking to a local emulator. Tokens and keys never reach
//! a log line, a `Debug` output or an error message.

use std::future::Future;
use std::sync::Arc;

use google_cloud_auth::credentials::{
    impersonated, service_account, user_account, AccessTokenCredentials, Builder, Credentials,
};

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
    #[error("the credentials handed over cannot be used: {0}")]
    Handed(String),
}

/// A caller's source of OAuth access tokens (an Airflow hook's credentials,
/// refreshed on its side). Called whenever a request needs a token.
pub trait TokenSource: Send + Sync {
    fn token(&self) -> std::pin::Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>>;
}

/// Credentials handed to the core instead of Application Default Credentials.
#[derive(Clone)]
pub enum Handed {
    /// A credentials JSON: `service_account`, `authorized_user` or
    /// `impersonated_service_account`, as gcloud and the IAM console write them.
    Json(serde_json::Value),
    /// Access tokens from the caller.
    Tokens(Arc<dyn TokenSource>),
    /// Application Default Credentials, only to impersonate from.
    ApplicationDefault,
}

/// What the caller hands over: where tokens come from and, optionally, a
/// chain of service accounts to impersonate (the last is the one acting;
/// those before it are delegates), as Airflow's `impersonation_chain`.
#[derive(Clone)]
pub struct HandedCredentials {
    pub source: Handed,
    pub impersonation_chain: Vec<String>,
}

impl std::fmt::Debug for HandedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.source {
            Handed::Json(json) => json.get("type").and_then(|t| t.as_str()).unwrap_or("json"),
            Handed::Tokens(_) => "token source",
            Handed::ApplicationDefault => "application default",
        };
        f.debug_struct("HandedCredentials")
            .field("source", &kind)
            .field("impersonation_chain", &self.impersonation_chain)
            .finish()
    }
}

tokio::task_local! {
    static HANDED: HandedCredentials;
}

/// Runs `work` with `handed` as the credentials of every Google client it
/// builds (`None`: the usual rules). Clients keep their credentials, so a
/// manager opened here uses them for as long as it lives.
pub async fn with_credentials<T>(
    handed: Option<HandedCredentials>,
    work: impl Future<Output = T>,
) -> T {
    match handed {
        Some(h) => HANDED.scope(h, work).await,
        None => work.await,
    }
}

/// `with_credentials` for code that builds clients without awaiting.
pub fn sync_with_credentials<T>(handed: Option<HandedCredentials>, work: impl FnOnce() -> T) -> T {
    match handed {
        Some(h) => HANDED.sync_scope(h, work),
        None => work(),
    }
}

fn handed() -> Option<HandedCredentials> {
    HANDED.try_with(Clone::clone).ok()
}

fn handed_error(e: impl std::fmt::Display) -> AuthError {
    // google-cloud-auth's build errors name fields, never key material.
    AuthError::Handed(e.to_string())
}

fn source_credentials(json: &serde_json::Value) -> Result<Credentials, AuthError> {
    let kind = json.get("type").and_then(|t| t.as_str()).unwrap_or("");
    let scopes = [CLOUD_PLATFORM_SCOPE];
    match kind {
        "service_account" => service_account::Builder::new(json.clone())
            .with_access_specifier(service_account::AccessSpecifier::from_scopes(scopes))
            .build(),
        "authorized_user" => user_account::Builder::new(json.clone())
            .with_scopes(scopes)
            .build(),
        "impersonated_service_account" => impersonated::Builder::new(json.clone())
            .with_scopes(scopes)
            .build(),
        other => return Err(unsupported(other)),
    }
    .map_err(handed_error)
}

fn unsupported(kind: &str) -> AuthError {
    if kind.is_empty() {
        return AuthError::Handed("the credentials JSON has no \"type\"".into());
    }
    AuthError::Handed(format!(
        "credentials of type \"{kind}\" are not supported \
         (service_account, authorized_user, impersonated_service_account)"
    ))
}

fn access_token_credentials(json: &serde_json::Value) -> Result<AccessTokenCredentials, AuthError> {
    let kind = json.get("type").and_then(|t| t.as_str()).unwrap_or("");
    let scopes = [CLOUD_PLATFORM_SCOPE];
    match kind {
        "service_account" => service_account::Builder::new(json.clone())
            .with_access_specifier(service_account::AccessSpecifier::from_scopes(scopes))
            .build_access_token_credentials(),
        "authorized_user" => user_account::Builder::new(json.clone())
            .with_scopes(scopes)
            .build_access_token_credentials(),
        "impersonated_service_account" => impersonated::Builder::new(json.clone())
            .with_scopes(scopes)
            .build_access_token_credentials(),
        other => return Err(unsupported(other)),
    }
    .map_err(handed_error)
}

/// Where bearer tokens come from.
#[derive(Clone)]
pub struct GoogleAuth {
    credentials: Option<AccessTokenCredentials>,
    tokens: Option<Arc<dyn TokenSource>>,
}

impl std::fmt::Debug for GoogleAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match (&self.credentials, &self.tokens) {
            (Some(_), _) => "google credentials",
            (None, Some(_)) => "token source",
            (None, None) => "anonymous",
        };
        f.write_str(kind)
    }
}

impl GoogleAuth {
    /// Application Default Credentials: GOOGLE_APPLICATION_CREDENTIALS, gcloud
    /// user credentials, then the metadata server. Nothing is fetched yet.
    pub fn application_default() -> Result<Self, AuthError> {
        // The file GOOGLE_APPLICATION_CREDENTIALS names is checked first, so a
        // directory or an unreadable file is named (its path, never content).
        if let Some(path) =
            std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").filter(|p| !p.is_empty())
        {
            let shown = std::path::Path::new(&path).display().to_string();
            if std::path::Path::new(&path).is_dir() {
                return Err(AuthError::Load(format!(
                    "GOOGLE_APPLICATION_CREDENTIALS names {shown}, a directory, not a credentials file"
                )));
            }
            if let Err(e) = std::fs::File::open(&path) {
                return Err(AuthError::Load(format!(
                    "GOOGLE_APPLICATION_CREDENTIALS names {shown}, which cannot be read: {e}"
                )));
            }
        }
        let credentials = Builder::default()
            .with_scopes([CLOUD_PLATFORM_SCOPE])
            .build_access_token_credentials()
            .map_err(|e| AuthError::Load(e.to_string()))?;
        Ok(GoogleAuth {
            credentials: Some(credentials),
            tokens: None,
        })
    }

    /// No credentials: for emulators (`*_EMULATOR_HOST`).
    pub fn anonymous() -> Self {
        GoogleAuth {
            credentials: None,
            tokens: None,
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.credentials.is_none() && self.tokens.is_none()
    }

    /// Credentials the caller handed over (see [`with_credentials`]).
    pub fn from_handed(handed: &HandedCredentials) -> Result<Self, AuthError> {
        let credentials = match (&handed.source, handed.impersonation_chain.split_last()) {
            (Handed::Tokens(tokens), None) => {
                return Ok(GoogleAuth {
                    credentials: None,
                    tokens: Some(Arc::clone(tokens)),
                })
            }
            (Handed::Tokens(_), Some(_)) => {
                return Err(AuthError::Handed(
                    "a token source cannot be combined with an impersonation chain \
                     (impersonate on the side that makes the tokens)"
                        .into(),
                ))
            }
            (Handed::Json(json), None) => access_token_credentials(json)?,
            (Handed::ApplicationDefault, None) => return Self::application_default(),
            (source, Some((target, delegates))) => {
                let from = match source {
                    Handed::Json(json) => source_credentials(json)?,
                    _ => Builder::default()
                        .with_scopes([CLOUD_PLATFORM_SCOPE])
                        .build()
                        .map_err(|e| AuthError::Load(e.to_string()))?,
                };
                impersonated::Builder::from_source_credentials(from)
                    .with_target_principal(target.clone())
                    .with_delegates(delegates.to_vec())
                    .with_scopes([CLOUD_PLATFORM_SCOPE])
                    .build_access_token_credentials()
                    .map_err(handed_error)?
            }
        };
        Ok(GoogleAuth {
            credentials: Some(credentials),
            tokens: None,
        })
    }

    /// The credentials for a client being built: those handed over by the
    /// caller when there are some (even towards an emulator: they were asked
    /// for), else none for an emulator, else Application Default Credentials.
    pub fn resolve(emulator: bool) -> Result<Self, AuthError> {
        match handed() {
            Some(h) => Self::from_handed(&h),
            None if emulator => Ok(Self::anonymous()),
            None => Self::application_default(),
        }
    }

    /// `request` with this caller's `Authorization` header (none when
    /// anonymous): what every client sends each attempt with.
    pub async fn authorize(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, AuthError> {
        Ok(match self.authorization().await? {
            Some(header) => request.header(reqwest::header::AUTHORIZATION, header),
            None => request,
        })
    }

    /// A JSON POST with this authorization, sent: its response, or the
    /// failure classified for the shared retry policy (`crate::http`),
    /// with no URL in the message.
    pub async fn post_json(
        &self,
        http: &reqwest::Client,
        url: String,
        body: &serde_json::Value,
    ) -> Result<reqwest::Response, (crate::http::Failure, String)> {
        let request = self
            .authorize(http.post(url).json(body))
            .await
            .map_err(|e| (crate::http::Failure::Permanent, e.to_string()))?;
        request
            .send()
            .await
            .map_err(|e| (crate::http::send_failure(&e), e.without_url().to_string()))
    }

    /// The `Authorization` header value, or `None` when anonymous. Tokens are
    /// cached and refreshed by google-cloud-auth. Bounded: a token endpoint
    /// that accepts and never answers costs at most [`TOKEN_ATTEMPTS`] waits
    /// of [`TOKEN_TIMEOUT`], each retry a WARN line naming where tokens come
    /// from, then an error.
    pub async fn authorization(&self) -> Result<Option<String>, AuthError> {
        if self.is_anonymous() {
            return Ok(None);
        }
        let mut last = String::new();
        for attempt in 1..=TOKEN_ATTEMPTS {
            match tokio::time::timeout(TOKEN_TIMEOUT, self.fetch()).await {
                Ok(Ok(header)) => return Ok(header),
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    last = format!(
                        "no token from {} within {} s",
                        self.source(),
                        TOKEN_TIMEOUT.as_secs()
                    );
                    if attempt < TOKEN_ATTEMPTS {
                        tracing::warn!(attempt, of = TOKEN_ATTEMPTS, "{last}; trying again");
                    }
                }
            }
        }
        Err(AuthError::Token(format!(
            "{last} ({TOKEN_ATTEMPTS} attempts): check the network path to the token endpoint \
             (metadata server, oauth2.googleapis.com) or the credentials"
        )))
    }

    async fn fetch(&self) -> Result<Option<String>, AuthError> {
        if let Some(tokens) = &self.tokens {
            let token = tokens.token().await.map_err(AuthError::Token)?;
            return Ok(Some(format!("Bearer {token}")));
        }
        let Some(credentials) = &self.credentials else {
            return Ok(None);
        };
        let token = credentials
            .access_token()
            .await
            .map_err(|e| AuthError::Token(e.to_string()))?;
        Ok(Some(format!("Bearer {}", token.token)))
    }

    /// Where tokens come from, for messages (never a secret: a path at most).
    fn source(&self) -> String {
        match (&self.credentials, &self.tokens) {
            (None, Some(_)) => "the token source handed over".into(),
            _ => match std::env::var("GOOGLE_APPLICATION_CREDENTIALS") {
                Ok(path) if !path.is_empty() => {
                    format!("the credentials of GOOGLE_APPLICATION_CREDENTIALS ({path})")
                }
                _ => "Application Default Credentials (gcloud's, or the metadata server)".into(),
            },
        }
    }
}

/// One wait for a token, and how many are made before giving up.
pub const TOKEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
pub const TOKEN_ATTEMPTS: u32 = 3;

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
            Ok((endpoint, GoogleAuth::resolve(true)?))
        }
        _ => Ok((google_endpoint.to_string(), GoogleAuth::resolve(false)?)),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A token endpoint that accepts and never answers.
    struct Silent;

    impl TokenSource for Silent {
        fn token(
            &self,
        ) -> std::pin::Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_endpoint_that_never_answers_is_an_error_within_the_bound() {
        let auth = GoogleAuth::from_handed(&HandedCredentials {
            source: Handed::Tokens(Arc::new(Silent)),
            impersonation_chain: vec![],
        })
        .unwrap();
        let started = tokio::time::Instant::now();
        let error = auth.authorization().await.unwrap_err().to_string();
        assert_eq!(started.elapsed(), TOKEN_TIMEOUT * TOKEN_ATTEMPTS);
        assert!(
            error.contains("no token from the token source handed over within 20 s"),
            "{error}"
        );
        assert!(error.contains("3 attempts"), "{error}");
    }
}
