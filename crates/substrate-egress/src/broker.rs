//! The credential broker: the host-side end of every brokered upstream (see
//! [`substrate_core::credential`]).
//!
//! It listens on a Unix socket the runtime makes reachable inside the sandbox as
//! `http://127.0.0.1:PORT/<upstream>/…`. A request must carry the boot's placeholder in one of
//! the upstream's credential headers; the broker puts the real secret in its place, forwards
//! the request to the upstream (TLS when the base URL is https) and streams the response back
//! as it arrives, so server-sent events are never buffered. Every request, forwarded or
//! refused, is one [`BrokerRequest`] event; no event holds a secret or a query string.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures_util::Stream;
use substrate_core::{
    AuditSink, BootSpec, BoundaryEvent, BrokerRequest, BrokeredUpstream, CredentialMode, EnvVars,
    Error, Result, Secret,
};
use tokio::net::UnixListener;

/// Largest request body forwarded (a model request with images stays far below).
const MAX_REQUEST_BODY: usize = 64 * 1024 * 1024;

/// Headers that belong to one hop, never forwarded.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// The model's credential variables and how each travels: variable, header, value prefix.
const MODEL_CREDENTIALS: [(&str, &str, &str); 3] = [
    ("ANTHROPIC_API_KEY", "x-api-key", ""),
    ("ANTHROPIC_AUTH_TOKEN", "authorization", "Bearer "),
    ("CLAUDE_CODE_OAUTH_TOKEN", "authorization", "Bearer "),
];

/// Where the model's requests go when the engine's variables name no base URL.
const DEFAULT_MODEL_URL: &str = "https://api.anthropic.com";

/// One credential header as the broker checks and fills it.
#[derive(Debug, Clone)]
struct Fill {
    header: HeaderName,
    /// `prefix + placeholder`: what the sandbox sends.
    expected: String,
    /// `prefix + secret`: what the upstream gets.
    real: Secret,
}

/// A brokered upstream as the broker serves it.
#[derive(Debug, Clone)]
struct Route {
    name: String,
    base: reqwest::Url,
    fills: Vec<Fill>,
}

/// What brokering makes of a boot: the broker's routes and the engine's variables as the
/// sandbox gets them (placeholders and in-sandbox URLs instead of secrets and real URLs).
#[derive(Debug, Clone)]
pub struct BrokerPlan {
    routes: Vec<Route>,
    /// The engine's variables for inside the sandbox.
    pub engine_envs: EnvVars,
}

impl BrokerPlan {
    /// Plans brokering for `spec`, with the broker reachable inside the sandbox at
    /// `inside_base` (`http://127.0.0.1:3129`). `None` when nothing is brokered: no model key
    /// among the engine's variables (or [`CredentialMode::UnsafeKeysInSandbox`]) and no
    /// declared upstream. A declaration that cannot work is refused, naming what is wrong.
    pub fn for_spec(spec: &BootSpec, inside_base: &str) -> Result<Option<Self>> {
        let mut envs = spec.engine_envs.clone();
        let mut upstreams = Vec::new();
        if spec.credentials == CredentialMode::Brokered
            && let Some(model) = model_upstream(&mut envs)
        {
            upstreams.push(model);
        }
        upstreams.extend(spec.brokered.iter().cloned());
        if upstreams.is_empty() {
            return Ok(None);
        }
        let mut routes = Vec::new();
        for up in &upstreams {
            up.validate()?;
            if routes.iter().any(|r: &Route| r.name == up.name) {
                return Err(Error::invalid(
                    format!("brokered upstream `{}`", up.name),
                    "the name is declared twice",
                ));
            }
            let base = reqwest::Url::parse(&up.base_url).map_err(|e| {
                Error::invalid(
                    format!("brokered upstream `{}`", up.name),
                    format!("`{}` is not a URL: {e}", up.base_url),
                )
            })?;
            let mut fills = Vec::new();
            for c in &up.credentials {
                let placeholder = format!("brokered-{}", Secret::random_token()?.expose());
                let header = HeaderName::from_bytes(c.header.as_bytes()).map_err(|e| {
                    Error::invalid(
                        format!("brokered upstream `{}`", up.name),
                        format!("`{}` is not a header name: {e}", c.header),
                    )
                })?;
                if let Some(var) = &c.placeholder_env {
                    envs.set(var.clone(), placeholder.clone());
                }
                fills.push(Fill {
                    header,
                    expected: format!("{}{placeholder}", c.prefix),
                    real: Secret::new(format!("{}{}", c.prefix, c.secret.expose())),
                });
            }
            if let Some(var) = &up.url_env {
                envs.set(
                    var.clone(),
                    format!("{}/{}", inside_base.trim_end_matches('/'), up.name),
                );
            }
            routes.push(Route {
                name: up.name.clone(),
                base,
                fills,
            });
        }
        Ok(Some(Self {
            routes,
            engine_envs: envs,
        }))
    }

