//! An async client for harness protocol v1, over TCP or a Unix socket, with bearer auth.

mod chat;
mod sse;
mod stream;

pub use chat::{
    AllowAll, ChatSession, PermissionHandler, PermissionRequest, SessionSummary, Turn, TurnOutcome,
    permission_fn,
};
pub use sse::{SseFrame, SseParser};
pub use stream::EventStream;

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::protocol::{
    ChatRequest, CreateSession, EditRequest, EditResult, ErrorEnvelope, FileWritten, Health,
    MkdirRequest, MoveRequest, PermissionDecision, Queued, SessionCreated, SessionInfo, Tree,
    UserMessage,
};
use crate::secret::Secret;
use crate::substrate::Endpoint;
use crate::{Error, Result};

/// The most `read_file` allocates before the bytes arrive.
const MAX_FILE_PREALLOC: u64 = 256 << 20;

/// A client for one harness. Cheap to clone (connections are pooled and shared).
#[derive(Clone)]
pub struct HarnessClient {
    http: reqwest::Client,
    base: String,
    endpoint: Endpoint,
    token: Option<Secret>,
}

impl std::fmt::Debug for HarnessClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HarnessClient")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token)
            .finish()
    }
}

impl HarnessClient {
    /// A client for the harness at `endpoint`, sending `token` as a bearer token.
    pub fn new(endpoint: Endpoint, token: Option<Secret>) -> Result<Self> {
        // No proxy from the environment: harness traffic stays on loopback or the socket.
        let builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(30));
        let (builder, base) = match &endpoint {
            Endpoint::Tcp(url) => (builder, url.trim_end_matches('/').to_owned()),
            Endpoint::Unix(path) => (
                builder.unix_socket(path.as_path()),
                String::from("http://harness"),
            ),
        };
        let http = builder.build().map_err(|e| Error::Transport {
            endpoint: endpoint.to_string(),
            reason: format!("cannot build the HTTP client: {e}"),
        })?;
        Ok(Self {
            http,
            base,
            endpoint,
            token,
        })
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => req.bearer_auth(token.expose()),
            None => req,
        }
    }

    fn transport(&self, err: &reqwest::Error) -> Error {
        let mut reason = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(inner) = source {
            reason.push_str(": ");
            reason.push_str(&inner.to_string());
            source = inner.source();
        }
        Error::Transport {
            endpoint: self.endpoint.to_string(),
            reason,
        }
    }

    /// Sends a request and turns a non-2xx answer into [`Error::Protocol`].
    async fn send(&self, req: RequestBuilder) -> Result<Response> {
        let resp = req.send().await.map_err(|e| self.transport(&e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(self.protocol_error(resp).await)
    }

    async fn protocol_error(&self, resp: Response) -> Error {
        let status = resp.status();
        let body = match resp.bytes().await {
            Ok(body) => body,
            Err(e) => return self.transport(&e),
        };
        match serde_json::from_slice::<ErrorEnvelope>(&body) {
            Ok(env) => Error::Protocol {
                status: status.as_u16(),
                code: env.error.code,
                message: env.error.message,
                details: env.error.details,
            },
            Err(_) => Error::Protocol {
                status: status.as_u16(),
                code: String::from("UNKNOWN"),
                message: format!(
                    "no error envelope; body: {}",
                    String::from_utf8_lossy(&body[..body.len().min(512)])
                ),
                details: None,
            },
        }
    }

    async fn json<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T> {
        let resp = self.send(req).await?;
        let body = resp.bytes().await.map_err(|e| self.transport(&e))?;
        serde_json::from_slice(&body).map_err(|e| {
            Error::Decode(format!(
                "{e}; body: {}",
                String::from_utf8_lossy(&body[..body.len().min(512)])
            ))
        })
    }

    async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.json(self.request(Method::POST, path).json(body)).await
    }

    async fn post_unit<B: Serialize + ?Sized>(&self, path: &str, body: &B) -> Result<()> {
        self.send(self.request(Method::POST, path).json(body))
            .await
            .map(drop)
    }

    /// `GET /v1/health` (public: sent without the token too).
    pub async fn health(&self) -> Result<Health> {
        self.json(self.request(Method::GET, "/v1/health")).await
    }

    /// `POST /v1/sessions`.
    pub async fn create_session(&self, req: &CreateSession) -> Result<SessionCreated> {
        self.post_json("/v1/sessions", req).await
    }

    /// `GET /v1/sessions/:id`.
    pub async fn session(&self, id: &str) -> Result<SessionInfo> {
        let path = session_path(id, "")?;
        self.json(self.request(Method::GET, &path)).await
    }

    /// `DELETE /v1/sessions/:id`: cancels the engine and removes the session's files.
    pub async fn delete_session(&self, id: &str) -> Result<()> {
        let path = session_path(id, "")?;
        self.send(self.request(Method::DELETE, &path))
            .await
            .map(drop)
    }

    /// `POST /v1/sessions/:id/messages`.
    pub async fn send_message(&self, id: &str, message: impl Into<UserMessage>) -> Result<Queued> {
        let body = serde_json::json!({ "message": message.into() });
        self.post_json(&session_path(id, "/messages")?, &body).await
    }

    /// `POST /v1/sessions/:id/end-input`.
    pub async fn end_input(&self, id: &str) -> Result<()> {
        self.post_unit(&session_path(id, "/end-input")?, &serde_json::json!({}))
            .await
    }

    /// `POST /v1/sessions/:id/cancel`.
    pub async fn cancel(&self, id: &str) -> Result<()> {
        self.post_unit(&session_path(id, "/cancel")?, &serde_json::json!({}))
            .await
    }

    /// `POST /v1/sessions/:id/permission/:callId`.
    pub async fn decide_permission(
        &self,
        id: &str,
        call_id: &str,
        decision: &PermissionDecision,
    ) -> Result<()> {
        check_segment("permission call id", call_id)?;
        self.post_unit(
            &session_path(id, &format!("/permission/{call_id}"))?,
            decision,
        )
        .await
    }

    /// `GET /v1/sessions/:id/events`: a resumable stream of every event after `after` (all of
    /// them when `None`). Reconnects with `Last-Event-ID` when the connection drops, never
    /// yields an event twice, and fails loudly if one was lost.
    pub async fn events(&self, id: &str, after: Option<u64>) -> Result<EventStream> {
        EventStream::subscribe(self.clone(), id.to_owned(), after).await
    }

    /// `POST /v1/chat`: one-shot session (create, run, stream, delete). Not resumable: the
    /// request itself starts the run.
    pub async fn chat(&self, req: &ChatRequest) -> Result<EventStream> {
        let resp = self
            .send(self.request(Method::POST, "/v1/chat").json(req))
            .await?;
        Ok(EventStream::one_shot(self.clone(), resp))
    }

    /// `GET fs/file`: the file's bytes.
    pub async fn read_file(&self, id: &str, path: &str) -> Result<bytes::Bytes> {
        let req = self
            .request(Method::GET, &session_path(id, "/fs/file")?)
            .query(&[("path", path)]);
        let mut resp = self.send(req).await?;
        // One buffer sized from Content-Length: growing it chunk by chunk, as `bytes()` does,
        // copies a large file several times and costs two thirds of the throughput. The size
        // comes from the sandbox side, so the up-front allocation is capped.
        let expected = resp.content_length().unwrap_or(0).min(MAX_FILE_PREALLOC);
        let mut buf = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.transport(&e))? {
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.into())
    }

    /// `GET fs/file`, streamed: for large files.
    pub async fn read_file_stream(
        &self,
        id: &str,
        path: &str,
    ) -> Result<impl futures_util::Stream<Item = Result<bytes::Bytes>> + use<>> {
        use futures_util::StreamExt;
        let req = self
            .request(Method::GET, &session_path(id, "/fs/file")?)
            .query(&[("path", path)]);
        let resp = self.send(req).await?;
        let me = self.clone();
        Ok(resp
            .bytes_stream()
            .map(move |r| r.map_err(|e| me.transport(&e))))
    }

    /// `PUT fs/file`: writes the file (parents created), with optional Unix mode bits.
    pub async fn write_file(
        &self,
        id: &str,
        path: &str,
        body: impl Into<reqwest::Body>,
        mode: Option<u32>,
    ) -> Result<FileWritten> {
        let mut query = vec![("path", path.to_owned())];
        if let Some(mode) = mode {
            query.push(("mode", format!("{mode:o}")));
        }
        let req = self
            .request(Method::PUT, &session_path(id, "/fs/file")?)
            .query(&query)
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(body);
        self.json(req).await
    }

    /// `DELETE fs/file`: removes a file, or a directory with `recursive`.
    pub async fn delete_path(&self, id: &str, path: &str, recursive: bool) -> Result<()> {
        let req = self
            .request(Method::DELETE, &session_path(id, "/fs/file")?)
            .query(&[
                ("path", path),
                ("recursive", if recursive { "true" } else { "false" }),
            ]);
        self.send(req).await.map(drop)
    }

    /// `GET fs/tree`: entries under `path` down to `depth` levels (0 = unlimited).
    pub async fn tree(&self, id: &str, path: &str, depth: u32) -> Result<Tree> {
        let req = self
            .request(Method::GET, &session_path(id, "/fs/tree")?)
            .query(&[("path", path.to_owned()), ("depth", depth.to_string())]);
        self.json(req).await
    }

    /// `POST fs/edit`: string replacement in a file.
    pub async fn edit(&self, id: &str, edit: &EditRequest) -> Result<EditResult> {
        self.post_json(&session_path(id, "/fs/edit")?, edit).await
    }

    /// `POST fs/mkdir`.
    pub async fn mkdir(&self, id: &str, path: &str, recursive: bool) -> Result<()> {
        let body = MkdirRequest {
            path: path.to_owned(),
            recursive,
        };
        self.post_unit(&session_path(id, "/fs/mkdir")?, &body).await
    }

    /// `POST fs/move`.
    pub async fn move_path(&self, id: &str, from: &str, to: &str, overwrite: bool) -> Result<()> {
        let body = MoveRequest {
            from: from.to_owned(),
            to: to.to_owned(),
            overwrite,
        };
        self.post_unit(&session_path(id, "/fs/move")?, &body).await
    }

    /// Polls `GET /v1/health` until it answers; after `deadline`, fails with
    /// [`Error::BootTimeout`] for the `health` phase, carrying the last error seen. Used by
    /// runtimes for their health phase.
    pub async fn wait_healthy(
        &self,
        deadline: Duration,
        probe: Option<&crate::boot::PhaseProbe>,
    ) -> Result<Health> {
        // A refused connect costs microseconds, so poll finely while a fast start is likely and
        // back off after that: boot latency is not padded by a coarse schedule.
        let start = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(5);
        loop {
            match self.health().await {
                Ok(h) => return Ok(h),
                Err(e) => {
                    if let Some(p) = probe {
                        p.saw(e.to_string());
                    }
                    if start.elapsed() + delay > deadline {
                        return Err(Error::BootTimeout {
                            phase: crate::boot::BootPhase::Health,
                            deadline,
                            last_seen: e.to_string(),
                        });
                    }
                }
            }
            tokio::time::sleep(delay).await;
            if start.elapsed() > Duration::from_millis(500) {
                delay = (delay * 2).min(Duration::from_millis(250));
            }
        }
    }

    pub(crate) async fn open_events(
        &self,
        id: &str,
        last_event_id: Option<u64>,
    ) -> Result<Response> {
        let mut req = self
            .request(Method::GET, &session_path(id, "/events")?)
            .header(http::header::ACCEPT, "text/event-stream");
        if let Some(last) = last_event_id {
            req = req.header("Last-Event-ID", last.to_string());
        }
        self.send(req).await
    }

    pub(crate) fn transport_error(&self, err: &reqwest::Error) -> Error {
        self.transport(err)
    }
}

/// Session ids and call ids go into URL paths: only `[A-Za-z0-9_-]` is accepted, so nothing can
/// be smuggled into the path.
fn check_segment(what: &str, value: &str) -> Result<()> {
    if value.is_empty()
        || value.len() > 128
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(Error::invalid(
            what,
            format!("{value:?} must be 1–128 characters of A–Z, a–z, 0–9, `_` or `-`"),
        ));
    }
    Ok(())
}

fn session_path(id: &str, rest: &str) -> Result<String> {
    check_segment("session id", id)?;
    Ok(format!("/v1/sessions/{id}{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_escape_the_path() {
        assert!(session_path("sess_ok-1", "/events").is_ok());
        for bad in ["", "../x", "a/b", "a?b", "a b", "é"] {
            assert!(session_path(bad, "").is_err(), "{bad:?}");
        }
    }
}
