//! The one error type of the HTTP API, and its one response shape:
//! `application/problem+json` (RFC 9457) with a stable `code` that clients
//! may match on, a `detail` for people, and for validation errors the list
//! of what is wrong as JSON pointers into the request.
//!
//! 5xx answers other than 503 are opaque: the cause is logged (with the
//! request id) and the client gets only a code.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::envelope::Violation;
use crate::store::StoreError;

/// How long a client should wait before retrying after a 503, in seconds.
const RETRY_AFTER_SECONDS: u32 = 1;

/// A problem with a request, answered as `application/problem+json`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    detail: String,
    errors: Vec<FieldError>,
    retry_after: Option<u32>,
    /// A `WWW-Authenticate` challenge, for 401s.
    challenge: Option<&'static str>,
}

/// One thing wrong with the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// A JSON pointer into the request body (`/data/candidate/email`,
    /// `/events/3/organization_id`); empty for the body as a whole.
    pub pointer: String,
    pub message: String,
}

impl From<Violation> for FieldError {
    fn from(violation: Violation) -> FieldError {
        FieldError {
            pointer: violation.pointer,
            message: violation.message,
        }
    }
}

/// The response body of every error.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// The HTTP status phrase (`Not Found`).
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// A stable identifier of the kind of problem (`event-not-found`).
    pub code: String,
    /// What went wrong, for people.
    pub detail: String,
    /// For validation errors: every problem found, not just the first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// What any operation behind an API key may answer before it runs, for
/// the OpenAPI document: `responses(KeyRefused, ...)` in every such
/// operation, so that none of them can forget one.
#[derive(utoipa::IntoResponses)]
pub enum KeyRefused {
    #[response(
        status = 401,
        description = "No valid API key.",
        content_type = "application/problem+json"
    )]
    NoValidKey(Problem),
    #[response(
        status = 429,
        description = "Too many failed authentications from this address: retry after `Retry-After` seconds.",
        content_type = "application/problem+json",
        headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))
    )]
    TooManyFailures(Problem),
}

/// The answer of an operation that reads or writes the database while it is
/// away, for the OpenAPI document.
#[derive(utoipa::IntoResponses)]
#[response(
    status = 503,
    description = "The database is unavailable.",
    content_type = "application/problem+json"
)]
pub struct DatabaseUnavailable(pub Problem);

/// What an operation that takes a JSON body answers when the body is too
/// large or not JSON, for the OpenAPI document.
#[derive(utoipa::IntoResponses)]
pub enum BodyRefused {
    #[response(
        status = 413,
        description = "The body is larger than the limit.",
        content_type = "application/problem+json"
    )]
    TooLarge(Problem),
    #[response(
        status = 415,
        description = "The body is not JSON (`Content-Type: application/json`).",
        content_type = "application/problem+json"
    )]
    NotJson(Problem),
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
            challenge: None,
        }
    }

    /// Adds the list of what is wrong.
    pub fn with_errors(mut self, errors: Vec<FieldError>) -> ApiError {
        self.errors = errors;
        self
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// 401: no usable key. Also tells the client how to authenticate.
    pub fn unauthorized(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError {
            challenge: Some(if code == "missing-key" {
                "Bearer realm=\"busbar\""
            } else {
                "Bearer realm=\"busbar\", error=\"invalid_token\""
            }),
            ..ApiError::new(StatusCode::UNAUTHORIZED, code, detail)
        }
    }

    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, code, detail)
    }

    pub fn not_found(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, detail)
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, detail)
    }

    /// 422: the request is well-formed JSON but says something invalid.
    pub fn invalid(
        code: &'static str,
        detail: impl Into<String>,
        errors: Vec<FieldError>,
    ) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail).with_errors(errors)
    }

    /// 503 with `Retry-After`: busbar cannot take the request now; the same
    /// request may succeed later.
    pub fn unavailable(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError {
            retry_after: Some(RETRY_AFTER_SECONDS),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, detail)
        }
    }

    /// 429 with `Retry-After`: this client failed too often; the same
    /// request may succeed after `retry_after` seconds.
    pub fn too_many_requests(
        code: &'static str,
        detail: impl Into<String>,
        retry_after: u32,
    ) -> ApiError {
        ApiError {
            retry_after: Some(retry_after.max(1)),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, detail)
        }
    }

    /// An unexpected failure: logged here with its cause; the client sees
    /// only that something went wrong.
    pub fn internal(error: impl std::fmt::Display) -> ApiError {
        tracing::error!(%error, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal-error",
            "busbar failed to answer this request; the server log has the details under this request's x-request-id",
        )
    }

    /// The request took longer than the configured timeout.
    pub fn timeout() -> ApiError {
        ApiError::unavailable(
            "request-timeout",
            "the request took too long and was abandoned; a publish may or may not have been stored, \
             so retry it with the same event id or Idempotency-Key",
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        if error.is_transient() {
            tracing::warn!(%error, "database unavailable");
            ApiError::unavailable(
                "database-unavailable",
                "the database cannot take requests right now; retry later",
            )
        } else {
            ApiError::internal(error)
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        match &rejection {
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "send the body as JSON with `Content-Type: application/json`",
            ),
            JsonRejection::JsonSyntaxError(_) => {
                ApiError::bad_request("malformed-json", rejection.body_text())
            }
            JsonRejection::JsonDataError(_) => {
                ApiError::invalid("invalid-body", rejection.body_text(), Vec::new())
            }
            _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "the request body is larger than the server's limit (see docs/API.md, \"Limits\")",
            ),
            _ => ApiError::bad_request("unreadable-body", rejection.body_text()),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> ApiError {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "the request body is larger than the server's limit (see docs/API.md, \"Limits\")",
            )
        } else {
            ApiError::bad_request("unreadable-body", rejection.body_text())
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        ApiError::bad_request("invalid-path", rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::bad_request("invalid-query", rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem {
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            code: self.code.to_owned(),
            detail: self.detail,
            errors: self.errors,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(challenge) = self.challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}
