//! Reading buckets: the third edge beside the state store and the transfer
//! service. `sts-plan` and `sts-verify` see only [`ObjectLister`]; `gcs`
//! speaks the Cloud Storage JSON API (Google or `STORAGE_EMULATOR_HOST`),
//! `local` reads the local engine's directories, and the emulator serves the
//! JSON API over `local` for Google's own clients.

pub mod gcs;
pub mod inventory;
pub mod local;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use chrono::{DateTime, Utc};

/// Runs blocking work (a directory walk, a plan over a million names) on
/// this thread, telling a multi-threaded tokio runtime so other tasks move
/// to other workers; on a current-thread runtime (or none) it just runs.
pub fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// At most this many objects per page, as Cloud Storage allows.
pub const MAX_PAGE_SIZE: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("bucket '{0}' does not exist")]
    BucketNotFound(String),
    #[error("Cloud Storage answered HTTP {code} for {what}: {message}")]
    Api {
        code: u16,
        what: String,
        message: String,
    },
    #[error("Cloud Storage still failing after {attempts} attempts: {last}")]
    Unavailable { attempts: u32, last: String },
    #[error("Cloud Storage sent a response that cannot be read: {0}")]
    Malformed(String),
    #[error("listing {bucket}/{prefix} repeated page token '{token}'")]
    RepeatedPageToken {
        bucket: String,
        prefix: String,
        token: String,
    },
    #[error("bucket directory {path}: {problem}")]
    Local { path: String, problem: String },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0} cannot write objects")]
    ReadOnly(&'static str),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
}

/// One object as Cloud Storage describes it (the fields plan and verify use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub name: String,
    pub size: u64,
    /// CRC32C of the content (Cloud Storage: base64 of the big-endian bytes).
    pub crc32c: Option<u32>,
    /// MD5 of the content; Cloud Storage omits it for composite objects.
    pub md5: Option<[u8; 16]>,
    pub generation: Option<i64>,
    pub updated: Option<DateTime<Utc>>,
    /// Storage class, KMS key name, temporary hold, customTime and
    /// timeCreated (what `--preserve` keeps and verification compares).
    pub metadata: crate::metadata::ObjectMetadata,
}

impl ObjectInfo {
    /// An object known by name and size only (plans need no more).
    pub fn sized(name: impl Into<String>, size: u64) -> Self {
        ObjectInfo {
            name: name.into(),
            size,
            crc32c: None,
            md5: None,
            generation: None,
            updated: None,
            metadata: crate::metadata::ObjectMetadata::default(),
        }
    }
}

/// `crc32c` as the JSON API writes it: base64 of the 4 big-endian bytes.
pub fn encode_crc32c(crc: u32) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

pub fn decode_crc32c(text: &str) -> Option<u32> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// `md5Hash` as the JSON API writes it: base64 of the 16-byte digest.
pub fn encode_md5(md5: &[u8; 16]) -> String {
    base64::engine::general_purpose::STANDARD.encode(md5)
}

pub fn decode_md5(text: &str) -> Option<[u8; 16]> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    bytes.try_into().ok()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketInfo {
    pub name: String,
    pub location: Option<String>,
}

/// One `objects.list` call.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    pub bucket: String,
    pub prefix: String,
    pub delimiter: Option<String>,
    pub page_token: Option<String>,
    /// At most [`MAX_PAGE_SIZE`]; `None` is the maximum.
    pub max_results: Option<usize>,
    /// Whether crc32c and md5 are wanted (a local lister reads every file).
    pub checksums: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub objects: Vec<ObjectInfo>,
    /// Common prefixes, when a delimiter was given.
    pub prefixes: Vec<String>,
    pub next_page_token: Option<String>,
}

#[async_trait]
pub trait ObjectLister: Send + Sync {
    async fn get_bucket(&self, bucket: &str) -> Result<BucketInfo, StorageError>;
    async fn list_page(&self, request: &ListRequest) -> Result<ListPage, StorageError>;
    /// List requests made so far (for figures and tests).
    fn requests(&self) -> u64;

    /// Writes (or replaces) the object `name` (`objects.insert`, a media
    /// upload): what manifests are written with. Listers that only read
    /// (inventory tables) refuse.
    async fn upload(
        &self,
        bucket: &str,
        name: &str,
        content: Vec<u8>,
        content_type: &str,
    ) -> Result<(), StorageError> {
        let _ = (bucket, name, content, content_type);
        Err(StorageError::ReadOnly("this object lister"))
    }

    /// Every object under `prefix` in name order, page after page. A page
    /// token seen twice is an error, never a loop.
    async fn list_all(
        &self,
        bucket: &str,
        prefix: &str,
        checksums: bool,
    ) -> Result<Vec<ObjectInfo>, StorageError> {
        let mut objects = Vec::new();
        let mut request = ListRequest {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            checksums,
            ..ListRequest::default()
        };
        let mut seen = std::collections::HashSet::new();
        loop {
            let page = self.list_page(&request).await?;
            objects.extend(page.objects);
            match page.next_page_token {
                Some(token) if !token.is_empty() => {
                    if !seen.insert(token.clone()) {
                        return Err(StorageError::RepeatedPageToken {
                            bucket: bucket.to_string(),
                            prefix: prefix.to_string(),
                            token,
                        });
                    }
                    request.page_token = Some(token);
                }
                _ => return Ok(objects),
            }
        }
    }

