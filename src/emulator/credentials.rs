//! Credentials checked as Google checks them, once a test asks for it
//! (`POST /_emulator/credentials`; until then every caller is let in, as
//! Google's own emulators do):
//!
//! - `POST /token`, Google's OAuth 2.0 token endpoint: the JWT bearer grant
//!   (a service account's RS256-signed assertion, checked against the
//!   account's registered public key, its `aud` the token endpoint, its `exp`
//!   in the future and at most an hour after `iat`) and the refresh-token
//!   grant (`authorized_user` credentials). Both issue opaque access tokens
//!   that expire after `token_lifetime_seconds`.
//! - Every API request carries either such a token, unexpired, or a
//!   service account's self-signed JWT (what google-cloud-auth sends): RS256
//!   with the account's key, unexpired, for this API (`aud`) or with a
//!   `scope`. Anything else is answered 401 UNAUTHENTICATED.
//!
//! Time is the emulator's clock (`clock_offset_seconds`), so a test expires a
//! token by moving that clock, not by waiting. Tokens, assertions and keys
//! are never logged; refusals are counted by reason for `/_emulator/stats`.

use std::collections::{BTreeMap, HashMap};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

/// Google's token endpoint, the `aud` an assertion may also name.
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Google's limit on an assertion: `exp` at most an hour after `iat`.
const MAX_ASSERTION_SECONDS: i64 = 3600;
/// Clock skew allowed on `iat` (a token issued "in the future").
const SKEW_SECONDS: i64 = 60;

/// A service account's public key, as Google publishes it (JWK: `n` and `e`
/// base64url, big-endian).
#[derive(Debug, Clone, Deserialize)]
pub struct PublicKey {
    #[serde(default)]
    pub kid: Option<String>,
    pub n: String,
    pub e: String,
}

/// What a test registers: the accounts' public keys, the refresh tokens of
/// user credentials (token -> the user it stands for), and how long issued
/// tokens live.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    #[serde(default)]
    pub service_accounts: BTreeMap<String, Vec<PublicKey>>,
    #[serde(default)]
    pub refresh_tokens: BTreeMap<String, String>,
    #[serde(default)]
    pub token_lifetime_seconds: Option<i64>,
}

#[derive(Debug, Default)]
pub struct Credentials {
    checking: bool,
    keys: BTreeMap<String, Vec<PublicKey>>,
    refresh_tokens: BTreeMap<String, String>,
    lifetime: Option<i64>,
    /// Issued access tokens: (account, expiry on the emulator's clock, used).
    issued: HashMap<String, (String, i64, bool)>,
    granted: u64,
    accepted: u64,
    refused: BTreeMap<String, u64>,
}

/// How long issued tokens live unless a test says otherwise (Google's hour).
const DEFAULT_LIFETIME: i64 = 3600;

impl Credentials {
    /// Registers keys and refresh tokens (added to those before) and turns
    /// checking on.
    pub fn register(&mut self, registration: Registration) -> Result<(), String> {
        if let Some(lifetime) = registration.token_lifetime_seconds {
            if !(1..=86_400).contains(&lifetime) {
                return Err("token_lifetime_seconds must be between 1 and 86400".into());
            }
            self.lifetime = Some(lifetime);
        }
        for (account, keys) in registration.service_accounts {
            for key in &keys {
                if decode(&key.n).is_none_or(|n| n.len() < 256) || decode(&key.e).is_none() {
                    return Err(format!(
                        "the key of {account}: n and e must be base64url, n of at least 2048 bits"
                    ));
                }
            }
            self.keys.entry(account).or_default().extend(keys);
        }
        self.refresh_tokens.extend(registration.refresh_tokens);
        self.checking = true;
        Ok(())
    }

    /// Counts, never a token: for `/_emulator/stats`.
    pub fn stats(&self) -> Value {
        json!({
            "checking": self.checking,
            "granted": self.granted,
            "accepted": self.accepted,
            "tokens_used": self.issued.values().filter(|(_, _, used)| *used).count(),
            "refused": self.refused,
        })
    }

    /// The account an issued token stands for (for `callers`).
    pub fn caller(&self, authorization: Option<&str>) -> Option<String> {
        let token = authorization?.strip_prefix("Bearer ")?;
        self.issued
            .get(token)
            .map(|(account, _, _)| account.clone())
    }

    fn refuse(&mut self, reason: &str) -> String {
        *self.refused.entry(reason.to_string()).or_default() += 1;
        reason.to_string()
    }

