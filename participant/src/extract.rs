//! Request extractors whose rejections are JSON errors naming the offending field.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest request body any participant accepts.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Header that turns a write into a dry run: executed, answered, rolled back.
pub const DRY_RUN_HEADER: &str = "x-strangler-dry-run";

/// A JSON request body. Any content type is accepted; the body must parse as `T`.
///
/// Errors: 413 over [`MAX_BODY_BYTES`], 400 `malformed_json` for bytes that are not JSON,
/// 400 `invalid_field` (with the field's path) for JSON of the wrong shape.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses `bytes` as `T`, naming the field on a shape error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            return Err(ApiError::bad_request(
                "malformed_json",
                "request body is empty, expected a JSON object",
            ));
        }
        // serde would also read a struct from an array; the API takes objects only.
        Some(b'{') => {}
        Some(_) => {
            return Err(ApiError::bad_request(
                "malformed_json",
                "request body must be a JSON object",
            ));
        }
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let message = strip_position(&inner.to_string());
                if path == "." {
                    // Missing and unknown fields name themselves in serde's message.
                    ApiError::bad_request("invalid_field", message)
                } else {
                    ApiError::invalid_field(&path, message)
                }
            }
            _ => ApiError::bad_request("malformed_json", format!("malformed JSON: {inner}")),
        }
    })
}

/// serde_json appends "at line 1 column 9" to data errors; the field path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body exceeds {MAX_BODY_BYTES} bytes"),
        )
    } else {
        ApiError::bad_request("unreadable_body", rejection.body_text())
    }
}

/// Query-string parameters parsed as `T`; a bad parameter is a 400 naming it.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|rejection| {
                let text = rejection.body_text();
                let text = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                ApiError::bad_request("invalid_query", format!("query string: {text}"))
            })
    }
}

/// Longest id a path may hold.
pub const MAX_ID: usize = 64;

/// The `{id}` of a path: 1 to [`MAX_ID`] of `A-Z a-z 0-9 - _` (every id a participant makes,
/// a UUID, is one). Anything else is a 400 `invalid_id`, never a lookup: a path the proxy
/// would refuse (an encoded `/`, `\` or NUL) is refused the same way by the participant.
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let invalid = || {
            ApiError::bad_request(
                "invalid_id",
                format!("id: must be 1 to {MAX_ID} letters, digits, - or _"),
            )
        };
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| invalid())?;
        if is_id(&id) {
            Ok(PathId(id))
        } else {
            Err(invalid())
        }
    }
}

/// Whether `value` could be an id: what [`PathId`] accepts.
pub fn is_id(value: &str) -> bool {
    (1..=MAX_ID).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether a write commits or is rolled back after answering (`x-strangler-dry-run: 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    Commit,
    DryRun,
}

impl<S: Send + Sync> FromRequestParts<S> for WriteMode {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.headers.get(DRY_RUN_HEADER).map(|v| v.as_bytes()) {
            None | Some(b"0") | Some(b"false") => Ok(WriteMode::Commit),
            Some(b"1") | Some(b"true") => Ok(WriteMode::DryRun),
            Some(_) => Err(ApiError::bad_request(
                "invalid_header",
                format!("{DRY_RUN_HEADER}: expected 1 or 0"),
            )),
        }
    }
}
