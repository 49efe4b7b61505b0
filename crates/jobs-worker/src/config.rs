//! How a worker is configured, and the checks that keep a configuration from breaking
//! the background services.

use std::time::Duration;

use jobs_core::{FieldError, JobError, QueueLimits, Schedule};

/// Set fields through `WorkerBuilder::config(|c| ...)`; new settings keep old code compiling.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// Names this process in job rows; unique per process.
    pub worker_id: String,
    /// Queue name and how many of its jobs run at once in this process.
    pub queues: Vec<(String, usize)>,
    /// Jobs of each queue claimed ahead of its free handler slots, so that short jobs do
    /// not wait for a claim round trip each. They wait here, leased, for a slot (and are
    /// released on shutdown without charging an attempt). 0: claim only for free slots.
    /// One claim takes at most 2,000 jobs.
    pub prefetch: usize,
    /// Fallback when no wake-up arrives (and for scheduled jobs coming due).
    pub poll_interval: Duration,
    /// How long a claim holds without a heartbeat.
    pub lease: Duration,
    /// How often cancel requests made elsewhere are looked for.
    pub cancel_check_interval: Duration,
    /// How long a cancelled handler may take to stop before it is aborted.
    pub cancel_grace: Duration,
    /// How long running jobs may finish after shutdown begins before they are released.
    pub shutdown_grace: Duration,
    /// After the grace period, how long shutdown waits for outcomes to be written (the
    /// database may be down); what is still unwritten then is logged and left to the
    /// rescuer, so shutdown takes at most `shutdown_grace + flush_timeout` and a little.
    pub flush_timeout: Duration,
    /// Per-attempt limit for kinds and jobs that set none.
    pub default_timeout: Option<Duration>,
    /// Take part in the election of the one process that runs maintenance.
    pub maintenance: bool,
    /// How long maintenance leadership lasts unless renewed (every third of it): a frozen
    /// leader is replaced within `leader_ttl * 4 / 3`.
    pub leader_ttl: Duration,
    /// How often the leader rescues expired leases and ends pending jobs that cannot run.
    pub maintenance_interval: Duration,
    /// How often the leader deletes ended jobs past their retention: often, so each
    /// round deletes a small burst (rounds every 30 s at 2,000 jobs/s made start latency
    /// p99 jump from 45 ms to 923 ms in the rows with a round; every 5 s it held at
    /// 19-34 ms, `jobs-bench soak`).
    pub retention_interval: Duration,
    /// Rows per maintenance statement. A round runs statements one after another while
    /// they move full batches, for at most half its service's interval (so the retention
    /// cleaner keeps up with thousands of jobs a second), then waits for the next round.
    pub maintenance_batch: u32,
    /// Vacuum the job tables (PostgreSQL) while leading maintenance, each when its dead
    /// row versions pass `vacuum_min_dead_rows` and `vacuum_dead_fraction` of its live
    /// rows: a queue churns its whole table in minutes, and where autovacuum is off or
    /// lags the dead versions grow without bound and slow every claim. Off: left to
    /// autovacuum.
    pub vacuum: bool,
    /// How often the leader reads the tables' dead row counts.
    pub vacuum_interval: Duration,
    /// Fewer dead row versions than this never trigger a vacuum.
    pub vacuum_min_dead_rows: u64,
    /// Nor do fewer than this share of the table's live rows (autovacuum's own default
    /// scale factor is 0.2).
    pub vacuum_dead_fraction: f64,
    /// How often coalesced progress reports are written.
    pub progress_interval: Duration,
    /// How often this process enqueues due schedule slots (every process does; each
    /// slot still gets one job). A job starts at most this long after its slot.
    pub scheduler_interval: Duration,
    /// Schedules defined in code (`WorkerBuilder::schedule`), upserted at start.
    pub schedules: Vec<Schedule>,
    /// Queue limits defined in code (`WorkerBuilder::limit`), set at start.
    pub limits: Vec<(String, QueueLimits)>,
}

impl WorkerConfig {
    /// Every problem at once, named by field: a zero interval would spin or panic inside
    /// a background service.
    pub fn validate(&self) -> Result<(), JobError> {
        let (ms, s) = (Duration::from_millis(1), Duration::from_secs(1));
        let minimums = [
            ("poll_interval", self.poll_interval, ms),
            ("lease", self.lease, s),
            ("cancel_check_interval", self.cancel_check_interval, ms),
            ("progress_interval", self.progress_interval, ms),
            ("leader_ttl", self.leader_ttl, s),
            ("maintenance_interval", self.maintenance_interval, ms),
            ("retention_interval", self.retention_interval, ms),
            ("vacuum_interval", self.vacuum_interval, ms),
            ("scheduler_interval", self.scheduler_interval, ms),
        ];
        let mut errors: Vec<FieldError> = minimums
            .into_iter()
            .filter(|(_, value, min)| value < min)
            .map(|(field, _, min)| FieldError::new(field, format!("must be at least {min:?}")))
            .collect();
        if self.maintenance_batch == 0 {
            errors.push(FieldError::new("maintenance_batch", "must be at least 1"));
        }
        // Zero would vacuum every round whatever the table holds.
        if self.vacuum_min_dead_rows == 0 {
            errors.push(FieldError::new(
                "vacuum_min_dead_rows",
                "must be at least 1",
            ));
        }
        if !(self.vacuum_dead_fraction.is_finite() && self.vacuum_dead_fraction >= 0.0) {
            errors.push(FieldError::new(
                "vacuum_dead_fraction",
                "must be a finite number of at least 0",
            ));
        }
        let id = &self.worker_id;
        if id.is_empty() || id.len() > 255 || id.contains('\0') {
            errors.push(FieldError::new(
                "worker_id",
                "must be 1 to 255 bytes without NUL",
            ));
        }
        if self.queues.iter().any(|(_, concurrency)| *concurrency == 0) {
            errors.push(FieldError::new("queues", "concurrency must be at least 1"));
        }
        for schedule in &self.schedules {
            if let Err(JobError::Invalid(fields)) = schedule.validate() {
                errors.extend(fields.into_iter().map(|f| {
                    FieldError::new(
                        format!("schedules.{}.{}", schedule.name, f.field),
                        f.message,
                    )
                }));
            }
        }
        for (queue, limits) in &self.limits {
            let checked = jobs_core::validate_queue_name("queue", queue).and(limits.validate());
            if let Err(JobError::Invalid(fields)) = checked {
                errors.extend(
                    fields
                        .into_iter()
                        .map(|f| FieldError::new(format!("limits.{queue}.{}", f.field), f.message)),
                );
            }
        }
        JobError::invalid_if_any(errors)
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            worker_id: format!(
                "{}-{}-{}",
                hostname(),
                std::process::id(),
                &uuid::Uuid::now_v7().simple().to_string()[24..]
            ),
            queues: Vec::new(),
            prefetch: 0,
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(30),
            cancel_check_interval: Duration::from_millis(500),
            cancel_grace: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
            flush_timeout: Duration::from_secs(5),
            default_timeout: None,
            maintenance: true,
            leader_ttl: Duration::from_secs(10),
            maintenance_interval: Duration::from_secs(5),
            retention_interval: Duration::from_secs(5),
            maintenance_batch: 1_000,
            vacuum: true,
            vacuum_interval: Duration::from_secs(15),
            vacuum_min_dead_rows: 50_000,
            vacuum_dead_fraction: 0.2,
            progress_interval: Duration::from_millis(250),
            scheduler_interval: Duration::from_millis(500),
            schedules: Vec::new(),
            limits: Vec::new(),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into())
}