    /// An API request's `Authorization`: `None` when it may go on, else the
    /// reason it is refused (answered 401).
    pub fn check(&mut self, authorization: Option<&str>, path: &str, now: i64) -> Option<String> {
        if !self.checking {
            return None;
        }
        let Some(token) = authorization.and_then(|a| a.strip_prefix("Bearer ")) else {
            return Some(self.refuse("no bearer token"));
        };
        if let Some((_, expiry, used)) = self.issued.get_mut(token) {
            if now >= *expiry {
                return Some(self.refuse("access token expired"));
            }
            *used = true;
            self.accepted += 1;
            return None;
        }
        if token.split('.').count() != 3 {
            return Some(self.refuse("unknown access token"));
        }
        let claims = match self.verified_claims(token) {
            Ok(claims) => claims,
            Err(reason) => return Some(self.refuse(reason)),
        };
        if claims.exp <= now {
            return Some(self.refuse("self-signed JWT expired"));
        }
        if claims.iat > now + SKEW_SECONDS {
            return Some(self.refuse("self-signed JWT issued in the future"));
        }
        let audience_ok = match (&claims.aud, &claims.scope) {
            (Some(aud), _) => api_audience(path).is_some_and(|expected| *aud == expected),
            (None, Some(scope)) => scope.split(' ').any(|s| s == CLOUD_PLATFORM),
            (None, None) => false,
        };
        if !audience_ok {
            return Some(self.refuse("self-signed JWT for another audience"));
        }
        self.accepted += 1;
        None
    }

    /// `POST /token` (form-encoded, or JSON as google-cloud-auth sends a
    /// refresh), answered as Google's token endpoint answers: 200 with an
    /// access token, or 400 `invalid_grant`.
    pub fn grant(&mut self, body: &str, own_uri: &str, now: i64) -> (u16, Value) {
        let fields: HashMap<String, String> = if body.trim_start().starts_with('{') {
            serde_json::from_str::<serde_json::Map<String, Value>>(body)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(k, v)| Some((k, v.as_str()?.to_string())))
                .collect()
        } else {
            url::form_urlencoded::parse(body.as_bytes())
                .into_owned()
                .collect()
        };
        let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or_default();
        let account = match field("grant_type") {
            "urn:ietf:params:oauth:grant-type:jwt-bearer" => {
                match self.assertion_account(field("assertion"), own_uri, now) {
                    Ok(account) => account,
                    Err(reason) => return invalid_grant(self.refuse(reason)),
                }
            }
            "refresh_token" => match self.refresh_tokens.get(field("refresh_token")) {
                Some(user) => user.clone(),
                None => return invalid_grant(self.refuse("unknown refresh token")),
            },
            _ => {
                self.refuse("unsupported grant type");
                return (
                    400,
                    json!({"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}),
                );
            }
        };
        let lifetime = self.lifetime.unwrap_or(DEFAULT_LIFETIME);
        let token = format!("ya29.emulator-{}", random_hex(24));
        self.issued
            .insert(token.clone(), (account, now + lifetime, false));
        self.granted += 1;
        // Told a second less than it lives, as Google does (3599 for an
        // hour): a token used at its last moment is still good on arrival.
        let expires_in = (lifetime - 1).max(1);
        (
            200,
            json!({"access_token": token, "expires_in": expires_in, "token_type": "Bearer"}),
        )
    }

    /// The JWT bearer grant's assertion: signed by a registered key, for
    /// this token endpoint, unexpired and at most an hour long.
    fn assertion_account(
        &self,
        assertion: &str,
        own_uri: &str,
        now: i64,
    ) -> Result<String, &'static str> {
        let claims = self.verified_claims(assertion)?;
        if !matches!(claims.aud.as_deref(), Some(aud) if aud == own_uri || aud == GOOGLE_TOKEN_URI)
        {
            return Err("assertion for another audience");
        }
        if claims.exp <= now {
            return Err("assertion expired");
        }
        if claims.iat > now + SKEW_SECONDS {
            return Err("assertion issued in the future");
        }
        if claims.exp - claims.iat > MAX_ASSERTION_SECONDS {
            return Err("assertion valid for more than an hour");
        }
        Ok(claims.iss)
    }

