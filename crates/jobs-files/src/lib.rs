//! Where the bytes of job files live: a local directory (the default, beside an SQLite
//! database) or S3-compatible object storage, both through `object_store`, so one code
//! path serves both. Each file is one object named by its `FileId` under the storage's
//! prefix; its row (name, size, SHA-256, job) is in the database (`jobs_core::FileStore`).
//!
//! Writes stream: a body is hashed and counted while it is uploaded and refused past a
//! limit, without being held whole in memory. An object is written before its row and
//! deleted after it, so a row always names an object that exists, and an object without
//! a row (an upload refused or interrupted) is removed at once or, at worst, left over.

#[cfg(feature = "cli")]
mod cli;
mod sweep;

use std::{fmt, sync::Arc};

use bytes::Bytes;
use futures::{Stream, StreamExt, stream::BoxStream};
use jobs_core::{
    FieldError, FileId, FileOwner, FileRole, FileStore, JobError, JobFile, JobId, NewFile,
};
use object_store::{
    ObjectStore, ObjectStoreExt, aws::AmazonS3Builder, buffered::BufWriter, local::LocalFileSystem,
    path::Path,
};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

#[cfg(feature = "cli")]
pub use cli::FilesArgs;
pub use sweep::{FILES_ROLE, SWEEP_BATCH, run_sweeper, sweep};

/// What went wrong with a file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The body is longer than the limit (bytes).
    #[error("the file exceeds the limit of {0} bytes")]
    TooLarge(u64),
    /// Reading the body failed (the client went away, a broken upload).
    #[error("reading the body failed: {0}")]
    Body(String),
    /// No object for this file: deleted meanwhile.
    #[error("the file's bytes are gone")]
    Missing,
    /// The database refused or failed (a lost lease, an unknown job, a taken name...).
    #[error(transparent)]
    Store(#[from] JobError),
    /// The file storage failed.
    #[error("file storage: {0}")]
    Storage(String),
}

fn storage_error(error: object_store::Error) -> FileError {
    match error {
        object_store::Error::NotFound { .. } => FileError::Missing,
        other => FileError::Storage(other.to_string()),
    }
}

/// Size and SHA-256 (lowercase hex) of bytes written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub size: u64,
    pub sha256: String,
}

/// The storage of file bytes. Clones share it.
#[derive(Clone)]
pub struct FileStorage {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    /// Where it is, for logs: a directory or an `s3://` URL.
    location: String,
}

impl fmt::Debug for FileStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStorage")
            .field("location", &self.location)
            .finish()
    }
}

impl FileStorage {
    /// A directory, created if missing.
    pub fn local(dir: impl AsRef<std::path::Path>) -> Result<Self, FileError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)
            .map_err(|e| FileError::Storage(format!("creating {}: {e}", dir.display())))?;
        let store = LocalFileSystem::new_with_prefix(dir).map_err(storage_error)?;
        Ok(Self {
            store: Arc::new(store),
            prefix: Path::default(),
            location: dir.display().to_string(),
        })
    }

    /// `s3://bucket/prefix` (credentials, region and endpoint from the standard `AWS_*`
    /// environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
    /// `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`...), or a local directory (a path or `file://`).
    pub fn open(url: &str) -> Result<Self, FileError> {
        Self::open_with(url, std::iter::empty::<(&str, &str)>())
    }

    /// As `open`, with S3 options that override the environment, by their
    /// `object_store` names (`aws_endpoint`, `aws_allow_http`, `aws_access_key_id`...).
    pub fn open_with<'a>(
        url: &str,
        options: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, FileError> {
        let Some(rest) = url.strip_prefix("s3://") else {
            return Self::local(url.strip_prefix("file://").unwrap_or(url));
        };
        // object_store signs and speaks TLS with rustls on ring; one provider per process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = AmazonS3Builder::from_env().with_url(url);
        for (key, value) in options {
            let key = key
                .parse()
                .map_err(|e| FileError::Storage(format!("S3 option {key}: {e}")))?;
            builder = builder.with_config(key, value);
        }
        let store = builder.build().map_err(storage_error)?;
        let prefix = rest.split_once('/').map_or("", |(_, prefix)| prefix);
        Ok(Self {
            store: Arc::new(store),
            prefix: Path::from(prefix),
            location: url.to_owned(),
        })
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    fn path(&self, id: FileId) -> Path {
        self.prefix.clone().join(id.to_string())
    }

    /// Writes `body` as the object of `id`, counting and hashing it on the way; past
    /// `limit` bytes, or when the body fails, the upload is aborted and nothing stays.
    pub async fn put_stream<E: fmt::Display>(
        &self,
        id: FileId,
        body: impl Stream<Item = Result<Bytes, E>> + Unpin,
        limit: u64,
    ) -> Result<Stored, FileError> {
        let mut writer = BufWriter::new(self.store.clone(), self.path(id));
        match fill(&mut writer, body, limit).await {
            Ok(stored) => Ok(stored),
            Err(error) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(%abort, file = %id, "could not abort an upload");
                }
                Err(error)
            }
        }
    }

    pub async fn put(&self, id: FileId, bytes: Bytes) -> Result<Stored, FileError> {
        let body = futures::stream::once(async { Ok::<_, std::convert::Infallible>(bytes) });
        self.put_stream(id, Box::pin(body), u64::MAX).await
    }

    /// The bytes of `id` as a stream.
    pub async fn get(
        &self,
        id: FileId,
    ) -> Result<BoxStream<'static, Result<Bytes, FileError>>, FileError> {
        let found = self
            .store
            .get(&self.path(id))
            .await
            .map_err(storage_error)?;
        Ok(found
            .into_stream()
            .map(|r| r.map_err(storage_error))
            .boxed())
    }

    /// All the bytes of `id`.
    pub async fn read(&self, id: FileId) -> Result<Bytes, FileError> {
        let found = self
            .store
            .get(&self.path(id))
            .await
            .map_err(storage_error)?;
        found.bytes().await.map_err(storage_error)
    }

    /// Deletes the object of `id`; one already gone is no error.
    pub async fn delete(&self, id: FileId) -> Result<(), FileError> {
        match self.store.delete(&self.path(id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(other) => Err(storage_error(other)),
        }
    }

    /// Whether the object of `id` exists.
    pub async fn exists(&self, id: FileId) -> Result<bool, FileError> {
        match self.store.head(&self.path(id)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(other) => Err(storage_error(other)),
        }
    }

    /// Stores `body` and records it for `owner`: the object first, then its row; when
    /// the row is refused (an unknown job, a lost lease, a taken name) the object is
    /// deleted again.
    pub async fn store_file<E: fmt::Display>(
        &self,
        store: &(impl FileStore + ?Sized),
        owner: FileOwner,
        tenant: &str,
        name: &str,
        body: impl Stream<Item = Result<Bytes, E>> + Unpin,
        limit: u64,
    ) -> Result<JobFile, FileError> {
        jobs_core::files::validate_file_name("name", name)?;
        let id = FileId::new();
        let stored = self.put_stream(id, body, limit).await?;
        let file = NewFile {
            id,
            tenant: tenant.to_owned(),
            name: name.to_owned(),
            size: stored.size,
            sha256: stored.sha256,
        };
        match store.add_file(file, owner).await {
            Ok(recorded) => Ok(recorded),
            Err(refused) => {
                if let Err(error) = self.delete(id).await {
                    tracing::warn!(%error, file = %id, "left an unrecorded object behind");
                }
                Err(refused.into())
            }
        }
    }
}

