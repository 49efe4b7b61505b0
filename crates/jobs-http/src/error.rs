//! Every error leaves as `application/problem+json` (RFC 9457) with a stable `type`.
//! Domain errors map to HTTP here and nowhere else.

use actix_web::{HttpResponse, ResponseError, http::StatusCode};
use jobs_core::{FieldError, JobError, State};
use serde::Serialize;
use utoipa::ToSchema;

/// The problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// Stable identifier of the error class, e.g. `urn:jobs:problem:not-found`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// One entry per invalid field (validation and malformed bodies).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemField>,
    /// The job's current state, for illegal transitions.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub state: Option<State>,
    /// The job holding the unique key, for `duplicate`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub existing_job_id: Option<uuid::Uuid>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProblemField {
    /// Where the problem is: a field name or a path like `jobs[3].priority`.
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    /// Boxed: handlers return `Result<_, ApiError>` everywhere; the error stays small.
    problem: Box<Problem>,
    /// Seconds for the `Retry-After` header.
    retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            status,
            problem: Box::new(Problem {
                kind: format!("urn:jobs:problem:{slug}"),
                title: title.to_owned(),
                status: status.as_u16(),
                detail: detail.into(),
                errors: Vec::new(),
                state: None,
                existing_job_id: None,
            }),
            retry_after: None,
        }
    }

    fn with_fields(mut self, fields: Vec<FieldError>) -> Self {
        self.problem.errors = fields
            .into_iter()
            .map(|f| ProblemField {
                field: f.field,
                message: f.message,
            })
            .collect();
        self
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// The body is not JSON, or not the JSON this endpoint takes.
    pub fn malformed(field: String, detail: String) -> Self {
        // `?` is serde_path_to_error's place for a body that ends before any field.
        let field = if field.is_empty() || field == "." || field == "?" {
            "body".to_owned()
        } else {
            field
        };
        Self::new(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            "Malformed request",
            detail.clone(),
        )
        .with_fields(vec![FieldError::new(field, detail)])
    }

    /// Field values the endpoint does not accept: 400, like a malformed body, with
    /// `errors` naming each field.
    pub fn invalid(fields: Vec<FieldError>) -> Self {
        let detail = fields
            .iter()
            .map(|f| format!("{}: {}", f.field, f.message))
            .collect::<Vec<_>>()
            .join("; ");
        Self::new(
            StatusCode::BAD_REQUEST,
            "validation",
            "Invalid request",
            detail,
        )
        .with_fields(fields)
    }

    pub fn invalid_field(field: &str, message: &str) -> Self {
        Self::invalid(vec![FieldError::new(field, message)])
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
            format!("the body exceeds the limit of {limit} bytes"),
        )
    }

    pub fn unsupported_media_type(got: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            format!("expected application/json, got {got}"),
        )
    }

    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            format!("{path} does not take {method}; see the Allow header"),
        )
    }

    pub fn unauthorized(detail: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            detail,
        )
    }

    /// The process already serves `limit` event streams: 429 with `Retry-After: 1`.
    pub fn too_many_streams(limit: usize) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too-many-streams",
            "Too many event streams",
            format!("this api serves at most {limit} event streams at once; retry in a second"),
        );
        e.retry_after = Some(1);
        e
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            detail,
        )
    }

    pub fn problem(&self) -> &Problem {
        &self.problem
    }
}

impl From<JobError> for ApiError {
    fn from(error: JobError) -> Self {
        let detail = error.to_string();
        match error {
            JobError::NotFound(_)
            | JobError::ScheduleNotFound(_)
            | JobError::WorkflowNotFound(_)
            | JobError::WebhookNotFound(_) => Self::not_found(detail),
            JobError::Conflict(_) => {
                Self::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
            }
            JobError::IllegalTransition { from, .. } => {
                let mut e = Self::new(
                    StatusCode::CONFLICT,
                    "illegal-transition",
                    "Illegal state transition",
                    detail,
                );
                e.problem.state = Some(from);
                e
            }
            JobError::Invalid(fields) => Self::invalid(fields),
            JobError::Duplicate { existing } => {
                let mut e = Self::new(StatusCode::CONFLICT, "duplicate", "Duplicate job", detail);
                e.problem.existing_job_id = Some(existing.as_uuid());
                e
            }
            JobError::LeaseLost(_) => {
                Self::new(StatusCode::CONFLICT, "lease-lost", "Lease lost", detail)
            }
            JobError::Unavailable(_) => Self::unavailable(detail),
            _ => {
                tracing::error!(%detail, "internal error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    "the store failed; see the server log",
                )
            }
        }
    }
}

impl From<jobs_files::FileError> for ApiError {
    fn from(error: jobs_files::FileError) -> Self {
        use jobs_files::FileError;
        match error {
            FileError::TooLarge(limit) => {
                Self::too_large(usize::try_from(limit).unwrap_or(usize::MAX))
            }
            FileError::Body(detail) => Self::malformed("body".into(), detail),
            FileError::Missing => Self::not_found("the file's bytes are gone"),
            FileError::Store(error) => error.into(),
            FileError::Storage(detail) => {
                tracing::error!(%detail, "file storage failed");
                Self::unavailable("the file storage failed; see the server log")
            }
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.problem.title, self.problem.detail)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let body = serde_json::to_string(&self.problem).unwrap_or_default();
        let mut response = HttpResponse::build(self.status);
        response.content_type("application/problem+json");
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            response.insert_header(("Retry-After", seconds.to_string()));
        }
        response.body(body)
    }
}
