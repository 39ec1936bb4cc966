//! `OpenAiJson<T>`: a JSON body extractor whose every rejection comes back
//! in the OpenAI error shape: no `Content-Type` or another one → 415, a
//! body over the limit → 413 (the limit is enforced while the body is
//! read, so an oversized body is never buffered whole), invalid JSON or a
//! field of the wrong type → 400 naming the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::types::CommonFields;
use super::AppState;

pub struct OpenAiJson<T>(pub T);

/// States whose routes read JSON bodies say how large one may be (the
/// router enforces it with `DefaultBodyLimit`; this names it in the 413).
pub trait BodyLimit {
    fn max_body_bytes(&self) -> usize;
}

impl BodyLimit for AppState {
    fn max_body_bytes(&self) -> usize {
        self.config.max_body_bytes
    }
}

impl<T: DeserializeOwned, S: BodyLimit + Send + Sync> FromRequest<S> for OpenAiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let is_json = content_type.as_deref().is_some_and(|ct| {
            let mime = ct.split(';').next().unwrap_or("").trim();
            mime.eq_ignore_ascii_case("application/json")
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        });
        if !is_json {
            return Err(ApiError::unsupported_media_type(content_type.as_deref()));
        }
        let limit = state.max_body_bytes();
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(limit)
            } else {
                ApiError::malformed(format!("could not read the request body: {rejection}"))
            }
        })?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(de)
            .map(OpenAiJson)
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                if inner.is_syntax() || inner.is_eof() {
                    return ApiError::malformed(format!(
                        "the request body is not valid JSON: {inner}"
                    ));
                }
                let mut path = path;
                let mut message = inner.to_string();
                if path == "." && !message.starts_with("missing field") {
                    // `#[serde(flatten)]` hides where the shared sampling fields
                    // failed; parsing them alone finds it.
                    let again = &mut serde_json::Deserializer::from_slice(&bytes);
                    if let Err(e) = serde_path_to_error::deserialize::<_, CommonFields>(again) {
                        path = e.path().to_string();
                        message = e.into_inner().to_string();
                    }
                }
                // serde reports a missing field at the level that lacks it.
                let missing = message
                    .strip_prefix("missing field `")
                    .and_then(|m| m.split('`').next());
                let param = match (path.as_str(), missing) {
                    (".", Some(field)) => field.to_string(),
                    (".", None) => "body".to_string(),
                    (p, Some(field)) => format!("{p}.{field}"),
                    (p, None) => p.to_string(),
                };
                let message = message.split(" at line ").next().unwrap_or(&message);
                ApiError::invalid(&param, format!("`{param}`: {message}"))
            })
    }
}
