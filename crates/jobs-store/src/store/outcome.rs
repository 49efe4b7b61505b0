//! How results are stored: as JSON up to a threshold, zstd-compressed above it, refused
//! above a maximum. Readers never see the difference.

use jobs_core::{Finish, JobError, Outcome, Retry};
use serde_json::{Value, json};

/// Sizes of serialized outcomes (result and item errors together), in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutcomeLimits {
    /// Larger outcomes are stored zstd-compressed.
    pub compress_above: usize,
    /// Larger outcomes are refused: the job fails with kind `result_too_large`.
    pub max_bytes: usize,
}

impl Default for OutcomeLimits {
    fn default() -> Self {
        Self {
            compress_above: 64 * 1024,
            max_bytes: 16 << 20,
        }
    }
}

/// The error kind of an attempt whose result was over `OutcomeLimits::max_bytes`.
pub const TOO_LARGE: &str = "result_too_large";

/// zstd's default level: about 3x on typical JSON at hundreds of MB/s.
const LEVEL: i32 = 3;

/// A result and item errors as the finish statement writes them.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Stored {
    Plain {
        result: Option<Value>,
        item_errors: Option<Value>,
    },
    Compressed(Vec<u8>),
}

impl OutcomeLimits {
    /// The outcome, with a result over `max_bytes` turned into a permanent failure that
    /// says how large it was.
    pub(super) fn admit(&self, finish: Finish) -> (Finish, Stored) {
        let stored = match &finish.outcome {
            Outcome::Completed { result } => self.store(result, None),
            Outcome::Partial {
                result,
                item_errors,
            } => self.store(result, Some(item_errors)),
            _ => Ok(Stored::none()),
        };
        match stored {
            Ok(stored) => (finish, stored),
            Err(size) => {
                let failed = Outcome::Failed {
                    kind: TOO_LARGE.into(),
                    message: format!(
                        "the result is {size} bytes; this store keeps at most {} (max result bytes)",
                        self.max_bytes
                    ),
                    retry: Retry::Never,
                };
                (Finish::new(finish.lease, failed), Stored::none())
            }
        }
    }

    /// How a result is written; `Err(size)` when it is over `max_bytes`.
    fn store(&self, result: &Value, item_errors: Option<&Value>) -> Result<Stored, usize> {
        let plain = || Stored::plain(Some(result.clone()), item_errors.cloned());
        let small = |v: &Value| fits(v, self.compress_above);
        if small(result) && item_errors.is_none_or(small) {
            return Ok(plain());
        }
        let payload = json!({"result": result, "item_errors": item_errors});
        let bytes = serde_json::to_vec(&payload).expect("JSON values serialize");
        if bytes.len() > self.max_bytes {
            return Err(bytes.len());
        }
        if bytes.len() <= self.compress_above {
            return Ok(plain());
        }
        let compressed = zstd::bulk::compress(&bytes, LEVEL).expect("compressing into memory");
        Ok(Stored::Compressed(compressed))
    }
}

impl Stored {
    /// No result: an outcome other than completed or partial.
    pub(super) fn none() -> Self {
        Self::plain(None, None)
    }

    fn plain(result: Option<Value>, item_errors: Option<Value>) -> Self {
        Stored::Plain {
            result,
            item_errors,
        }
    }
}

/// Whether `value` serializes to at most `limit` bytes, without serializing more of it.
fn fits(value: &Value, limit: usize) -> bool {
    let mut counter = Counter { n: 0, limit };
    serde_json::to_writer(&mut counter, value).is_ok()
}

/// Counts bytes written and fails once past the limit.
struct Counter {
    n: usize,
    limit: usize,
}

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.n += buf.len();
        if self.n > self.limit {
            return Err(std::io::Error::other("over the limit"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The result and item errors of a stored outcome; `compressed` wins when present.
pub(super) fn expand(
    result: Option<Value>,
    item_errors: Option<Value>,
    compressed: Option<&[u8]>,
) -> Result<(Option<Value>, Option<Value>), JobError> {
    let Some(bytes) = compressed else {
        return Ok((result, item_errors));
    };
    let malformed = |e: &dyn std::fmt::Display| {
        JobError::Storage(format!("a compressed outcome does not read back: {e}"))
    };
    let json = zstd::stream::decode_all(bytes).map_err(|e| malformed(&e))?;
    let mut payload: Value = serde_json::from_slice(&json).map_err(|e| malformed(&e))?;
    let take = |key: &str, payload: &mut Value| match payload[key].take() {
        Value::Null => None,
        value => Some(value),
    };
    Ok((
        take("result", &mut payload),
        take("item_errors", &mut payload),
    ))
}

impl super::SeaOrmStore {
    /// How many bytes the compressed outcome of job `id` takes; `None` when it is stored
    /// as plain JSON (or the job is gone). For benchmarks and operators' questions.
    pub async fn compressed_outcome_bytes(
        &self,
        id: jobs_core::JobId,
    ) -> Result<Option<u64>, JobError> {
        let mut sql = self.sql();
        let id = sql.bind(id.as_uuid());
        sql.push(&format!(
            "SELECT CAST(length(outcome_zstd) AS BIGINT) AS n FROM jobs WHERE id = {id}"
        ));
        let rows = self.query(sql).await?;
        let n: Option<i64> = match rows.first() {
            Some(row) => row.try_get("", "n").map_err(super::db_error)?,
            None => None,
        };
        Ok(n.map(|n| n as u64))
    }
}
