//! Handlers: the typed form (a serde struct with a `KIND`) and the untyped form (JSON in,
//! JSON out). Both run through the one `Handler` trait.

use std::{fmt, future::Future, marker::PhantomData, time::Duration};

use async_trait::async_trait;
use jobs_core::{JobArgs, Retry};
use serde::Serialize;
use serde_json::Value;

use crate::JobContext;

/// What a successful attempt produced.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Output<T> {
    Completed(T),
    /// Done, but some items failed; the job ends `partial`.
    Partial {
        result: T,
        item_errors: Value,
    },
}

impl<T> From<T> for Output<T> {
    fn from(result: T) -> Self {
        Output::Completed(result)
    }
}

impl<T: Serialize> Output<T> {
    fn into_json(self) -> Result<Output<Value>, HandlerError> {
        let to_json = |v: T| {
            serde_json::to_value(v)
                .map_err(|e| HandlerError::permanent("invalid_result", e.to_string()))
        };
        Ok(match self {
            Output::Completed(result) => Output::Completed(to_json(result)?),
            Output::Partial {
                result,
                item_errors,
            } => Output::Partial {
                result: to_json(result)?,
                item_errors,
            },
        })
    }
}

/// Why an attempt did not succeed, and what happens next: retried, failed for good,
/// snoozed, or the job cancelled.
///
/// `?` works in handlers on any `std::error::Error + Send + Sync + 'static`, on
/// `anyhow::Error` and on `Box<dyn Error + Send + Sync>` (they all convert into the
/// latter): the error is retryable, of kind `error`, and its message is the whole source
/// chain, "outer: cause: root cause". `HandlerError` itself is not a `std::error::Error`;
/// that is what leaves room for this conversion.
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerError {
    pub kind: String,
    pub message: String,
    pub retry: Retry,
    pub(crate) ending: Ending,
}

/// What the worker does with the job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Ending {
    /// A failed attempt; `retry` says whether another follows.
    Fail,
    /// Pending again after the delay; the attempt is not charged.
    Snooze(Duration),
    /// The job ends cancelled.
    Cancel,
}

impl HandlerError {
    fn new(kind: impl Into<String>, message: impl Into<String>, retry: Retry) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
            retry,
            ending: Ending::Fail,
        }
    }

    /// Retried after the backoff (the kind's own, else the store's) while attempts remain.
    pub fn retryable(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(kind, message, Retry::Backoff)
    }

    /// Retried after exactly `delay` (a server's `Retry-After`) while attempts remain.
    pub fn retry_after(
        kind: impl Into<String>,
        message: impl Into<String>,
        delay: Duration,
    ) -> Self {
        Self::new(kind, message, Retry::After(delay))
    }

    /// Never retried: the job fails now.
    pub fn permanent(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(kind, message, Retry::Never)
    }

    /// The job fails now without retry; the same as `permanent`, by the name other job
    /// systems use for it.
    pub fn discard(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self::permanent(kind, message)
    }

    /// Not a failure: run the job again after `delay` (waiting on something outside),
    /// without charging the attempt.
    pub fn snooze(delay: Duration) -> Self {
        Self {
            ending: Ending::Snooze(delay),
            ..Self::new(
                "snoozed",
                format!("snoozed for {} ms", delay.as_millis()),
                Retry::Never,
            )
        }
    }

    /// The job ends `cancelled`, as if someone had cancelled it; `reason` is logged.
    pub fn cancel(reason: impl Into<String>) -> Self {
        Self {
            ending: Ending::Cancel,
            ..Self::new("cancelled", reason, Retry::Never)
        }
    }

    /// The delay, when the handler snoozed the job.
    pub fn snoozed(&self) -> Option<Duration> {
        match self.ending {
            Ending::Snooze(delay) => Some(delay),
            _ => None,
        }
    }

    /// Whether the handler cancelled its own job.
    pub fn is_cancel(&self) -> bool {
        self.ending == Ending::Cancel
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl<E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>> From<E> for HandlerError {
    fn from(error: E) -> Self {
        Self::retryable("error", chain(error.into().as_ref()))
    }
}

/// "outer: cause: root cause". A cause an error already quotes in its own message (as
/// many do) is not repeated.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.ends_with(&format!(": {text}")) {
            message = format!("{message}: {text}");
        }
        source = cause.source();
    }
    message
}

/// The untyped form; the worker runs every job through it.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn run(&self, args: Value, ctx: JobContext) -> Result<Output<Value>, HandlerError>;
}

