//! The local engine's buckets as an [`ObjectLister`]: bucket `B` is the
//! directory `ROOT/B`, an object is a file named by its path under it.
//! Directories are walked in name order and pruned by the prefix and the
//! page token, so a page costs about its own size, not the bucket's.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use md5::Digest;

use super::validate_bucket_name;
use super::{BucketInfo, ListPage, ListRequest, ObjectInfo, ObjectLister, StorageError};
use crate::transfer::local::{metadata, ENGINE_DIR, TEMP_MARKER};

pub struct LocalBuckets {
    root: PathBuf,
    requests: AtomicU64,
}

fn local_error(path: &Path, problem: impl ToString) -> StorageError {
    StorageError::Local {
        path: path.display().to_string(),
        problem: problem.to_string(),
    }
}

/// Where listing resumes: after an object name, or past every name under a
/// common prefix already returned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resume {
    After(String),
    PastPrefix(String),
}

impl Resume {
    fn token(&self) -> String {
        match self {
            Resume::After(name) => format!("o:{name}"),
            Resume::PastPrefix(prefix) => format!("p:{prefix}"),
        }
    }

    fn parse(token: &str) -> Result<Resume, StorageError> {
        match token.split_at_checked(2) {
            Some(("o:", name)) => Ok(Resume::After(name.to_string())),
            Some(("p:", prefix)) => Ok(Resume::PastPrefix(prefix.to_string())),
            _ => Err(StorageError::InvalidArgument(format!(
                "invalid page token '{token}'"
            ))),
        }
    }

    /// Is `name` already behind us?
    fn passed(&self, name: &str) -> bool {
        match self {
            Resume::After(after) => name <= after.as_str(),
            Resume::PastPrefix(prefix) => name < prefix.as_str() || name.starts_with(prefix),
        }
    }

    /// Is every name under the directory key `dir` (ending in `/`) behind us?
    fn passed_dir(&self, dir: &str) -> bool {
        let bound = match self {
            Resume::After(after) => after.as_str(),
            Resume::PastPrefix(prefix) => {
                if dir.starts_with(prefix.as_str()) {
                    return true;
                }
                prefix.as_str()
            }
        };
        bound > dir && !bound.starts_with(dir)
    }
}

/// What one walk collects.
struct Walk<'a> {
    prefix: &'a str,
    delimiter: Option<&'a str>,
    resume: Option<Resume>,
    limit: usize,
    checksums: bool,
    objects: Vec<ObjectInfo>,
    prefixes: Vec<String>,
    last: Option<Resume>,
    /// Set when one more item than the limit was found.
    more: bool,
}