/// The storage a process is configured with: `url` (`s3://bucket/prefix`, or a
/// directory) when given, else `dir`, else `default_dir(database_url)`.
pub fn configured(
    url: Option<&str>,
    dir: Option<&std::path::Path>,
    database_url: &str,
) -> Result<FileStorage, FileError> {
    match (url, dir) {
        (Some(url), _) => FileStorage::open(url),
        (None, Some(dir)) => FileStorage::local(dir),
        (None, None) => FileStorage::local(default_dir(database_url)),
    }
}

/// A `files` directory beside an SQLite database file; `./files` for PostgreSQL or an
/// in-memory database, where processes on other machines need shared object storage.
pub fn default_dir(database_url: &str) -> std::path::PathBuf {
    let beside = database_url
        .strip_prefix("sqlite:")
        .map(|rest| rest.trim_start_matches("//"))
        .map(|rest| rest.split('?').next().unwrap_or_default())
        .filter(|file| !file.is_empty() && !file.starts_with(':'))
        .and_then(|file| std::path::Path::new(file).parent().map(|p| p.to_path_buf()));
    beside.unwrap_or_default().join("files")
}

impl FileStorage {
    /// `store_file` for bytes in memory, without a limit.
    pub async fn store_bytes(
        &self,
        store: &(impl FileStore + ?Sized),
        owner: FileOwner,
        tenant: &str,
        name: &str,
        bytes: Vec<u8>,
    ) -> Result<JobFile, FileError> {
        let body = futures::stream::iter([Ok::<_, std::convert::Infallible>(Bytes::from(bytes))]);
        self.store_file(store, owner, tenant, name, body, u64::MAX)
            .await
    }

    /// All the bytes of job `job`'s file `name` of `role`; `Invalid` naming `name` when
    /// it has none of that name (for `tenant`, when given).
    pub async fn read_job_file(
        &self,
        store: &(impl FileStore + ?Sized),
        tenant: Option<&str>,
        job: JobId,
        role: FileRole,
        name: &str,
    ) -> Result<Bytes, FileError> {
        let files = store.job_files(tenant, &[job], role).await?;
        let Some(file) = files.into_iter().find(|f| f.name == name) else {
            return Err(JobError::Invalid(vec![FieldError::new(
                "name",
                format!("job {job} has no {} file named {name:?}", role.as_str()),
            )])
            .into());
        };
        self.read(file.id).await
    }
}

/// A file error as the domain's: the store's own, or the storage failing (worth
/// retrying).
impl From<FileError> for JobError {
    fn from(error: FileError) -> Self {
        match error {
            FileError::Store(error) => error,
            other => JobError::Unavailable(other.to_string()),
        }
    }
}

async fn fill<E: fmt::Display>(
    writer: &mut BufWriter,
    mut body: impl Stream<Item = Result<Bytes, E>> + Unpin,
    limit: u64,
) -> Result<Stored, FileError> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| FileError::Body(e.to_string()))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(FileError::TooLarge(limit));
        }
        hasher.update(&chunk);
        writer.put(chunk).await.map_err(storage_error)?;
    }
    writer
        .shutdown()
        .await
        .map_err(|e| FileError::Storage(e.to_string()))?;
    Ok(Stored {
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::default_dir;

    #[test]
    fn the_default_directory_is_beside_the_sqlite_file() {
        for (url, dir) in [
            ("sqlite://jobs.db?mode=rwc", "files"),
            (
                "sqlite:///var/lib/jobs/jobs.db?mode=rwc",
                "/var/lib/jobs/files",
            ),
            ("sqlite://data/jobs.db", "data/files"),
            ("sqlite::memory:", "files"),
            ("postgres://u@h/db", "files"),
        ] {
            assert_eq!(default_dir(url), PathBuf::from(dir), "{url}");
        }
    }
}
