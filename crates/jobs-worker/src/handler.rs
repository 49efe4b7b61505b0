//! Handlers: the typed form (a serde struct with a `KIND`) and the untyped form (JSON in,
//! JSON out). Both run through the one `Handler` trait.

use std::{fmt, future::Future, marker::PhantomData, time::Duration};

use async_trait::async_trait;
use jobs_core::{NewJob, Retry};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::JobContext;

/// What a successful attempt produced.
#[derive(Debug, Clone, PartialEq)]
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

/// Why an attempt failed, and whether to try again. Any `std::error::Error` converts
/// into a retryable one, so `?` works in handlers.
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerError {
    pub kind: String,
    pub message: String,
    pub retry: Retry,
}

impl HandlerError {
    /// Retried after the backoff while attempts remain.
    pub fn retryable(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
            retry: Retry::Backoff,
        }
    }

    /// Retried after exactly `delay` (a server's `Retry-After`) while attempts remain.
    pub fn retry_after(
        kind: impl Into<String>,
        message: impl Into<String>,
        delay: Duration,
    ) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
            retry: Retry::After(delay),
        }
    }

    /// Never retried: the job fails now.
    pub fn permanent(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
            retry: Retry::Never,
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl<E: std::error::Error> From<E> for HandlerError {
    fn from(error: E) -> Self {
        Self::retryable("error", error.to_string())
    }
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

/// A typed job: the struct is the job's arguments.
///
/// ```
/// use jobs_worker::{HandlerError, JobContext, Output, TypedJob};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct SendEmail {
///     to: String,
/// }
///
/// #[async_trait::async_trait]
/// impl TypedJob for SendEmail {
///     const KIND: &'static str = "send_email";
///     type Output = String;
///
///     async fn run(self, ctx: &JobContext) -> Result<Output<String>, HandlerError> {
///         Ok(format!("sent to {} (attempt {})", self.to, ctx.attempt()).into())
///     }
/// }
///
/// let job = SendEmail { to: "ada@example.com".into() }.to_job().unwrap();
/// assert_eq!(job.kind, "send_email");
/// ```
#[async_trait]
pub trait TypedJob: Serialize + DeserializeOwned + Send + Sync + 'static {
    const KIND: &'static str;
    type Output: Serialize + Send + 'static;

    /// The per-attempt limit of this kind, unless a job sets its own.
    fn timeout() -> Option<Duration> {
        None
    }

    async fn run(self, ctx: &JobContext) -> Result<Output<Self::Output>, HandlerError>;

    /// A job of this kind with these arguments, ready to enqueue.
    fn to_job(&self) -> Result<NewJob, serde_json::Error> {
        Ok(NewJob::new(Self::KIND, serde_json::to_value(self)?))
    }
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