    /// The claims of an RS256 JWT whose signature one of its issuer's
    /// registered keys verifies.
    fn verified_claims(&self, jwt: &str) -> Result<Claims, &'static str> {
        let mut parts = jwt.splitn(3, '.');
        let (Some(header), Some(payload), Some(signature)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err("malformed JWT");
        };
        let header: Value = decode(header)
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or("malformed JWT")?;
        if header["alg"] != "RS256" {
            return Err("JWT not signed with RS256");
        }
        let claims: Claims = decode(payload)
            .and_then(|c| serde_json::from_slice(&c).ok())
            .ok_or("malformed JWT claims")?;
        let signature = decode(signature).ok_or("malformed JWT")?;
        let keys = self
            .keys
            .get(&claims.iss)
            .ok_or("unknown service account")?;
        let kid = header["kid"].as_str();
        let signed = &jwt[..header_and_payload_len(jwt)];
        let verified = keys
            .iter()
            .filter(|key| kid.is_none() || key.kid.is_none() || key.kid.as_deref() == kid)
            .any(|key| verify_rs256(key, signed.as_bytes(), &signature));
        if !verified {
            return Err("invalid JWT signature");
        }
        Ok(claims)
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    iss: String,
    #[serde(default)]
    aud: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    exp: i64,
    #[serde(default)]
    iat: i64,
}

fn invalid_grant(reason: String) -> (u16, Value) {
    (
        400,
        json!({"error": "invalid_grant", "error_description": reason}),
    )
}

fn decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

fn header_and_payload_len(jwt: &str) -> usize {
    jwt.rfind('.').unwrap_or(0)
}

fn verify_rs256(key: &PublicKey, message: &[u8], signature: &[u8]) -> bool {
    let (Some(n), Some(e)) = (decode(&key.n), decode(&key.e)) else {
        return false;
    };
    ring::signature::RsaPublicKeyComponents { n, e }
        .verify(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            message,
            signature,
        )
        .is_ok()
}

/// The `aud` a self-signed JWT names for the API a path belongs to.
fn api_audience(path: &str) -> Option<&'static str> {
    let host = if path.starts_with("/v1/") {
        "storagetransfer"
    } else if path.starts_with("/storage/") {
        "storage"
    } else if path.starts_with("/bigquery/") {
        "bigquery"
    } else if path.starts_with("/v3/") {
        "monitoring"
    } else if path.starts_with("/serviceusage/") {
        "serviceusage"
    } else if path.starts_with("/cloudresourcemanager/") {
        "cloudresourcemanager"
    } else {
        return None;
    };
    Some(match host {
        "storagetransfer" => "https://storagetransfer.googleapis.com/",
        "storage" => "https://storage.googleapis.com/",
        "bigquery" => "https://bigquery.googleapis.com/",
        "monitoring" => "https://monitoring.googleapis.com/",
        "serviceusage" => "https://serviceusage.googleapis.com/",
        _ => "https://cloudresourcemanager.googleapis.com/",
    })
}

