//! Workflows: a row in `jobs_workflows` and the steps' jobs, created in one
//! transaction; their state is read from the steps (`WorkflowState::of`).

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use jobs_core::{
    Cursor, FieldError, JobError, JobId, PageRequest, ParentResult, Requires, State, StepView,
    Workflow, WorkflowFilter, WorkflowId, WorkflowPage, WorkflowState, WorkflowStore, WorkflowView,
};
use sea_orm::{ConnectionTrait, QueryResult, TransactionTrait};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    SeaOrmStore,
    control::{cancel_set, retry_set},
    db_error,
};
use crate::sql::state_list;

const ACTIVE: [State; 3] = [State::Waiting, State::Pending, State::Running];
const UNSUCCESSFUL: [State; 2] = [State::Failed, State::Cancelled];

#[async_trait]
impl WorkflowStore for SeaOrmStore {
    async fn create_workflow(&self, workflow: Workflow) -> Result<WorkflowView, JobError> {
        workflow.validate()?;
        let id = workflow.id;
        let txn = self.db.begin().await.map_err(db_error)?;
        let mut sql = self.sql();
        let values = [
            sql.bind(id.as_uuid()),
            sql.bind(workflow.tenant.clone()),
            sql.bind(workflow.name.clone()),
        ];
        sql.push(&format!(
            "INSERT INTO jobs_workflows (id, tenant, name, created_at) VALUES ({}, {})",
            values.join(", "),
            self.dialect.now(),
        ));
        txn.execute_raw(sql.build()).await.map_err(db_error)?;
        let jobs = workflow.into_jobs();
        let enqueued = self.enqueue_many_in(&txn, jobs).await.map_err(as_steps)?;
        txn.commit().await.map_err(db_error)?;
        self.wake_queues(enqueued.iter().map(|e| e.job.queue.as_str()));
        self.workflow(None, id).await
    }

    async fn workflow(
        &self,
        tenant: Option<&str>,
        id: WorkflowId,
    ) -> Result<WorkflowView, JobError> {
        let mut view = self.workflow_row(tenant, id).await?;
        view.steps = self.steps(id).await?;
        view.counts = BTreeMap::new();
        for step in &view.steps {
            *view.counts.entry(step.state).or_insert(0) += 1;
        }
        view.state = WorkflowState::of(view.cancelled_at.is_some(), &view.counts);
        Ok(view)
    }

    async fn workflows(
        &self,
        filter: &WorkflowFilter,
        page: &PageRequest,
    ) -> Result<WorkflowPage, JobError> {
        page.validate()?;
        let mut sql = self.sql();
        let mut conditions = vec!["true".to_owned()];
        if let Some(tenant) = &filter.tenant {
            conditions.push(format!("w.tenant = {}", sql.bind(tenant.clone())));
        }
        if let Some(name) = &filter.name {
            conditions.push(format!("w.name = {}", sql.bind(name.clone())));
        }
        if let Some(state) = filter.state {
            conditions.push(state_condition(state));
        }
        if let Some(cursor) = page.cursor {
            let at = sql.bind_time(Some(cursor.created_at));
            let at_again = sql.bind_time(Some(cursor.created_at));
            let id = sql.bind(cursor.id.as_uuid());
            conditions.push(format!(
                "(w.created_at < {at} OR (w.created_at = {at_again} AND w.id < {id}))"
            ));
        }
        let limit = sql.bind(page.limit as i64 + 1);
        let offset = sql.bind(page.offset.min(i64::MAX as u64) as i64);
        sql.push(&format!(
            "SELECT w.id, w.tenant, w.name, w.created_at, w.cancelled_at FROM jobs_workflows w \
             WHERE {} ORDER BY w.created_at DESC, w.id DESC LIMIT {limit} OFFSET {offset}",
            conditions.join(" AND ")
        ));
        let rows = self.db.query_all_raw(sql.build()).await.map_err(db_error)?;
        let mut items: Vec<WorkflowView> = rows.iter().map(view_of).collect::<Result<_, _>>()?;
        let more = items.len() > page.limit as usize;
        items.truncate(page.limit as usize);
        let counts = self.counts(&items).await?;
        for item in &mut items {
            item.counts = counts.get(&item.id).cloned().unwrap_or_default();
            item.state = WorkflowState::of(item.cancelled_at.is_some(), &item.counts);
        }
        let next_cursor = match items.last() {
            Some(last) if more => Some(Cursor {
                created_at: last.created_at,
                id: JobId::from(last.id.as_uuid()),
            }),
            _ => None,
        };
        Ok(WorkflowPage { items, next_cursor })
    }

