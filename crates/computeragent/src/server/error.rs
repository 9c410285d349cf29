//! The server's errors: a status, a stable code and a message, always as
//! `{"error": {"code", "message"}}` (the harness's envelope).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code (`VALIDATION`, `UNAUTHORIZED`, `AT_CAPACITY`, …).
    pub code: &'static str,
    /// What was wrong and what to do.
    pub message: String,
    /// Seconds to wait before retrying (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 `VALIDATION`.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "VALIDATION", message)
    }

    /// 404 `NOT_FOUND`.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", what)
    }

    /// The error a boot or a harness call failed with, mapped to a status.
    pub fn from_core(error: &substrate_core::Error) -> Self {
        use substrate_core::ErrorKind;
        let (status, code) = match error.kind() {
            ErrorKind::Unsupported => (StatusCode::UNPROCESSABLE_ENTITY, "UNSUPPORTED"),
            ErrorKind::InvalidInput => (StatusCode::BAD_REQUEST, "VALIDATION"),
            ErrorKind::Protocol => match error.protocol_code() {
                Some("NOT_FOUND") => (StatusCode::NOT_FOUND, "NOT_FOUND"),
                Some("PATH_ESCAPE") => (StatusCode::BAD_REQUEST, "PATH_ESCAPE"),
                _ => (StatusCode::BAD_GATEWAY, "HARNESS"),
            },
            ErrorKind::NotInstalled => (StatusCode::SERVICE_UNAVAILABLE, "RUNTIME_UNAVAILABLE"),
            ErrorKind::BootTimeout => (StatusCode::GATEWAY_TIMEOUT, "BOOT_TIMEOUT"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        };
        Self::new(status, code, error.to_string())
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"code": self.code, "message": self.message}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}
