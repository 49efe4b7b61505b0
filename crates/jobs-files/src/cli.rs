//! The file storage flags of the binaries, defined once.

use std::path::PathBuf;

use crate::{FileError, FileStorage};

#[derive(Debug, Clone, clap::Args)]
pub struct FilesArgs {
    /// Where job files are kept: `s3://bucket/prefix` (S3 or a compatible store; its
    /// credentials, region and endpoint from the standard `AWS_*` environment, e.g.
    /// `AWS_ENDPOINT` and `AWS_ALLOW_HTTP=true` for a local one). Every process of a
    /// deployment must use the same storage.
    #[arg(long, env = "JOBS_FILES_URL", conflicts_with = "files_dir")]
    pub files_url: Option<String>,

    /// Keep job files in this directory instead (default: `files` beside the SQLite
    /// database; `./files` on PostgreSQL).
    #[arg(long, env = "JOBS_FILES_DIR")]
    pub files_dir: Option<PathBuf>,
}

impl FilesArgs {
    pub fn storage(&self, database_url: &str) -> Result<FileStorage, FileError> {
        crate::configured(
            self.files_url.as_deref(),
            self.files_dir.as_deref(),
            database_url,
        )
    }
}