    /// The names of the brokered upstreams.
    pub fn upstreams(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| r.name.as_str())
    }
}

/// Takes the model's credentials (and base URL) out of `envs` as one upstream, `anthropic`.
fn model_upstream(envs: &mut EnvVars) -> Option<BrokeredUpstream> {
    let mut up = None::<BrokeredUpstream>;
    for (var, header, prefix) in MODEL_CREDENTIALS {
        if let Some(value) = envs.remove(var) {
            let base = up.take().unwrap_or_else(|| {
                BrokeredUpstream::new("anthropic", DEFAULT_MODEL_URL).url_env("ANTHROPIC_BASE_URL")
            });
            up = Some(base.credential(header, prefix, Secret::new(value.expose()), Some(var)));
        }
    }
    let mut up = up?;
    if let Some(url) = envs.remove("ANTHROPIC_BASE_URL") {
        up.base_url = url.expose().to_owned();
    }
    Some(up)
}

/// How the broker forwards.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where requests are reported.
    pub audit: AuditSink,
    /// How long connecting to an upstream may take.
    pub connect_timeout: Duration,
    /// PEM certificates trusted besides the system's roots (a company's TLS-inspecting proxy,
    /// an internal upstream).
    pub extra_roots_pem: Vec<String>,
}

impl BrokerConfig {
    /// Reports to `audit`; 10 s to connect.
    pub fn new(audit: AuditSink) -> Self {
        Self {
            audit,
            connect_timeout: Duration::from_secs(10),
            extra_roots_pem: Vec::new(),
        }
    }
}

struct Shared {
    routes: Vec<Route>,
    audit: AuditSink,
    client: reqwest::Client,
}

/// A running broker. Dropping it stops it and removes its socket.
#[derive(Debug)]
pub struct CredentialBroker {
    task: tokio::task::JoinHandle<()>,
    path: PathBuf,
}

impl CredentialBroker {
    /// Serves `plan` on a Unix socket at `path` (replacing a stale one).
    pub fn bind(
        path: impl Into<PathBuf>,
        plan: &BrokerPlan,
        config: BrokerConfig,
    ) -> std::io::Result<Self> {
        let path = path.into();
        let _ = std::fs::remove_file(&path);
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(config.connect_timeout)
            .redirect(reqwest::redirect::Policy::none());
        for pem in &config.extra_roots_pem {
            let root = reqwest::Certificate::from_pem(pem.as_bytes()).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("an extra root certificate is not PEM: {e}"),
                )
            })?;
            builder = builder.add_root_certificate(root);
        }
        let client = builder.build().map_err(std::io::Error::other)?;
        let shared = Arc::new(Shared {
            routes: plan.routes.clone(),
            audit: config.audit,
            client,
        });
        let listener = UnixListener::bind(&path)?;
        let app = axum::Router::new().fallback(handle).with_state(shared);
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "credential broker stopped");
            }
        });
        Ok(Self { task, path })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CredentialBroker {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// An error in the shape the Messages API uses, so the engine shows the message as is.
fn error_response(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "type": "error",
        "error": { "type": kind, "message": format!("credential broker: {message}") },
    });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let (name, rest) = match path.trim_start_matches('/').split_once('/') {
        Some((name, rest)) => (name.to_owned(), format!("/{rest}")),
        None => (path.trim_start_matches('/').to_owned(), String::from("/")),
    };
    let mut event = BrokerRequest::new(&name, parts.method.as_str(), &rest);
    let refuse = |mut event: BrokerRequest, status: StatusCode, kind: &str, why: String| {
        event.status = status.as_u16();
        event.duration = started.elapsed();
        let response = error_response(status, kind, &why);
        event.reason = Some(why);
        shared.audit.emit(BoundaryEvent::Broker(event));
        response
    };
    let Some(route) = shared.routes.iter().find(|r| r.name == name) else {
        let known: Vec<&str> = shared.routes.iter().map(|r| r.name.as_str()).collect();
        return refuse(
            event,
            StatusCode::NOT_FOUND,
            "not_found_error",
            format!(
                "no brokered upstream is named `{name}` (this sandbox has: {})",
                known.join(", ")
            ),
        );
    };

    // The placeholder must be there; real secrets replace it.
    let mut headers = HeaderMap::new();
    for (key, value) in parts.headers.iter() {
        if !HOP_BY_HOP.contains(&key.as_str())
            && key != axum::http::header::CONTENT_LENGTH
            && !route.fills.iter().any(|f| f.header == key)
        {
            headers.append(key.clone(), value.clone());
        }
    }
    let mut carried = false;
    for fill in &route.fills {
        let sent = parts.headers.get(&fill.header).map(HeaderValue::as_bytes);
        if sent.is_some_and(|v| constant_time_eq(v, fill.expected.as_bytes())) {
            carried = true;
            let Ok(mut value) = HeaderValue::from_str(fill.real.expose()) else {
                return refuse(
                    event,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "api_error",
                    format!(
                        "the secret for `{}` is not a valid header value",
                        fill.header
                    ),
                );
            };
            value.set_sensitive(true);
            headers.insert(fill.header.clone(), value);
        }
    }
    if !carried {
        return refuse(
            event,
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            String::from("the request does not carry this sandbox's placeholder credential"),
        );
    }

    let body = match axum::body::to_bytes(body, MAX_REQUEST_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return refuse(
                event,
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                format!(
                    "the request body could not be read whole (at most {MAX_REQUEST_BODY} bytes): {e}"
                ),
            );
        }
    };
    event.bytes_up = body.len() as u64;
    let mut url = route.base.clone();
    let joined = format!("{}{}", route.base.path().trim_end_matches('/'), rest);
    url.set_path(&joined);
    url.set_query(parts.uri.query());

    let upstream = shared
        .client
        .request(parts.method.clone(), url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let upstream = match upstream {
        Ok(r) => r,
        Err(e) => {
            event.allowed = true;
            let host = route.base.host_str().unwrap_or_default().to_owned();
            return refuse(
                event,
                StatusCode::BAD_GATEWAY,
                "api_error",
                format!(
                    "upstream `{}` ({host}) could not be reached: {}",
                    route.name,
                    error_chain(&e)
                ),
            );
        }
    };
    event.allowed = true;
    event.status = upstream.status().as_u16();
    event.first_byte = started.elapsed();
    let mut response = Response::builder().status(upstream.status());
    for (key, value) in upstream.headers() {
        if !HOP_BY_HOP.contains(&key.as_str()) {
            response = response.header(key, value);
        }
    }
    let counted = Counted {
        inner: Box::pin(upstream.bytes_stream()),
        event: Some(event),
        started,
        audit: shared.audit.clone(),
    };
    response
        .body(Body::from_stream(counted))
        .unwrap_or_else(|e| {
            error_response(
                StatusCode::BAD_GATEWAY,
                "api_error",
                &format!("bad upstream response: {e}"),
            )
        })
}

