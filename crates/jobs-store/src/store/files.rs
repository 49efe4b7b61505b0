//! Rows of stored files (`jobs_files`): recorded for a staged upload, an input of an
//! existing job or a result of a running attempt; attached at a job's creation; found
//! for claims and views; swept once their job is gone.

use std::{collections::HashSet, time::Duration};

use async_trait::async_trait;
use jobs_core::{
    Enqueued, FieldError, FileId, FileOwner, FileRole, FileStore, JobError, JobFile, JobId,
    NewFile, NewJob, files,
};
use sea_orm::{ConnectionTrait, QueryResult, TransactionTrait};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{SeaOrmStore, db_error, errors::unique_violation, millis};

const FILE_COLUMNS: &str = "id, job_id, tenant, role, name, size, sha256, created_at";

#[async_trait]
impl FileStore for SeaOrmStore {
    async fn add_file(&self, file: NewFile, owner: FileOwner) -> Result<JobFile, JobError> {
        files::validate_file_name("name", &file.name)?;
        let txn = self.db.begin().await.map_err(db_error)?;
        let (job_id, role) = (owner.job(), owner.role());
        if let Some(job) = job_id {
            self.mark_job(&txn, &file.tenant, job, owner).await?;
        }
        if let (Some(job), FileOwner::Result(_)) = (job_id, owner) {
            self.detach_result(&txn, job, &file.name).await?;
        }
        let mut sql = self.sql();
        let values = [
            sql.bind(file.id.as_uuid()),
            sql.bind(job_id.map(|j| j.as_uuid())),
            sql.bind(file.tenant.clone()),
            sql.bind(role.as_str()),
            sql.bind(file.name.clone()),
            sql.bind(i64::try_from(file.size).unwrap_or(i64::MAX)),
            sql.bind(file.sha256.clone()),
        ];
        sql.push(&format!(
            "INSERT INTO jobs_files ({FILE_COLUMNS}) VALUES ({}, {}) RETURNING {FILE_COLUMNS}",
            values.join(", "),
            self.dialect.now()
        ));
        let row = match txn.query_one_raw(sql.build()).await {
            Err(e) if unique_violation(&e) => {
                return Err(JobError::Conflict(format!(
                    "the job already has a {} file named {:?}",
                    role.as_str(),
                    file.name
                )));
            }
            other => other.map_err(db_error)?,
        };
        let row = row.ok_or_else(|| JobError::Storage("the insert returned no row".into()))?;
        let recorded = file_of(&row)?;
        txn.commit().await.map_err(db_error)?;
        Ok(recorded)
    }

    async fn job_files(
        &self,
        tenant: Option<&str>,
        jobs: &[JobId],
        role: FileRole,
    ) -> Result<Vec<JobFile>, JobError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = self.sql();
        let in_ids = sql.in_ids(jobs);
        let role = sql.bind(role.as_str());
        let mut text =
            format!("SELECT {FILE_COLUMNS} FROM jobs_files WHERE job_id{in_ids} AND role = {role}");
        if let Some(tenant) = tenant {
            text += &format!(" AND tenant = {}", sql.bind(tenant.to_owned()));
        }
        sql.push(&text).push(" ORDER BY job_id, name");
        self.query(sql).await?.iter().map(file_of).collect()
    }

    async fn enqueue_with_files(
        &self,
        job: NewJob,
        files: &[FileId],
    ) -> Result<Enqueued, JobError> {
        if files.is_empty() {
            return jobs_core::JobStore::enqueue(self, job).await;
        }
        check_file_list(files)?;
        let (tenant, queue) = (job.tenant.clone(), job.queue.clone());
        let txn = self.db.begin().await.map_err(db_error)?;
        let mut enqueued = self
            .enqueue_many_in(&txn, vec![job])
            .await
            .map_err(jobs_core::single_job_error)?
            .remove(0);
        if !enqueued.duplicate {
            self.attach(&txn, &tenant, enqueued.job.id, files).await?;
            enqueued.job.has_files = true;
        }
        txn.commit().await.map_err(db_error)?;
        if !enqueued.duplicate || enqueued.replaced {
            self.wake_queues([queue.as_str()]);
        }
        Ok(enqueued)
    }

    async fn orphan_files(
        &self,
        staged_for: Duration,
        limit: u32,
    ) -> Result<Vec<FileId>, JobError> {
        let mut sql = self.sql();
        let age = sql.bind(-millis(staged_for));
        let staged_before = self.dialect.now_plus_ms(&age);
        let limit = sql.bind(i64::from(limit));
        sql.push(&format!(
            "SELECT f.id FROM jobs_files f WHERE \
             (f.job_id IS NULL AND f.created_at < {staged_before}) \
             OR (f.job_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = f.job_id)) \
             LIMIT {limit}"
        ));
        self.query(sql)
            .await?
            .iter()
            .map(|row| uuid_of(row, "id").map(FileId::from))
            .collect()
    }

    async fn delete_files(&self, ids: &[FileId]) -> Result<u64, JobError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut sql = self.sql();
        let in_ids = sql.in_uuids(ids.iter().map(|id| id.as_uuid()));
        sql.push(&format!("DELETE FROM jobs_files WHERE id{in_ids}"));
        Ok(self.execute(sql).await?.rows_affected())
    }
}

