//! `POST /v1/exec`: one command in a fresh sandbox of the group's runtime, its output streamed
//! as SSE (`stdout`/`stderr` frames of text) and its end as `exit` — the fast path for
//! untrusted code.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::error::ApiError;
use super::{AppState, runs, stream};

/// The longest a command may run (the request may ask for less).
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// `POST /v1/exec`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExecRequest {
    /// The command and its arguments.
    pub command: Vec<String>,
    /// The group (default `default`).
    pub group: Option<String>,
    /// Kill it after this many seconds (default and most: one hour).
    pub timeout_secs: Option<u64>,
}

pub(crate) async fn exec(
    State(state): State<Arc<AppState>>,
    request: std::result::Result<Json<ExecRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = runs::body(request)?;
    if request.command.is_empty() {
        return Err(ApiError::validation("`command` is empty"));
    }
    let group = state.group(request.group.as_deref())?;
    let permit = state.run_slot()?;
    let substrate = state
        .provider
        .substrate(&group)
        .await
        .map_err(|e| ApiError::from_core(&e))?;
    let spec = substrate_core::BootSpec::new("exec")
        .network(group.network.clone())
        .limits(group.limits.clone());
    let argv = request.command.iter().map(Into::into).collect();
    let mut process = substrate
        .spawn_command(&spec, argv)
        .await
        .map_err(|e| ApiError::from_core(&e))?;
    let timeout = request
        .timeout_secs
        .map_or(MAX_TIMEOUT, Duration::from_secs)
        .min(MAX_TIMEOUT);
    let (tx, rx) = mpsc::channel(stream::BUFFER);
    let stdout = process.take_stdout();
    let stderr = process.take_stderr();
    tokio::spawn(async move {
        let _permit = permit;
        let pumps = [
            tokio::spawn(pump(stdout, "stdout", tx.clone())),
            tokio::spawn(pump(stderr, "stderr", tx.clone())),
        ];
        let end = tokio::select! {
            end = process.wait(Some(timeout)) => end,
            // Nobody listens any more: dropping the process kills its sandbox.
            () = tx.closed() => return,
        };
        for pump in pumps {
            let _ = pump.await;
        }
        let frame = match end {
            Ok(end) => stream::frame(
                "exit",
                &json!({"code": end.code, "reason": end.reason.to_string(), "success": end.reason.success()}),
            ),
            Err(e) => stream::frame("error", &ApiError::from_core(&e).body()["error"]),
        };
        let _ = tx.send(frame).await;
    });
    Ok(stream::response(rx).into_response())
}

/// Sends what `from` yields as `name` frames of text (lossy UTF-8 per chunk).
async fn pump(
    from: Option<substrate_core::OutputStream>,
    name: &'static str,
    tx: mpsc::Sender<axum::response::sse::Event>,
) {
    let Some(mut from) = from else { return };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                if tx
                    .send(stream::frame(name, &json!({"text": text})))
                    .await
                    .is_err()
                {
                    // The client went away (the waiting task kills the sandbox).
                    return;
                }
            }
        }
    }
}
