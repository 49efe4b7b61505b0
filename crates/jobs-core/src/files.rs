//! Files of jobs: inputs a job is created with and results its attempt attaches. The
//! bytes live in a file storage (a directory or object storage, outside this crate);
//! the store keeps one row per file, which is what this port speaks of.
//!
//! An input is uploaded either before its job exists (staged, then attached when the job
//! is created, in its transaction, so no worker can claim a job whose inputs are half
//! uploaded) or to an existing job. A result is attached by the holder of the job's
//! lease. Rows of jobs that were deleted, and staged files never attached, are removed
//! by a sweep that deletes the objects first and the rows after.

use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::{Enqueued, FieldError, FileId, JobError, JobId, Lease, NewJob};

/// Longest file name, in bytes.
pub const NAME_MAX_LEN: usize = 255;
/// Most staged files one job may be created with.
pub const MAX_FILES_PER_CREATE: usize = 100;
/// A staged file may be attached for this long after its upload.
pub const STAGED_FILE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Staged files are swept this long after their upload: later than the last moment they
/// can be attached, so a sweep never races an attach.
pub const STAGED_FILE_SWEEP_AFTER: Duration = Duration::from_secs(25 * 3600);

/// Whether a file is an input of its job or a result of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileRole {
    Input,
    Result,
}

impl FileRole {
    pub fn as_str(self) -> &'static str {
        match self {
            FileRole::Input => "input",
            FileRole::Result => "result",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "input" => Some(FileRole::Input),
            "result" => Some(FileRole::Result),
            _ => None,
        }
    }
}

/// A stored file as the store records it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobFile {
    /// Also the name of its object in the file storage.
    pub id: FileId,
    /// `None` while staged (uploaded, not yet attached to a job).
    pub job_id: Option<JobId>,
    pub tenant: String,
    pub role: FileRole,
    pub name: String,
    pub size: u64,
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
    pub created_at: OffsetDateTime,
}

/// A file whose bytes were stored under `id`, to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewFile {
    pub id: FileId,
    pub tenant: String,
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// Whom a new file belongs to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FileOwner {
    /// Nobody yet: attached when a job is created with it (`enqueue_with_files`).
    Staged,
    /// An input of this job of the file's tenant.
    Input(JobId),
    /// A result of the attempt this lease names, while it holds.
    Result(Lease),
}

impl FileOwner {
    /// The job the file belongs to; `None` while staged.
    pub fn job(&self) -> Option<JobId> {
        match self {
            FileOwner::Staged => None,
            FileOwner::Input(job) => Some(*job),
            FileOwner::Result(lease) => Some(lease.job_id),
        }
    }

    pub fn role(&self) -> FileRole {
        match self {
            FileOwner::Staged | FileOwner::Input(_) => FileRole::Input,
            FileOwner::Result(_) => FileRole::Result,
        }
    }
}

/// Names a file may have: 1 to 255 bytes of letters, digits, `.`, `_` and `-`, not
/// starting with a dot; safe in a URL path and on any file system.
pub fn validate_file_name(field: &str, name: &str) -> Result<(), JobError> {
    let fits = !name.is_empty()
        && name.len() <= NAME_MAX_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    match fits {
        true => Ok(()),
        false => Err(JobError::Invalid(vec![FieldError::new(
            field,
            "must be 1 to 255 letters, digits, '.', '_' or '-', not starting with '.'",
        )])),
    }
}

/// The rows of stored files.
#[async_trait]
pub trait FileStore: Send + Sync + 'static {
    /// Records a stored file for `owner`, in one statement conditional on it: `NotFound`
    /// when the input's job is not the tenant's, `LeaseLost` when the result's attempt
    /// is no longer current, `Conflict` when the job already has an input of this name.
    /// A result replaces the job's result of the same name (a retried attempt writes its
    /// results again); the replaced one is swept like a file of a deleted job. Marks the
    /// job as having files.
    async fn add_file(&self, file: NewFile, owner: FileOwner) -> Result<JobFile, JobError>;

    /// The files of `role` of these jobs (of `tenant`; `None`: any), by job and name.
    async fn job_files(
        &self,
        tenant: Option<&str>,
        jobs: &[JobId],
        role: FileRole,
    ) -> Result<Vec<JobFile>, JobError>;

    /// Creates `job` with these staged files of its tenant as its inputs, in one
    /// transaction. A file that is unknown, attached already or staged longer than
    /// `STAGED_FILE_TTL` is `Invalid`, naming `files[i]`. A duplicate (unique key)
    /// attaches nothing.
    async fn enqueue_with_files(&self, job: NewJob, files: &[FileId])
    -> Result<Enqueued, JobError>;

    /// Up to `limit` files to remove: those whose job no longer exists, and staged ones
    /// uploaded more than `staged_for` ago.
    async fn orphan_files(&self, staged_for: Duration, limit: u32)
    -> Result<Vec<FileId>, JobError>;

    /// Deletes the rows of these files (once their objects are gone).
    async fn delete_files(&self, ids: &[FileId]) -> Result<u64, JobError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_checked() {
        for good in ["a", "input.csv", "A-1_b.tar.gz", &"x".repeat(255)] {
            assert!(validate_file_name("name", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".hidden",
            "..",
            "a/b",
            "a b",
            "é",
            &"x".repeat(256),
            "a\0",
        ] {
            let Err(JobError::Invalid(fields)) = validate_file_name("name", bad) else {
                panic!("{bad:?} must be refused");
            };
            assert_eq!(fields[0].field, "name");
        }
    }
}