/// Closures are handlers: `|args, ctx| async move { Ok(args.into()) }`.
#[async_trait]
impl<F, Fut> Handler for F
where
    F: Fn(Value, JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Output<Value>, HandlerError>> + Send + 'static,
{
    async fn run(&self, args: Value, ctx: JobContext) -> Result<Output<Value>, HandlerError> {
        self(args, ctx).await
    }
}

/// A typed job: the struct is the job's arguments, its `JobArgs` give the kind and the
/// kind's defaults (the worker applies `timeout` and `backoff`).
///
/// ```
/// use jobs_core::{JobArgs, JobOptions};
/// use jobs_worker::{HandlerError, JobContext, Output, TypedJob};
/// use serde::{Deserialize, Serialize};
/// use std::time::Duration;
///
/// #[derive(Serialize, Deserialize)]
/// struct SendEmail {
///     to: String,
/// }
///
/// impl JobArgs for SendEmail {
///     const KIND: &'static str = "send_email";
///     fn options() -> JobOptions {
///         JobOptions::new().timeout(Duration::from_secs(30))
///     }
/// }
///
/// #[async_trait::async_trait]
/// impl TypedJob for SendEmail {
///     type Output = String;
///
///     async fn run(self, ctx: &JobContext) -> Result<Output<String>, HandlerError> {
///         ctx.progress(0.5, "connecting");
///         Ok(format!("sent to {} (attempt {})", self.to, ctx.attempt()).into())
///     }
/// }
///
/// let job = SendEmail { to: "ada@example.com".into() }.to_job().unwrap();
/// assert_eq!(job.kind, "send_email");
/// ```
#[async_trait]
pub trait TypedJob: JobArgs {
    type Output: Serialize + Send + 'static;

    async fn run(self, ctx: &JobContext) -> Result<Output<Self::Output>, HandlerError>;
}

/// Adapts a `TypedJob` to `Handler`: arguments that do not parse fail the job for good.
pub(crate) struct Typed<J>(PhantomData<fn() -> J>);

impl<J> Typed<J> {
    pub(crate) fn new() -> Self {
        Self(PhantomData)
    }
}

#[async_trait]
impl<J: TypedJob> Handler for Typed<J> {
    async fn run(&self, args: Value, ctx: JobContext) -> Result<Output<Value>, HandlerError> {
        let job: J = serde_json::from_value(args)
            .map_err(|e| HandlerError::permanent("invalid_args", e.to_string()))?;
        job.run(&ctx).await?.into_json()
    }
}

#[cfg(test)]
mod tests {
    use std::{error::Error, fmt, io};

    use super::*;

    /// An error with a cause, as libraries build them.
    #[derive(Debug)]
    struct Upload(io::Error);

    impl fmt::Display for Upload {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("upload failed")
        }
    }

    impl Error for Upload {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    fn upload() -> Upload {
        Upload(io::Error::other("connection reset"))
    }

    fn message(run: impl FnOnce() -> Result<(), HandlerError>) -> String {
        let error = run().unwrap_err();
        assert_eq!(
            (error.kind.as_str(), error.retry),
            ("error", Retry::Backoff)
        );
        error.message
    }

    #[test]
    fn question_mark_on_a_std_error_keeps_its_source_chain() {
        let message = message(|| Err(upload())?);
        assert_eq!(message, "upload failed: connection reset");
    }

    #[test]
    fn question_mark_on_anyhow_keeps_its_context_chain() {
        let message = message(|| {
            let error = anyhow::Error::new(upload()).context("sending invoice 7");
            Err(error)?
        });
        assert_eq!(
            message,
            "sending invoice 7: upload failed: connection reset"
        );
    }

    #[test]
    fn question_mark_on_a_boxed_error_keeps_its_source_chain() {
        let message = message(|| {
            let error: Box<dyn Error + Send + Sync> = Box::new(upload());
            Err(error)?
        });
        assert_eq!(message, "upload failed: connection reset");
    }

    #[test]
    fn a_cause_the_message_already_quotes_is_not_repeated() {
        #[derive(Debug)]
        struct Quoting(io::Error);
        impl fmt::Display for Quoting {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "read failed: {}", self.0)
            }
        }
        impl Error for Quoting {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        let message = message(|| Err(Quoting(io::Error::other("disk gone")))?);
        assert_eq!(message, "read failed: disk gone");
    }

    #[test]
    fn snooze_cancel_and_discard_say_what_happens_next() {
        let snooze = HandlerError::snooze(Duration::from_secs(5));
        assert_eq!(
            (snooze.snoozed(), snooze.is_cancel()),
            (Some(Duration::from_secs(5)), false)
        );
        let cancel = HandlerError::cancel("withdrawn");
        assert_eq!((cancel.snoozed(), cancel.is_cancel()), (None, true));
        assert_eq!(cancel.message, "withdrawn");
        let discard = HandlerError::discard("bad_input", "no such user");
        assert_eq!(
            discard,
            HandlerError::permanent("bad_input", "no such user")
        );
        assert_eq!(discard.retry, Retry::Never);
    }
}