impl SeaOrmStore {
    /// Marks the owner's job as having files, conditional on it: the tenant's job for an
    /// input, the current attempt for a result. Its row stays locked until the file's
    /// row is in, so the job cannot be deleted in between.
    async fn mark_job(
        &self,
        conn: &impl ConnectionTrait,
        tenant: &str,
        job: JobId,
        owner: FileOwner,
    ) -> Result<(), JobError> {
        let mut sql = self.sql();
        let id = sql.bind(job.as_uuid());
        let tenant = sql.bind(tenant.to_owned());
        let mut text =
            format!("UPDATE jobs SET has_files = true WHERE id = {id} AND tenant = {tenant}");
        if let FileOwner::Result(lease) = owner {
            let token = sql.bind(lease.token.as_uuid());
            text += &format!(" AND state = 'running' AND lease_token = {token}");
        }
        sql.push(&text);
        let changed = conn.execute_raw(sql.build()).await.map_err(db_error)?;
        match (changed.rows_affected(), owner) {
            (0, FileOwner::Result(_)) => Err(JobError::LeaseLost(job)),
            (0, _) => Err(JobError::NotFound(job)),
            _ => Ok(()),
        }
    }

    /// A result file of the same name (an earlier attempt's, or this one's sent again)
    /// gives way: its row becomes a staged file of long ago, which the next sweep removes
    /// with its object, and which no create can attach.
    async fn detach_result(
        &self,
        conn: &impl ConnectionTrait,
        job: JobId,
        name: &str,
    ) -> Result<(), JobError> {
        let mut sql = self.sql();
        let long_ago = sql.bind_time(Some(OffsetDateTime::UNIX_EPOCH));
        let job = sql.bind(job.as_uuid());
        let name = sql.bind(name.to_owned());
        sql.push(&format!(
            "UPDATE jobs_files SET job_id = NULL, created_at = {long_ago} \
             WHERE job_id = {job} AND role = 'result' AND name = {name}"
        ));
        conn.execute_raw(sql.build()).await.map_err(db_error)?;
        Ok(())
    }

    /// Attaches staged files of `tenant` to `job` as its inputs, or names each file that
    /// is not one (`files[i]`).
    async fn attach(
        &self,
        conn: &impl ConnectionTrait,
        tenant: &str,
        job: JobId,
        files: &[FileId],
    ) -> Result<(), JobError> {
        let mut sql = self.sql();
        let job_id = sql.bind(job.as_uuid());
        let in_ids = sql.in_uuids(files.iter().map(|f| f.as_uuid()));
        let tenant = sql.bind(tenant.to_owned());
        let ttl = sql.bind(-millis(files::STAGED_FILE_TTL));
        sql.push(&format!(
            "UPDATE jobs_files SET job_id = {job_id} WHERE id{in_ids} AND tenant = {tenant} \
             AND job_id IS NULL AND created_at > {} RETURNING id",
            self.dialect.now_plus_ms(&ttl)
        ));
        let rows = match conn.query_all_raw(sql.build()).await {
            Err(e) if unique_violation(&e) => {
                return Err(JobError::Invalid(vec![FieldError::new(
                    "files",
                    "two of the files have the same name",
                )]));
            }
            other => other.map_err(db_error)?,
        };
        let attached: HashSet<Uuid> = rows
            .iter()
            .map(|row| uuid_of(row, "id"))
            .collect::<Result<_, _>>()?;
        let missing: Vec<FieldError> = files
            .iter()
            .enumerate()
            .filter(|(_, f)| !attached.contains(&f.as_uuid()))
            .map(|(i, _)| {
                FieldError::new(
                    format!("files[{i}]"),
                    "is not a staged file of this tenant: unknown, attached already, or uploaded more than 24 hours ago",
                )
            })
            .collect();
        JobError::invalid_if_any(missing)?;
        let mut sql = self.sql();
        let job_id = sql.bind(job.as_uuid());
        sql.push(&format!(
            "UPDATE jobs SET has_files = true WHERE id = {job_id}"
        ));
        conn.execute_raw(sql.build()).await.map_err(db_error)?;
        Ok(())
    }
}

fn check_file_list(files: &[FileId]) -> Result<(), JobError> {
    if files.len() > files::MAX_FILES_PER_CREATE {
        return Err(JobError::Invalid(vec![FieldError::new(
            "files",
            "must name at most 100 files",
        )]));
    }
    let mut seen = HashSet::new();
    let repeated: Vec<FieldError> = files
        .iter()
        .enumerate()
        .filter(|(_, f)| !seen.insert(**f))
        .map(|(i, _)| FieldError::new(format!("files[{i}]"), "is named twice"))
        .collect();
    JobError::invalid_if_any(repeated)
}

fn uuid_of(row: &QueryResult, column: &str) -> Result<Uuid, JobError> {
    row.try_get::<Uuid>("", column).map_err(db_error)
}

fn file_of(row: &QueryResult) -> Result<JobFile, JobError> {
    let role: String = row.try_get("", "role").map_err(db_error)?;
    let size: i64 = row.try_get("", "size").map_err(db_error)?;
    Ok(JobFile {
        id: FileId::from(uuid_of(row, "id")?),
        job_id: row
            .try_get::<Option<Uuid>>("", "job_id")
            .map_err(db_error)?
            .map(JobId::from),
        tenant: row.try_get("", "tenant").map_err(db_error)?,
        role: FileRole::parse(&role)
            .ok_or_else(|| JobError::Storage(format!("unknown file role {role:?}")))?,
        name: row.try_get("", "name").map_err(db_error)?,
        size: u64::try_from(size).unwrap_or(0),
        sha256: row.try_get("", "sha256").map_err(db_error)?,
        created_at: row
            .try_get::<OffsetDateTime>("", "created_at")
            .map_err(db_error)?,
    })
}
