//! Optional API key: when set, every route except `/health` needs
//! `Authorization: Bearer <key>`. The key is compared in constant time;
//! a missing or wrong key gets 401 in the OpenAI error shape.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;

/// States whose routes an API key may guard.
pub trait ApiKey {
    fn api_key(&self) -> Option<&str>;
}

impl ApiKey for AppState {
    fn api_key(&self) -> Option<&str> {
        self.config.api_key.as_deref()
    }
}

pub async fn require_key<S: ApiKey>(
    State(state): State<S>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(key) = state.api_key() else {
        return Ok(next.run(req).await);
    };
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        None => Err(ApiError::unauthorized(
            "this server needs an API key: send `Authorization: Bearer <key>`",
        )),
        Some(g) if bool::from(g.as_bytes().ct_eq(key.as_bytes())) => Ok(next.run(req).await),
        Some(_) => Err(ApiError::unauthorized("the API key is not valid")),
    }
}