fn random_hex(bytes: usize) -> String {
    use ring::rand::SecureRandom;
    let mut buffer = vec![0u8; bytes];
    // The system's generator; an all-zero token would still be unique per
    // count, so a failure here is not worth failing a grant over.
    let _ = ring::rand::SystemRandom::new().fill(&mut buffer);
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh RSA key (openssl, as a service account key file holds one).
    fn key_pair() -> ring::signature::RsaKeyPair {
        let pem = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .output()
            .expect("openssl");
        let pem = String::from_utf8(pem.stdout).unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        ring::signature::RsaKeyPair::from_pkcs8(&der).unwrap()
    }

    fn jwk(key: &ring::signature::RsaKeyPair) -> PublicKey {
        let public: ring::signature::RsaPublicKeyComponents<Vec<u8>> = key.public().into();
        PublicKey {
            kid: Some("k1".into()),
            n: URL_SAFE_NO_PAD.encode(public.n),
            e: URL_SAFE_NO_PAD.encode(public.e),
        }
    }

    fn signed(key: &ring::signature::RsaKeyPair, claims: Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let message = format!("{header}.{payload}");
        let mut signature = vec![0; key.public().modulus_len()];
        key.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            message.as_bytes(),
            &mut signature,
        )
        .unwrap();
        format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    const ACCOUNT: &str = "sa@p.iam.gserviceaccount.com";
    const OWN: &str = "http://127.0.0.1:1/token";

    fn grant_form(assertion: &str) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
            .append_pair("assertion", assertion)
            .finish()
    }

    /// Each check of the JWT bearer grant and of self-signed JWTs refuses
    /// on its own: a key the account does not have, another audience, an
    /// expired or too long assertion.
    #[test]
    fn assertions_and_self_signed_jwts_are_checked_as_google_checks_them() {
        let (key, other) = (key_pair(), key_pair());
        let mut credentials = Credentials::default();
        credentials
            .register(Registration {
                service_accounts: [(ACCOUNT.to_string(), vec![jwk(&key)])].into(),
                ..Registration::default()
            })
            .unwrap();
        let now = 1_000_000;
        let claims = |aud: &str, iat: i64, exp: i64| json!({"iss": ACCOUNT, "aud": aud, "scope": CLOUD_PLATFORM, "iat": iat, "exp": exp});
        let good = claims(OWN, now, now + 3600);
        let (status, body) = credentials.grant(&grant_form(&signed(&key, good.clone())), OWN, now);
        assert_eq!(status, 200, "{body}");
        let (_, body) = credentials.grant(
            &grant_form(&signed(&key, claims(GOOGLE_TOKEN_URI, now, now + 60))),
            OWN,
            now,
        );
        assert!(
            body["access_token"].is_string(),
            "Google's own token URI is an audience too: {body}"
        );
        for (assertion, reason) in [
            (signed(&other, good.clone()), "invalid JWT signature"),
            (
                signed(&key, claims("https://example.com/token", now, now + 3600)),
                "assertion for another audience",
            ),
            (
                signed(&key, claims(OWN, now - 7200, now - 3600)),
                "assertion expired",
            ),
            (
                signed(&key, claims(OWN, now, now + 7200)),
                "assertion valid for more than an hour",
            ),
            (
                signed(&key, claims(OWN, now + 600, now + 1200)),
                "assertion issued in the future",
            ),
        ] {
            let (status, body) = credentials.grant(&grant_form(&assertion), OWN, now);
            assert_eq!(
                (status, body["error_description"].as_str()),
                (400, Some(reason)),
                "{body}"
            );
        }
        // Self-signed JWTs sent to an API (google-cloud-auth's way).
        let api = "/v1/transferJobs";
        let bearer = |jwt: String| format!("Bearer {jwt}");
        let scoped =
            json!({"iss": ACCOUNT, "scope": CLOUD_PLATFORM, "iat": now, "exp": now + 3600});
        assert_eq!(
            credentials.check(Some(&bearer(signed(&key, scoped.clone()))), api, now),
            None
        );
        let for_sts = json!({"iss": ACCOUNT, "aud": "https://storagetransfer.googleapis.com/", "iat": now, "exp": now + 3600});
        assert_eq!(
            credentials.check(Some(&bearer(signed(&key, for_sts.clone()))), api, now),
            None
        );
        for (jwt, reason) in [
            (signed(&other, scoped.clone()), "invalid JWT signature"),
            (
                signed(&key, for_sts),
                "self-signed JWT for another audience",
            ),
            (
                signed(&key, json!({"iss": ACCOUNT, "iat": now, "exp": now + 3600})),
                "self-signed JWT for another audience",
            ),
            (signed(&key, scoped.clone()), "self-signed JWT expired"),
        ] {
            let path = if reason.ends_with("audience") {
                "/storage/v1/b/x"
            } else {
                api
            };
            let at = if reason.ends_with("expired") {
                now + 3600
            } else {
                now
            };
            assert_eq!(
                credentials.check(Some(&bearer(jwt)), path, at).as_deref(),
                Some(reason)
            );
        }
    }

    #[test]
    fn checking_is_off_until_a_test_registers_something() {
        let mut credentials = Credentials::default();
        assert_eq!(credentials.check(None, "/v1/transferJobs", 0), None);
        credentials.register(Registration::default()).unwrap();
        assert_eq!(
            credentials.check(None, "/v1/transferJobs", 0).as_deref(),
            Some("no bearer token")
        );
        assert_eq!(
            credentials
                .check(Some("Bearer ya29.opaque"), "/v1/transferJobs", 0)
                .as_deref(),
            Some("unknown access token")
        );
    }

    #[test]
    fn issued_tokens_expire_on_the_emulators_clock() {
        let mut credentials = Credentials::default();
        credentials
            .register(Registration {
                refresh_tokens: [("r".to_string(), "user@example.com".to_string())].into(),
                token_lifetime_seconds: Some(60),
                ..Registration::default()
            })
            .unwrap();
        let (status, body) =
            credentials.grant("grant_type=refresh_token&refresh_token=r", "", 1000);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["expires_in"], 59);
        let header = format!("Bearer {}", body["access_token"].as_str().unwrap());
        assert_eq!(credentials.check(Some(&header), "/v1/x", 1059), None);
        assert_eq!(
            credentials.check(Some(&header), "/v1/x", 1060).as_deref(),
            Some("access token expired")
        );
        let json = r#"{"grant_type":"refresh_token","client_id":"c","client_secret":"s","refresh_token":"r","scopes":null}"#;
        assert_eq!(
            credentials.grant(json, "", 1000).0,
            200,
            "as google-cloud-auth asks"
        );
        let (status, body) = credentials.grant("grant_type=refresh_token&refresh_token=x", "", 0);
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );
    }
}