    /// The common prefixes and the objects directly under `prefix` (one
    /// level, delimiter `/`).
    async fn list_level(
        &self,
        bucket: &str,
        prefix: &str,
        checksums: bool,
    ) -> Result<(Vec<String>, Vec<ObjectInfo>), StorageError> {
        let mut request = ListRequest {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            delimiter: Some("/".into()),
            checksums,
            ..ListRequest::default()
        };
        let (mut prefixes, mut objects) = (Vec::new(), Vec::new());
        let mut seen = std::collections::HashSet::new();
        loop {
            let page = self.list_page(&request).await?;
            prefixes.extend(page.prefixes);
            objects.extend(page.objects);
            match page.next_page_token {
                Some(token) if !token.is_empty() => {
                    if !seen.insert(token.clone()) {
                        return Err(StorageError::RepeatedPageToken {
                            bucket: bucket.to_string(),
                            prefix: prefix.to_string(),
                            token,
                        });
                    }
                    request.page_token = Some(token);
                }
                _ => return Ok((prefixes, objects)),
            }
        }
    }
}

/// Objects and bytes listed so far, shared with whoever shows progress.
#[derive(Debug, Default)]
pub struct ListProgress {
    pub objects: AtomicU64,
    pub bytes: AtomicU64,
}

impl ListProgress {
    fn add(&self, objects: &[ObjectInfo]) {
        self.objects
            .fetch_add(objects.len() as u64, Ordering::Relaxed);
        self.bytes.fetch_add(
            objects.iter().map(|o| o.size).sum::<u64>(),
            Ordering::Relaxed,
        );
    }
}

/// Lists everything under `prefix` with up to `concurrency` listings at
/// once: the `/` levels are listed first (two levels down at most, while
/// there are fewer sub-prefixes than listings to run), then every
/// sub-prefix in full, concurrently. The result is in name order.
pub async fn list_concurrently(
    lister: Arc<dyn ObjectLister>,
    bucket: &str,
    prefix: &str,
    checksums: bool,
    concurrency: usize,
    progress: Arc<ListProgress>,
) -> Result<Vec<ObjectInfo>, StorageError> {
    let concurrency = concurrency.max(1);
    let mut objects = Vec::new();
    let mut frontier = vec![prefix.to_string()];
    for _ in 0..2 {
        if frontier.len() >= concurrency {
            break;
        }
        let mut next = Vec::new();
        for p in &frontier {
            let (prefixes, direct) = lister.list_level(bucket, p, checksums).await?;
            progress.add(&direct);
            objects.extend(direct);
            next.extend(prefixes);
        }
        frontier = next;
    }
    let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for p in frontier {
        let lister = Arc::clone(&lister);
        let semaphore = Arc::clone(&semaphore);
        let progress = Arc::clone(&progress);
        let bucket = bucket.to_string();
        tasks.spawn(async move {
            let _permit = semaphore
                .acquire_owned()
                .await
                .map_err(|e| StorageError::InvalidArgument(e.to_string()))?;
            let found = lister.list_all(&bucket, &p, checksums).await?;
            progress.add(&found);
            Ok::<_, StorageError>(found)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let found =
            joined.map_err(|e| StorageError::InvalidArgument(format!("listing: {e}")))??;
        objects.extend(found);
    }
    objects.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    Ok(objects)
}

/// Cloud Storage's bucket naming rules: 3-63 characters (222 with dots,
/// each dot-separated part at most 63), lowercase letters, digits, '-', '_'
/// and '.', a letter or digit at each end, not an IP address, not starting
/// with "goog", not containing "google" (or "g00gle").
pub fn validate_bucket_name(name: &str) -> Result<(), String> {
    let problem = |why: &str| Err(format!("'{name}' is not a valid bucket name: {why}"));
    let dotted = name.contains('.');
    let max = if dotted { 222 } else { 63 };
    if name.len() < 3 || name.len() > max {
        return problem(&format!(
            "it has {} characters; Cloud Storage allows 3 to {max}{}",
            name.len(),
            if dotted { "" } else { " (222 with dots)" }
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(*c)))
    {
        return problem(&format!(
            "{c:?} is not allowed (lowercase letters, digits, '-', '_' and '.' only)"
        ));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !alnum(name.chars().next()) || !alnum(name.chars().last()) {
        return problem("it must start and end with a letter or digit");
    }
    if name
        .split('.')
        .any(|part| part.is_empty() || part.len() > 63)
    {
        return problem("each dot-separated part must hold 1 to 63 characters");
    }
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() == 4 && parts.iter().all(|p| p.parse::<u8>().is_ok()) {
        return problem("it is an IP address in dotted-decimal notation");
    }
    if name.starts_with("goog") {
        return problem("names may not start with \"goog\"");
    }
    if name.contains("google") || name.contains("g00gle") {
        return problem("names may not contain \"google\" or a close misspelling of it");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_encoded_as_cloud_storage_does() {
        // The CRC32C check value of "123456789" is 0xE3069283.
        let crc = crc32c::crc32c(b"123456789");
        assert_eq!(crc, 0xE306_9283);
        assert_eq!(encode_crc32c(crc), "4waSgw==");
        assert_eq!(decode_crc32c("4waSgw=="), Some(crc));
        // Cloud Storage's documented md5Hash of an empty object.
        let empty = [
            0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04, 0xe9, 0x80, 0x09, 0x98, 0xec, 0xf8,
            0x42, 0x7e,
        ];
        assert_eq!(encode_md5(&empty), "1B2M2Y8AsgTpgAmY7PhCfg==");
        assert_eq!(decode_md5("1B2M2Y8AsgTpgAmY7PhCfg=="), Some(empty));
        assert_eq!(decode_crc32c("not base64!"), None);
        assert_eq!(decode_md5("AAAA"), None);
    }
}
