//! `GET /v1/sandboxes/{id}/terminal` (WebSocket): a program on a terminal inside a warm
//! sandbox — `computeragent shell --into ID --server URL`, or a browser terminal.
//!
//! Query: `rows`, `cols`, `term`, and `command` (a JSON array; default a login shell).
//! Client → server: binary messages are keys; a text message `{"resize":{"rows":R,"cols":C}}`
//! resizes. Server → client: binary messages are what the program prints; when it ends, a
//! text message `{"exit":{"code":N}}` (or `{"error":{code,message}}`), then close. Closing
//! from the client ends the program; the sandbox stays.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use substrate_core::{TerminalRequest, TerminalSize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::AppState;
use super::error::ApiError;
use super::sandboxes::find;

/// The query of the terminal route.
#[derive(Debug, Deserialize)]
pub(crate) struct TerminalQuery {
    rows: Option<u16>,
    cols: Option<u16>,
    term: Option<String>,
    /// A JSON array of strings.
    command: Option<String>,
}

/// A resize from the client.
#[derive(Debug, Deserialize)]
struct Control {
    resize: Option<Size>,
}

#[derive(Debug, Deserialize)]
struct Size {
    rows: u16,
    cols: u16,
}

pub(crate) async fn terminal(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<TerminalQuery>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let sandbox = find(&state, &id)?;
    let argv: Vec<String> = match &query.command {
        Some(text) => serde_json::from_str(text).map_err(|e| {
            ApiError::validation(format!("`command` is not a JSON array of strings: {e}"))
        })?,
        None => vec!["bash".into(), "-l".into()],
    };
    let request = TerminalRequest::new(argv)
        .size(TerminalSize {
            rows: query.rows.unwrap_or(24),
            cols: query.cols.unwrap_or(80),
        })
        .term(query.term.unwrap_or_else(|| "xterm-256color".into()));
    request.check().map_err(|e| ApiError::from_core(&e))?;
    let upgrade = upgrade.map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::UPGRADE_REQUIRED,
            "UPGRADE_REQUIRED",
            format!("the terminal is a WebSocket: {e}"),
        )
    })?;
    let host = sandbox.terminals.clone().ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "NO_TERMINALS",
            format!(
                "sandbox `{id}` runs on {}, which opens no terminals (bwrap as root, tart and \
                 lima do)",
                sandbox.runtime.as_deref().unwrap_or("its runtime")
            ),
        )
    })?;
    sandbox.touch();
    Ok(upgrade.on_upgrade(move |socket| async move {
        let opened = host.open_terminal(request).await;
        bridge(socket, opened).await;
        sandbox.touch();
    }))
}

/// Carries the terminal over the socket until the program ends or the client leaves.
async fn bridge(mut socket: WebSocket, opened: substrate_core::Result<substrate_core::Terminal>) {
    let mut terminal = match opened {
        Ok(terminal) => terminal,
        Err(e) => {
            let body = ApiError::from_core(&e).body();
            let _ = socket.send(Message::Text(body.to_string().into())).await;
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
    };
    let (Some(mut output), Some(mut input)) = (terminal.take_output(), terminal.take_input())
    else {
        let _ = terminal.close().await;
        return;
    };
    let resizer = terminal.resizer();
    let mut buf = vec![0u8; 16 * 1024];
    let mut output_open = true;
    let end = loop {
        tokio::select! {
            read = output.read(&mut buf), if output_open => match read {
                Ok(n) if n > 0 => {
                    if socket.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                        break None;
                    }
                }
                _ => output_open = false,
            },
            message = socket.recv() => match message {
                Some(Ok(Message::Binary(keys))) => {
                    if input.write_all(&keys).await.is_err() {
                        output_open = false;
                    }
                    let _ = input.flush().await;
                }
                Some(Ok(Message::Text(text))) => {
                    if let Ok(Control { resize: Some(size) }) = serde_json::from_str(&text) {
                        let _ = resizer.resize(TerminalSize { rows: size.rows, cols: size.cols });
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
                Some(Ok(_)) => {}
            },
            end = terminal.wait() => break Some(end),
        }
    };
    match end {
        Some(end) => {
            // What the program printed last, then how it ended.
            while let Ok(Ok(n)) =
                tokio::time::timeout(std::time::Duration::from_millis(200), output.read(&mut buf))
                    .await
            {
                if n == 0
                    || socket
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                {
                    break;
                }
            }
            let message = match end {
                Ok(end) => json!({"exit": {"code": end.code}}),
                Err(e) => ApiError::from_core(&e).body(),
            };
            let _ = socket.send(Message::Text(message.to_string().into())).await;
            let _ = socket.send(Message::Close(None)).await;
        }
        None => tracing::debug!("the terminal's client left; ending its program"),
    }
    let _ = terminal.close().await;
}
