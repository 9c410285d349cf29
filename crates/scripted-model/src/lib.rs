//! A scripted Anthropic Messages API server on 127.0.0.1, good enough for the real Claude Code
//! CLI: streamed (SSE) and plain answers, text and tool calls, driven by a [`Script`].
#![deny(missing_docs)]

mod script;
mod sse;

pub use script::{Block, Reply, Script};

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A request the server received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// `x-api-key`, `authorization`, `anthropic-version`, `anthropic-beta`, when sent.
    pub headers: Vec<(String, String)>,
    /// The JSON body (`Null` when there was none or it was not JSON).
    pub body: Value,
}

#[derive(Debug, Default)]
struct Shared {
    script: Script,
    requests: Vec<RecordedRequest>,
    unexpected: Vec<String>,
}

/// The running server; stops when dropped.
#[derive(Debug)]
pub struct ScriptedModel {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ScriptedModel {
    /// Starts the server on a free port of 127.0.0.1.
    pub async fn start(script: Script) -> std::io::Result<Self> {
        let shared = Arc::new(Mutex::new(Shared {
            script,
            ..Shared::default()
        }));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "scripted model server failed");
            }
        });
        Ok(Self {
            addr,
            shared,
            shutdown: Some(tx),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the script (and keeps what was recorded).
    pub fn set_script(&self, script: Script) {
        if let Ok(mut s) = self.shared.lock() {
            s.script = script;
        }
    }

    /// Every request received.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .lock()
            .map(|s| s.requests.clone())
            .unwrap_or_default()
    }

    /// The main agent loop's requests (`POST /v1/messages` with tools).
    pub fn model_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| {
                r.method == "POST" && r.path.starts_with("/v1/messages") && is_agent_loop(&r.body)
            })
            .collect()
    }

    /// What a test should fail on: script exhausted, unknown routes, unreadable bodies.
    pub fn unexpected(&self) -> Vec<String> {
        self.shared
            .lock()
            .map(|s| s.unexpected.clone())
            .unwrap_or_default()
    }
}

impl Drop for ScriptedModel {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn is_agent_loop(body: &Value) -> bool {
    body.get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty())
}

fn record(shared: &Mutex<Shared>, req: RecordedRequest) {
    if let Ok(mut s) = shared.lock() {
        s.requests.push(req);
    }
}

fn note_unexpected(shared: &Mutex<Shared>, what: String) {
    tracing::warn!(%what, "scripted model: unexpected request");
    if let Ok(mut s) = shared.lock() {
        s.unexpected.push(what);
    }
}

async fn handle(
    State(shared): State<Arc<Mutex<Shared>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let body_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let kept = [
        "x-api-key",
        "authorization",
        "anthropic-version",
        "anthropic-beta",
    ]
    .iter()
    .filter_map(|h| Some((h.to_string(), headers.get(*h)?.to_str().ok()?.to_owned())))
    .collect();
    record(
        &shared,
        RecordedRequest {
            method: method.to_string(),
            path: uri.to_string(),
            headers: kept,
            body: body_json.clone(),
        },
    );
    match (method.as_str(), path.as_str()) {
        ("HEAD" | "GET", "/") => StatusCode::OK.into_response(),
        ("POST", "/v1/messages/count_tokens") => {
            let n = body.len() as u64 / 4;
            json_response(StatusCode::OK, json!({"input_tokens": n}))
        }
        ("POST", "/v1/messages") => messages(&shared, body_json),
        _ => {
            note_unexpected(&shared, format!("{method} {uri}"));
            json_response(
                StatusCode::NOT_FOUND,
                json!({"type": "error", "error": {"type": "not_found_error", "message": format!("no route {method} {path}")}}),
            )
        }
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn messages(shared: &Mutex<Shared>, body: Value) -> Response {
    if body.is_null() {
        note_unexpected(
            shared,
            String::from("POST /v1/messages with a body that is not JSON"),
        );
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "body is not JSON"}}),
        );
    }
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("claude-scripted")
        .to_owned();
    let reply = if is_agent_loop(&body) {
        let index = body
            .get("messages")
            .and_then(Value::as_array)
            .map(|m| m.iter().filter(|m| m["role"] == "assistant").count())
            .unwrap_or(0);
        let scripted = shared
            .lock()
            .ok()
            .and_then(|s| s.script.replies.get(index).cloned());
        scripted.unwrap_or_else(|| {
            note_unexpected(shared, format!("script exhausted: no reply #{index}"));
            Reply::text("script exhausted")
        })
    } else {
        // A side query (title, summary, …): answered, but it does not consume the script.
        Reply::text("ok")
    };
    let request_id = format!("req_scripted_{:x}", rand_u64());
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        let stream = sse::reply_stream(reply, model);
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache")
            .header("request-id", request_id)
            .body(Body::from_stream(stream))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    } else {
        let mut resp = json_response(StatusCode::OK, sse::whole_message(&reply, &model));
        if let Ok(v) = request_id.parse() {
            resp.headers_mut().insert("request-id", v);
        }
        resp
    }
}

/// Unique-enough ids without a dependency.
pub(crate) fn rand_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ NEXT
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
}
