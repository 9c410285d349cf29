//! Bearer-token auth on every route but `/health`: tokens compared in constant time (their
//! SHA-256 digests, so lengths leak nothing either).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::ApiError;

/// The accepted tokens, as digests.
#[derive(Debug, Clone)]
pub struct Tokens {
    digests: Arc<Vec<[u8; 32]>>,
}

impl Tokens {
    /// Accepts these tokens.
    pub fn new(tokens: &[String]) -> Self {
        Self {
            digests: Arc::new(tokens.iter().map(|t| digest(t)).collect()),
        }
    }

    /// Whether `presented` is one of them (every digest compared, whatever matches).
    pub fn accepts(&self, presented: &str) -> bool {
        let presented = digest(presented);
        self.digests.iter().fold(false, |found, known| {
            let diff = known
                .iter()
                .zip(presented.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            found | (diff == 0)
        })
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The middleware: 401 `UNAUTHORIZED` without a valid `Authorization: Bearer` token.
pub async fn require_token(State(tokens): State<Tokens>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if tokens.accepts(token) => next.run(request).await,
        Some(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "the bearer token is not one of the server's",
        )
        .into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "send `Authorization: Bearer <token>` (the token `computeragent serve` printed or was configured with)",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_tokens_pass() {
        let tokens = Tokens::new(&["alpha".into(), "beta".into()]);
        assert!(tokens.accepts("alpha"));
        assert!(tokens.accepts("beta"));
        assert!(!tokens.accepts("alph"));
        assert!(!tokens.accepts(""));
        assert!(!Tokens::new(&[]).accepts("alpha"));
    }
}