/// `e` with its sources, so "error sending request" says what actually failed.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// The response body on its way to the sandbox: counts bytes and reports the request when it
/// ends — completed, failed or abandoned by the client.
struct Counted {
    inner: ByteStream,
    event: Option<BrokerRequest>,
    started: Instant,
    audit: AuditSink,
}

impl Counted {
    fn report(&mut self, reason: Option<String>) {
        if let Some(mut event) = self.event.take() {
            event.duration = self.started.elapsed();
            event.reason = reason;
            self.audit.emit(BoundaryEvent::Broker(event));
        }
    }
}

impl Stream for Counted {
    type Item = reqwest::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => {
                let n = chunk.len() as u64;
                if let Some(e) = self.event.as_mut() {
                    e.bytes_down += n;
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let why = format!("the upstream's response broke off: {}", error_chain(e));
                self.report(Some(why));
            }
            Poll::Ready(None) => self.report(None),
            Poll::Pending => {}
        }
        polled
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.report(Some(String::from(
            "the sandbox closed the connection before the response ended",
        )));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_key_is_brokered_by_default_and_never_planned_into_the_sandbox() {
        let spec = BootSpec::new("t")
            .env("ANTHROPIC_API_KEY", "sk-ant-real")
            .env("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/")
            .env("OTHER", "x");
        let plan = BrokerPlan::for_spec(&spec, "http://127.0.0.1:3129")
            .unwrap()
            .unwrap();
        let env = plan.engine_envs.expose_map();
        assert_eq!(env["ANTHROPIC_BASE_URL"], "http://127.0.0.1:3129/anthropic");
        assert!(env["ANTHROPIC_API_KEY"].starts_with("brokered-"));
        assert_eq!(env["OTHER"], "x");
        assert!(!format!("{env:?}").contains("sk-ant-real"));
        assert_eq!(plan.routes[0].base.as_str(), "http://127.0.0.1:9/");
        assert_eq!(plan.upstreams().collect::<Vec<_>>(), ["anthropic"]);
    }

    #[test]
    fn unsafe_mode_passes_the_key_and_no_key_means_no_broker() {
        let spec = BootSpec::new("t")
            .env("ANTHROPIC_API_KEY", "sk-ant-real")
            .unsafe_keys_in_sandbox();
        assert!(BrokerPlan::for_spec(&spec, "http://x").unwrap().is_none());
        assert!(
            BrokerPlan::for_spec(&BootSpec::new("t"), "http://x")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn declared_upstreams_are_checked() {
        let spec =
            BootSpec::new("t").broker(BrokeredUpstream::new("gh", "http://github.com").credential(
                "authorization",
                "token ",
                Secret::new("x"),
                None,
            ));
        let err = BrokerPlan::for_spec(&spec, "http://x").unwrap_err();
        assert!(err.to_string().contains("`gh`"), "{err}");
    }
}