impl Walk<'_> {
    fn full(&self) -> bool {
        self.objects.len() + self.prefixes.len() >= self.limit
    }

    /// Returns true to stop the walk.
    fn common_prefix(&mut self, common: String) -> bool {
        if self.prefixes.last() == Some(&common) {
            return false;
        }
        if self.full() {
            self.more = true;
            return true;
        }
        self.last = Some(Resume::PastPrefix(common.clone()));
        self.prefixes.push(common);
        false
    }

    fn object(&mut self, name: String, path: &Path) -> Result<bool, StorageError> {
        if let Some(delimiter) = self.delimiter {
            if let Some(at) = name[self.prefix.len()..].find(delimiter) {
                let common = name[..self.prefix.len() + at + delimiter.len()].to_string();
                return Ok(self.common_prefix(common));
            }
        }
        if self.full() {
            self.more = true;
            return Ok(true);
        }
        let object = describe(name, path, self.checksums)?;
        self.last = Some(Resume::After(object.name.clone()));
        self.objects.push(object);
        Ok(false)
    }

    /// Walks `dir` (whose names start with `key`, `""` or ending in `/`) in
    /// name order. Returns true to stop.
    fn visit(&mut self, dir: &Path, key: &str) -> Result<bool, StorageError> {
        let mut entries = Vec::new();
        let listing = std::fs::read_dir(dir).map_err(|e| local_error(dir, e))?;
        for entry in listing {
            let entry = entry.map_err(|e| local_error(dir, e))?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                tracing::warn!("skipping {}: not a UTF-8 name", entry.path().display());
                continue;
            };
            if key.is_empty() && file_name == ENGINE_DIR || file_name.contains(TEMP_MARKER) {
                continue;
            }
            let is_dir = entry
                .file_type()
                .map_err(|e| local_error(&entry.path(), e))?
                .is_dir();
            let name = if is_dir {
                format!("{key}{file_name}/")
            } else {
                format!("{key}{file_name}")
            };
            entries.push((name, is_dir, entry.path()));
        }
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (name, is_dir, path) in entries {
            if is_dir {
                let relevant = name.starts_with(self.prefix) || self.prefix.starts_with(&name);
                if !relevant || self.resume.as_ref().is_some_and(|r| r.passed_dir(&name)) {
                    continue;
                }
                // A whole directory that rolls up into one common prefix:
                // one file found in it is enough.
                if self.delimiter == Some("/")
                    && name.len() > self.prefix.len()
                    && name.starts_with(self.prefix)
                {
                    let at = name[self.prefix.len()..].find('/').unwrap_or_default();
                    let common = name[..self.prefix.len() + at + 1].to_string();
                    if common == name && self.resume.as_ref().is_none_or(|r| !r.passed(&name)) {
                        if has_file(&path)? && self.common_prefix(common) {
                            return Ok(true);
                        }
                        continue;
                    }
                }
                if self.visit(&path, &name)? {
                    return Ok(true);
                }
            } else {
                if !name.starts_with(self.prefix)
                    || self.resume.as_ref().is_some_and(|r| r.passed(&name))
                {
                    continue;
                }
                if self.object(name, &path)? {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

fn has_file(dir: &Path) -> Result<bool, StorageError> {
    for entry in std::fs::read_dir(dir).map_err(|e| local_error(dir, e))? {
        let entry = entry.map_err(|e| local_error(dir, e))?;
        let kind = entry.file_type().map_err(|e| local_error(dir, e))?;
        if kind.is_dir() {
            if has_file(&entry.path())? {
                return Ok(true);
            }
        } else if !entry.file_name().to_string_lossy().contains(TEMP_MARKER) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// CRC32C and MD5 of a file's content.
pub fn file_checksums(path: &Path) -> std::io::Result<(u32, [u8; 16])> {
    let mut file = File::open(path)?;
    let mut buffer = vec![0u8; 256 * 1024];
    let mut crc = 0u32;
    let mut md5 = md5::Md5::new();
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        crc = crc32c::crc32c_append(crc, &buffer[..n]);
        md5.update(&buffer[..n]);
    }
    Ok((crc, md5.finalize().into()))
}

fn describe(name: String, path: &Path, checksums: bool) -> Result<ObjectInfo, StorageError> {
    // A dangling link is still an object (its copy fails); size 0.
    let metadata = std::fs::metadata(path).ok();
    let size = metadata.as_ref().map_or(0, |m| m.len());
    let modified = metadata.as_ref().and_then(|m| m.modified().ok());
    let updated = modified.map(DateTime::<Utc>::from);
    let mut object = ObjectInfo {
        generation: updated
            .and_then(|t| t.timestamp_nanos_opt())
            .map(|n| n / 1000),
        updated,
        ..ObjectInfo::sized(name, size)
    };
    if checksums {
        let (crc, md5) = file_checksums(path).map_err(|e| local_error(path, e))?;
        object.crc32c = Some(crc);
        object.md5 = Some(md5);
    }
    Ok(object)
}

impl LocalBuckets {
    pub fn open(root: &Path) -> Result<Self, StorageError> {
        if !root.is_dir() {
            return Err(local_error(
                root,
                "is not a directory (it should hold one directory per bucket)",
            ));
        }
        Ok(LocalBuckets {
            root: root.to_path_buf(),
            requests: AtomicU64::new(0),
        })
    }

    fn bucket_dir(&self, bucket: &str) -> Result<PathBuf, StorageError> {
        validate_bucket_name(bucket).map_err(StorageError::InvalidArgument)?;
        let dir = self.root.join(bucket);
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(StorageError::BucketNotFound(bucket.to_string()))
        }
    }

    /// One page, synchronously (the emulator and the async trait use it).
    pub fn page(&self, request: &ListRequest) -> Result<ListPage, StorageError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let dir = self.bucket_dir(&request.bucket)?;
        let limit = request.max_results.unwrap_or(usize::MAX);
        if limit == 0 {
            return Err(StorageError::InvalidArgument(
                "maxResults must be positive".into(),
            ));
        }
        let mut walk = Walk {
            prefix: &request.prefix,
            delimiter: request.delimiter.as_deref().filter(|d| !d.is_empty()),
            resume: request
                .page_token
                .as_deref()
                .filter(|t| !t.is_empty())
                .map(Resume::parse)
                .transpose()?,
            limit,
            checksums: request.checksums,
            objects: Vec::new(),
            prefixes: Vec::new(),
            last: None,
            more: false,
        };
        walk.visit(&dir, "")?;
        self.attach_metadata(&request.bucket, &mut walk.objects)?;
        let next_page_token = if walk.more {
            walk.last.as_ref().map(Resume::token)
        } else {
            None
        };
        Ok(ListPage {
            objects: walk.objects,
            prefixes: walk.prefixes,
            next_page_token,
        })
    }

    pub fn bucket(&self, bucket: &str) -> Result<BucketInfo, StorageError> {
        self.bucket_dir(bucket)?;
        Ok(BucketInfo {
            name: bucket.to_string(),
            location: Some("LOCAL".into()),
        })
    }

    /// The file behind an object, if it exists.
    pub fn object_path(&self, bucket: &str, name: &str) -> Result<Option<PathBuf>, StorageError> {
        let dir = self.bucket_dir(bucket)?;
        if name.is_empty()
            || name.contains(TEMP_MARKER)
            || name
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Ok(None);
        }
        let path = dir.join(name);
        Ok(path.is_file().then_some(path))
    }

    /// Writes the object `name` (replacing one there): written beside it
    /// under a temporary name, which is never an object, then renamed, so a
    /// reader sees the old object or the new one, never half of one.
    pub fn put(&self, bucket: &str, name: &str, content: &[u8]) -> Result<(), StorageError> {
        let dir = self.bucket_dir(bucket)?;
        if name.is_empty()
            || name.contains(TEMP_MARKER)
            || name.ends_with('/')
            || name
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(StorageError::InvalidArgument(format!(
                "'{name}' is not an object name this engine can store (empty parts, '.', '..')"
            )));
        }
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| local_error(parent, e))?;
        }
        let temp = PathBuf::from(format!(
            "{}{TEMP_MARKER}{}",
            path.display(),
            std::process::id()
        ));
        std::fs::write(&temp, content).map_err(|e| local_error(&temp, e))?;
        std::fs::rename(&temp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            local_error(&path, e)
        })
    }

    /// One object's metadata with checksums.
    pub fn object(&self, bucket: &str, name: &str) -> Result<Option<ObjectInfo>, StorageError> {
        match self.object_path(bucket, name)? {
            Some(path) => {
                let mut found = vec![describe(name.to_string(), &path, true)?];
                self.attach_metadata(bucket, &mut found)?;
                Ok(found.pop())
            }
            None => Ok(None),
        }
    }

    /// The engine's per-object metadata (`transfer::local::metadata`) of
    /// a page of objects in name order; `timeCreated` is the file's
    /// modification time where none is recorded.
    fn attach_metadata(
        &self,
        bucket: &str,
        objects: &mut [ObjectInfo],
    ) -> Result<(), StorageError> {
        let (Some(first), Some(last)) = (objects.first(), objects.last()) else {
            return Ok(());
        };
        let problem = |e: String| local_error(&self.root, e);
        let mut found = match metadata::open_existing(&self.root).map_err(problem)? {
            Some(conn) => {
                metadata::read_range(&conn, bucket, &first.name, &last.name).map_err(problem)?
            }
            None => Default::default(),
        };
        for object in objects {
            if let Some(kept) = found.remove(&object.name) {
                object.metadata = kept;
            }
            object.metadata.time_created = object.metadata.time_created.or(object.updated);
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectLister for LocalBuckets {
    async fn get_bucket(&self, bucket: &str) -> Result<BucketInfo, StorageError> {
        self.bucket(bucket)
    }

    async fn list_page(&self, request: &ListRequest) -> Result<ListPage, StorageError> {
        super::blocking(|| self.page(request))
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    async fn upload(
        &self,
        bucket: &str,
        name: &str,
        content: Vec<u8>,
        _content_type: &str,
    ) -> Result<(), StorageError> {
        super::blocking(|| self.put(bucket, name, &content))
    }

    /// One walk for the whole listing: no pages locally.
    async fn list_all(
        &self,
        bucket: &str,
        prefix: &str,
        checksums: bool,
    ) -> Result<Vec<ObjectInfo>, StorageError> {
        let request = ListRequest {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            checksums,
            ..ListRequest::default()
        };
        super::blocking(|| self.page(&request)).map(|page| page.objects)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(names: &[&str]) -> (tempfile::TempDir, LocalBuckets) {
        let root = tempfile::tempdir().unwrap();
        for name in names {
            let path = root.path().join("bkt").join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, name.as_bytes()).unwrap();
        }
        std::fs::create_dir_all(root.path().join("bkt/empty-dir/deeper")).unwrap();
        let lister = LocalBuckets::open(root.path()).unwrap();
        (root, lister)
    }

    fn all_pages(lister: &LocalBuckets, request: ListRequest) -> (Vec<String>, Vec<String>, usize) {
        let mut request = request;
        let (mut names, mut prefixes, mut pages) = (Vec::new(), Vec::new(), 0);
        loop {
            let page = lister.page(&request).unwrap();
            pages += 1;
            names.extend(page.objects.into_iter().map(|o| o.name));
            prefixes.extend(page.prefixes);
            match page.next_page_token {
                Some(token) => request.page_token = Some(token),
                None => return (names, prefixes, pages),
            }
        }
    }

    const NAMES: &[&str] = &[
        "a-b", "a/1", "a/2/x", "a/2/y", "a/3", "ab", "b/c/d", "top.txt", "z/q",
    ];

    #[test]
    fn pages_walk_in_name_order_with_prefix_and_delimiter() {
        let (_root, lister) = bucket(NAMES);
        let request = |prefix: &str, delimiter: Option<&str>, max: usize| ListRequest {
            bucket: "bkt".into(),
            prefix: prefix.into(),
            delimiter: delimiter.map(str::to_owned),
            max_results: Some(max),
            ..ListRequest::default()
        };
        for max in [1, 2, 3, 100] {
            let (names, prefixes, pages) = all_pages(&lister, request("", None, max));
            assert_eq!(names, NAMES, "max {max}");
            assert!(prefixes.is_empty());
            assert_eq!(pages, NAMES.len().div_ceil(max).max(1), "max {max}");
            let (names, _, _) = all_pages(&lister, request("a", None, max));
            assert_eq!(names, ["a-b", "a/1", "a/2/x", "a/2/y", "a/3", "ab"]);
            let (names, _, _) = all_pages(&lister, request("a/2", None, max));
            assert_eq!(names, ["a/2/x", "a/2/y"]);
            let (names, prefixes, _) = all_pages(&lister, request("", Some("/"), max));
            assert_eq!(names, ["a-b", "ab", "top.txt"], "max {max}");
            assert_eq!(
                prefixes,
                ["a/", "b/", "z/"],
                "empty directories are no prefix"
            );
            let (names, prefixes, _) = all_pages(&lister, request("a/", Some("/"), max));
            assert_eq!(names, ["a/1", "a/3"]);
            assert_eq!(prefixes, ["a/2/"]);
            // Another delimiter rolls up by name, not by directory.
            let (names, prefixes, _) = all_pages(&lister, request("a", Some("2"), max));
            assert_eq!(names, ["a-b", "a/1", "a/3", "ab"]);
            assert_eq!(prefixes, ["a/2"]);
        }
        assert!(matches!(
            lister.page(&request("", None, 0)),
            Err(StorageError::InvalidArgument(_))
        ));
        let mut bad = request("", None, 5);
        bad.page_token = Some("zz".into());
        assert!(lister.page(&bad).is_err());
        let mut missing = request("", None, 5);
        missing.bucket = "nope".into();
        assert!(matches!(
            lister.page(&missing),
            Err(StorageError::BucketNotFound(_))
        ));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn listing_works_on_a_current_thread_runtime() {
        let (_root, lister) = bucket(NAMES);
        let all = lister.list_all("bkt", "a/", true).await.unwrap();
        assert_eq!(all.len(), 4);
        assert!(all.iter().all(|o| o.crc32c.is_some() && o.md5.is_some()));
    }

    #[test]
    fn checksums_and_single_objects() {
        let (_root, lister) = bucket(NAMES);
        let object = lister.object("bkt", "a/2/x").unwrap().unwrap();
        assert_eq!(object.size, 5);
        assert_eq!(object.crc32c, Some(crc32c::crc32c(b"a/2/x")));
        assert_eq!(
            object.md5.map(|m| m.to_vec()),
            Some(md5::Md5::digest(b"a/2/x").to_vec())
        );
        assert!(lister.object("bkt", "a/2").unwrap().is_none());
        assert!(lister.object("bkt", "../bkt/a/1").unwrap().is_none());
    }
}