    async fn cancel_workflow(
        &self,
        tenant: Option<&str>,
        id: WorkflowId,
    ) -> Result<WorkflowView, JobError> {
        let cancelled_at = format!("COALESCE(cancelled_at, {})", self.dialect.now());
        let set = cancel_set(self.dialect);
        self.move_steps(tenant, id, &cancelled_at, &set, &ACTIVE)
            .await?;
        self.workflow(tenant, id).await
    }

    async fn retry_workflow(
        &self,
        tenant: Option<&str>,
        id: WorkflowId,
    ) -> Result<WorkflowView, JobError> {
        let set = retry_set(self.dialect);
        let moved = self
            .move_steps(tenant, id, "NULL", &set, &UNSUCCESSFUL)
            .await?;
        let queues: std::collections::HashSet<&str> = moved
            .iter()
            .filter(|m| m.state == State::Pending)
            .map(|m| m.queue.as_str())
            .collect();
        self.wake_everywhere(&queues.into_iter().collect::<Vec<_>>())
            .await;
        self.workflow(tenant, id).await
    }

    async fn parent_results(
        &self,
        ids: &[JobId],
        limit: u32,
    ) -> Result<HashMap<JobId, Vec<ParentResult>>, JobError> {
        let mut found: HashMap<JobId, Vec<ParentResult>> = HashMap::new();
        if ids.is_empty() || limit == 0 {
            return Ok(found);
        }
        let mut sql = self.sql();
        let in_ids = sql.in_ids(ids);
        let limit = sql.bind(limit as i64);
        sql.push(&format!(
            "SELECT job_id, parent_id, requires, state, result, outcome_zstd, workflow_step FROM ( \
               SELECT d.job_id, d.parent_id, d.requires, p.state, p.result, p.outcome_zstd, \
                 p.workflow_step, \
                 ROW_NUMBER() OVER (PARTITION BY d.job_id ORDER BY d.parent_id) AS n \
               FROM jobs_dependencies d LEFT JOIN jobs p ON p.id = d.parent_id \
               WHERE d.job_id{in_ids}) AS ranked \
             WHERE n <= {limit} ORDER BY job_id, parent_id"
        ));
        for row in self.db.query_all_raw(sql.build()).await.map_err(db_error)? {
            let job = JobId::from(uuid(&row, "job_id")?);
            found.entry(job).or_default().push(parent_of(&row)?);
        }
        Ok(found)
    }

    async fn parent_counts(&self, id: JobId) -> Result<BTreeMap<State, u64>, JobError> {
        let mut sql = self.sql();
        let id_param = sql.bind(id.as_uuid());
        sql.push(&format!(
            "SELECT p.state, COUNT(*) AS n FROM jobs_dependencies d \
             JOIN jobs p ON p.id = d.parent_id WHERE d.job_id = {id_param} GROUP BY p.state",
        ));
        let mut counts = BTreeMap::new();
        for row in self.db.query_all_raw(sql.build()).await.map_err(db_error)? {
            let state: String = row.try_get("", "state").map_err(db_error)?;
            let n: i64 = row.try_get("", "n").map_err(db_error)?;
            counts.insert(state.parse()?, n as u64);
        }
        Ok(counts)
    }
}

