use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ferry_net::api::{ERROR_CODE_HEADER, ErrorBody, ErrorCode};

/// An API failure: a status, a stable code for clients and a message for
/// the operator.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

impl ApiError {
    /// An error with any status and code.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }
    /// 409, with a code saying which conflict.
    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }
    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }
    /// An internal failure: the details (which may name server paths) go
    /// to the server's log under a reference; the client learns only that.
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        let reference = format!("{:08x}", rand::random::<u32>());
        tracing::error!(reference, "{message}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            format!(
                "internal error on the server (log reference {reference}); its operator finds the details in the log"
            ),
        )
    }
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }
    /// The message for people.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.status,
            self.code.as_str(),
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code.as_str();
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: self.message,
                code: Some(code.to_owned()),
            }),
        )
            .into_response();
        response
            .headers_mut()
            .insert(ERROR_CODE_HEADER, HeaderValue::from_static(code));
        response
    }
}

impl From<ferry_catalog::CatalogError> for ApiError {
    fn from(e: ferry_catalog::CatalogError) -> Self {
        use ferry_catalog::CatalogError as C;
        match e {
            C::DuplicateVersion { .. } => {
                ApiError::conflict(ErrorCode::AlreadyPublished, e.to_string())
            }
            C::TokenInvalid | C::TokenUsed | C::TokenExpired(_) => ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::TokenRefused,
                e.to_string(),
            ),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<ferry_store::StoreError> for ApiError {
    fn from(e: ferry_store::StoreError) -> Self {
        use ferry_store::StoreError as S;
        match e {
            S::DigestMismatch { .. } | S::BadPack(_) => ApiError::bad_request(e.to_string()),
            S::Missing(_) => ApiError::not_found(e.to_string()),
            S::OutOfRange { .. } => ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorCode::RangeNotSatisfiable,
                e.to_string(),
            ),
            S::Io { ref source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
                tracing::error!("{e}");
                ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    ErrorCode::StorageFull,
                    "the server's disk is full; its operator must free space (with the hub stopped, `ferry hub gc --staged-older-than 0s` drops unfinished uploads)",
                )
            }
            other => ApiError::internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_errors_keep_server_paths_out_of_the_answer() {
        let e = ApiError::internal("opening /srv/ferry/secret/catalog.db failed");
        let response = e.into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()[ERROR_CODE_HEADER], "internal");
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert!(!body.error.contains("/srv"), "{}", body.error);
        assert_eq!(body.code.as_deref(), Some("internal"));
    }
}