impl SeaOrmStore {
    /// The workflow's own row, if the caller may see it; no steps, no counts yet.
    async fn workflow_row(
        &self,
        tenant: Option<&str>,
        id: WorkflowId,
    ) -> Result<WorkflowView, JobError> {
        let mut sql = self.sql();
        let id_param = sql.bind(id.as_uuid());
        sql.push(&format!(
            "SELECT id, tenant, name, created_at, cancelled_at FROM jobs_workflows w WHERE id = {id_param}",
        ));
        let rows = self.db.query_all_raw(sql.build()).await.map_err(db_error)?;
        let view = rows.first().map(view_of).transpose()?;
        view.filter(|v| tenant.is_none_or(|t| v.tenant == t))
            .ok_or(JobError::WorkflowNotFound(id))
    }

    /// Sets the workflow's `cancelled_at` and moves its steps in `from` with `set`,
    /// releasing (or cancelling) the dependents of those it ends.
    async fn move_steps(
        &self,
        tenant: Option<&str>,
        id: WorkflowId,
        cancelled_at: &str,
        set: &str,
        from: &[State],
    ) -> Result<Vec<super::dependencies::Moved>, JobError> {
        self.workflow_row(tenant, id).await?;
        let mut sql = self.sql();
        let id_param = sql.bind(id.as_uuid());
        sql.push(&format!(
            "UPDATE jobs_workflows SET cancelled_at = {cancelled_at} WHERE id = {id_param}"
        ));
        self.execute(sql).await?;
        let mut sql = self.sql();
        let id_param = sql.bind(id.as_uuid());
        sql.push(&format!(
            "UPDATE jobs SET {set} WHERE workflow_id = {id_param} AND state IN ({from}) \
             RETURNING id, state, queue, has_dependents",
            from = state_list(from),
        ));
        self.end_jobs(sql, false).await.map_err(db_error)
    }

    /// The steps in the order they were given, each with the steps it waits for.
    async fn steps(&self, id: WorkflowId) -> Result<Vec<StepView>, JobError> {
        let mut sql = self.sql();
        let id_param = sql.bind(id.as_uuid());
        sql.push(&format!(
            "SELECT id, workflow_step, state FROM jobs WHERE workflow_id = {id_param} ORDER BY id",
        ));
        let mut steps = Vec::new();
        for row in self.db.query_all_raw(sql.build()).await.map_err(db_error)? {
            let state: String = row.try_get("", "state").map_err(db_error)?;
            steps.push(StepView {
                job_id: JobId::from(uuid(&row, "id")?),
                name: row
                    .try_get::<Option<String>>("", "workflow_step")
                    .map_err(db_error)?
                    .unwrap_or_default(),
                state: state.parse()?,
                depends_on: Vec::new(),
            });
        }
        let names: HashMap<JobId, String> =
            steps.iter().map(|s| (s.job_id, s.name.clone())).collect();
        let mut sql = self.sql();
        let id_param = sql.bind(id.as_uuid());
        sql.push(&format!(
            "SELECT d.job_id, d.parent_id FROM jobs_dependencies d JOIN jobs j ON j.id = d.job_id \
             WHERE j.workflow_id = {id_param} ORDER BY d.job_id, d.parent_id",
        ));
        let mut parents: HashMap<JobId, Vec<String>> = HashMap::new();
        for row in self.db.query_all_raw(sql.build()).await.map_err(db_error)? {
            let parent = JobId::from(uuid(&row, "parent_id")?);
            if let Some(name) = names.get(&parent) {
                parents
                    .entry(JobId::from(uuid(&row, "job_id")?))
                    .or_default()
                    .push(name.clone());
            }
        }
        for step in &mut steps {
            step.depends_on = parents.remove(&step.job_id).unwrap_or_default();
        }
        Ok(steps)
    }

    /// Steps by state, for each of these workflows.
    async fn counts(
        &self,
        items: &[WorkflowView],
    ) -> Result<HashMap<WorkflowId, BTreeMap<State, u64>>, JobError> {
        let mut counts: HashMap<WorkflowId, BTreeMap<State, u64>> = HashMap::new();
        if items.is_empty() {
            return Ok(counts);
        }
        let mut sql = self.sql();
        let in_ids = sql.in_uuids(items.iter().map(|w| w.id.as_uuid()));
        sql.push(&format!(
            "SELECT workflow_id, state, COUNT(*) AS n FROM jobs \
             WHERE workflow_id{in_ids} GROUP BY workflow_id, state"
        ));
        for row in self.db.query_all_raw(sql.build()).await.map_err(db_error)? {
            let state: String = row.try_get("", "state").map_err(db_error)?;
            let n: i64 = row.try_get("", "n").map_err(db_error)?;
            counts
                .entry(WorkflowId::from(uuid(&row, "workflow_id")?))
                .or_default()
                .insert(state.parse()?, n as u64);
        }
        Ok(counts)
    }
}

/// The SQL condition a workflow in `state` meets (`w`: its row).
fn state_condition(state: WorkflowState) -> String {
    let any = |states: &[State]| {
        format!(
            "EXISTS (SELECT 1 FROM jobs j WHERE j.workflow_id = w.id AND j.state IN ({}))",
            state_list(states)
        )
    };
    match state {
        WorkflowState::Cancelled => "w.cancelled_at IS NOT NULL".into(),
        WorkflowState::Running => format!("w.cancelled_at IS NULL AND {}", any(&ACTIVE)),
        WorkflowState::Failed => format!(
            "w.cancelled_at IS NULL AND NOT {} AND {}",
            any(&ACTIVE),
            any(&UNSUCCESSFUL)
        ),
        WorkflowState::Completed => format!(
            "w.cancelled_at IS NULL AND NOT {} AND NOT {}",
            any(&ACTIVE),
            any(&UNSUCCESSFUL)
        ),
    }
}

fn view_of(row: &QueryResult) -> Result<WorkflowView, JobError> {
    Ok(WorkflowView {
        id: WorkflowId::from(uuid(row, "id")?),
        tenant: row.try_get("", "tenant").map_err(db_error)?,
        name: row.try_get("", "name").map_err(db_error)?,
        state: WorkflowState::Running,
        counts: BTreeMap::new(),
        created_at: row
            .try_get::<OffsetDateTime>("", "created_at")
            .map_err(db_error)?,
        cancelled_at: row
            .try_get::<Option<OffsetDateTime>>("", "cancelled_at")
            .map_err(db_error)?,
        steps: Vec::new(),
    })
}

fn parent_of(row: &QueryResult) -> Result<ParentResult, JobError> {
    let requires: String = row.try_get("", "requires").map_err(db_error)?;
    let state: Option<String> = row.try_get("", "state").map_err(db_error)?;
    Ok(ParentResult {
        id: JobId::from(uuid(row, "parent_id")?),
        step: row.try_get("", "workflow_step").map_err(db_error)?,
        requires: if requires == Requires::Ended.as_str() {
            Requires::Ended
        } else {
            Requires::Completed
        },
        state: state.map(|s| s.parse()).transpose()?,
        result: super::outcome::expand(
            row.try_get("", "result").map_err(db_error)?,
            None,
            row.try_get::<Option<Vec<u8>>>("", "outcome_zstd")
                .map_err(db_error)?
                .as_deref(),
        )?
        .0,
    })
}

fn uuid(row: &QueryResult, column: &str) -> Result<Uuid, JobError> {
    row.try_get::<Uuid>("", column).map_err(db_error)
}

/// Errors of the steps' jobs, named by step: `jobs[2].kind` is `steps[2].kind`.
fn as_steps(error: JobError) -> JobError {
    match error {
        JobError::Invalid(fields) => JobError::Invalid(
            fields
                .into_iter()
                .map(|f| FieldError {
                    field: f.field.replacen("jobs[", "steps[", 1),
                    message: f.message,
                })
                .collect(),
        ),
        other => other,
    }
}
