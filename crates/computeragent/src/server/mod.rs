//! The multi-tenant HTTP server (axum): one-shot runs streamed as SSE, warm sandboxes with
//! TTLs, admission control, bearer-token auth and graceful shutdown.
//!
//! Routes (all but `/health` need `Authorization: Bearer <token>`):
//!
//! - `GET /health`
//! - `POST /v1/runs` → SSE: `run` `{id}`, the harness's events (`event:` their type), then
//!   `done` `{id, state, changes, result, reason, usage}` or `error` `{code, message}`;
//!   `GET /v1/runs/{id}`; `DELETE /v1/runs/{id}` (cancel); `GET /v1/runs/{id}/files?path=`
//!   and `GET /v1/runs/{id}/tree` while it runs; `GET /v1/runs/{id}/changes[?format=patch]`
//!   once its turn ended: what it changed against the request's files (a change list and a
//!   git-format patch).
//! - `POST /v1/exec` `{command, group?, timeoutSecs?}` → SSE: `stdout`/`stderr` `{text}`, then
//!   `exit` `{code, reason, success}`: one command in a fresh sandbox, no harness.
//! - `POST /v1/sandboxes`, `GET /v1/sandboxes`, `DELETE /v1/sandboxes/{id}`,
//!   `POST /v1/sandboxes/{id}/chat` (SSE), `GET …/files?path=`, `GET …/tree`,
//!   `GET …/snapshot` (tar.gz of the workdir), `POST …/restore` (a snapshot's tar.gz),
//!   `GET …/terminal` (WebSocket: a program on a terminal inside the sandbox; see
//!   `terminal.rs`).

mod auth;
mod config;
mod error;
mod exec;
mod runs;
mod sandboxes;
mod stream;
mod terminal;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use substrate_core::{Result, Substrate};
use tokio::sync::Semaphore;

pub use auth::Tokens;
pub use config::{DEFAULT_GROUP, Group, ServerConfig};
pub use error::ApiError;

use crate::runtime::{self, RuntimeConfig};

/// Where a group's boots run.
#[async_trait]
pub trait SubstrateProvider: Send + Sync {
    /// The substrate for `group`'s boots.
    async fn substrate(&self, group: &Group) -> Result<Arc<dyn Substrate>>;
}

/// Opens each group's runtime (the best isolating one when the group names none), once.
pub struct RuntimeProvider {
    config: RuntimeConfig,
    opened: tokio::sync::Mutex<BTreeMap<String, Arc<dyn Substrate>>>,
}

impl std::fmt::Debug for RuntimeProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeProvider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RuntimeProvider {
    /// Opens runtimes with `config`.
    pub fn new(config: RuntimeConfig) -> Self {
        Self {
            config,
            opened: tokio::sync::Mutex::new(BTreeMap::new()),
        }
    }
}

#[async_trait]
impl SubstrateProvider for RuntimeProvider {
    async fn substrate(&self, group: &Group) -> Result<Arc<dyn Substrate>> {
        let name = match group.runtime {
            Some(name) => name,
            None => runtime::select(&self.config).await?,
        };
        let mut opened = self.opened.lock().await;
        if let Some(substrate) = opened.get(name.as_str()) {
            return Ok(substrate.clone());
        }
        let substrate = runtime::open(name, &self.config).await?;
        opened.insert(name.as_str().to_owned(), substrate.clone());
        Ok(substrate)
    }
}

/// The server's shared state.
pub(crate) struct AppState {
    pub(crate) config: ServerConfig,
    pub(crate) provider: Arc<dyn SubstrateProvider>,
    /// Slots of concurrent runs, sandbox boots and sandbox turns.
    pub(crate) run_slots: Arc<Semaphore>,
    /// Slots of live warm sandboxes.
    pub(crate) sandbox_slots: Arc<Semaphore>,
    pub(crate) runs: Mutex<BTreeMap<String, runs::RunRecord>>,
    pub(crate) sandboxes: Mutex<BTreeMap<String, Arc<sandboxes::Sandbox>>>,
    pub(crate) accepting: AtomicBool,
}

impl AppState {
    /// 503 while shutting down.
    pub(crate) fn check_accepting(&self) -> std::result::Result<(), ApiError> {
        if self.accepting.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut error = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SHUTTING_DOWN",
            "the server is shutting down and admits no new work",
        );
        error.retry_after = Some(30);
        Err(error)
    }

    /// A run slot now, or 429 `AT_CAPACITY`.
    pub(crate) fn run_slot(
        &self,
    ) -> std::result::Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        self.check_accepting()?;
        self.run_slots.clone().try_acquire_owned().map_err(|_| {
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "AT_CAPACITY",
                format!(
                    "{} runs are in progress, the most this server runs at once; retry later",
                    self.config.max_concurrent_runs
                ),
            );
            error.retry_after = Some(5);
            error
        })
    }

    /// The group `name` (the default group when `None`), or 400 `UNKNOWN_GROUP`.
    pub(crate) fn group(&self, name: Option<&str>) -> std::result::Result<Group, ApiError> {
        let name = name.unwrap_or(DEFAULT_GROUP);
        self.config.group(name).cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "UNKNOWN_GROUP",
                format!(
                    "no group `{name}`; this server has: {}",
                    self.config
                        .groups
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
    }
}

/// The server.
#[derive(Clone)]
pub struct Server {
    state: Arc<AppState>,
    tokens: Tokens,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("bind", &self.state.config.bind)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server whose groups boot on `provider`'s substrates. Its tokens are the config's;
    /// with none configured, nothing but `/health` is reachable.
    pub fn new(config: ServerConfig, provider: Arc<dyn SubstrateProvider>) -> Self {
        let tokens = Tokens::new(&config.tokens);
        Self {
            state: Arc::new(AppState {
                run_slots: Arc::new(Semaphore::new(config.max_concurrent_runs)),
                sandbox_slots: Arc::new(Semaphore::new(config.max_sandboxes)),
                provider,
                runs: Mutex::new(BTreeMap::new()),
                sandboxes: Mutex::new(BTreeMap::new()),
                accepting: AtomicBool::new(true),
                config,
            }),
            tokens,
        }
    }

    /// A server on this host's runtimes.
    pub fn with_runtimes(config: ServerConfig, runtimes: RuntimeConfig) -> Self {
        Self::new(config, Arc::new(RuntimeProvider::new(runtimes)))
    }

    /// Its configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.state.config
    }

    /// The routes.
    pub fn router(&self) -> Router {
        let api = Router::new()
            .route("/v1/runs", post(runs::create))
            .route("/v1/exec", post(exec::exec))
            .route("/v1/runs/{id}", get(runs::get).delete(runs::cancel))
            .route("/v1/runs/{id}/files", get(runs::file))
            .route("/v1/runs/{id}/tree", get(runs::tree))
            .route("/v1/runs/{id}/changes", get(runs::changes))
            .route(
                "/v1/sandboxes",
                post(sandboxes::create).get(sandboxes::list),
            )
            .route(
                "/v1/sandboxes/{id}",
                get(sandboxes::get).delete(sandboxes::delete),
            )
            .route("/v1/sandboxes/{id}/chat", post(sandboxes::chat))
            .route("/v1/sandboxes/{id}/files", get(sandboxes::file))
            .route("/v1/sandboxes/{id}/tree", get(sandboxes::tree))
            .route("/v1/sandboxes/{id}/terminal", get(terminal::terminal))
            .route("/v1/sandboxes/{id}/snapshot", get(sandboxes::snapshot))
            .route("/v1/sandboxes/{id}/restore", post(sandboxes::restore))
            .layer(axum::middleware::from_fn_with_state(
                self.tokens.clone(),
                auth::require_token,
            ))
            .with_state(self.state.clone());
        Router::new()
            .route("/health", get(health))
            .with_state(self.state.clone())
            .merge(api)
            .fallback(|| async { ApiError::not_found("no such route") })
            .layer(DefaultBodyLimit::max(self.state.config.max_body_bytes))
    }

    /// Serves on `listener` until `shutdown` resolves, then shuts down gracefully: no new
    /// work is admitted, runs may finish within the grace time (then they are cancelled),
    /// and every warm sandbox is disposed of.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let reaper = tokio::spawn(sandboxes::reap_expired(self.state.clone()));
        let state = self.state.clone();
        let grace = self.state.config.shutdown_grace;
        let signal = async move {
            shutdown.await;
            state.accepting.store(false, Ordering::SeqCst);
            tracing::info!("shutting down: no new work; runs get {grace:?} to finish");
            let state = state.clone();
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                runs::cancel_all(&state);
            });
        };
        use axum::serve::ListenerExt;
        // Events are small writes: without TCP_NODELAY each waits out a delayed ACK.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
        });
        let served = axum::serve(listener, self.router())
            .with_graceful_shutdown(signal)
            .await;
        reaper.abort();
        self.drain().await;
        served.map_err(|e| substrate_core::Error::io("serve", e))
    }

    /// Stops admitting, cancels what runs, waits for every run to end and disposes of every
    /// warm sandbox.
    pub async fn drain(&self) {
        self.state.accepting.store(false, Ordering::SeqCst);
        let grace = self.state.config.shutdown_grace;
        let all = u32::try_from(self.state.config.max_concurrent_runs).unwrap_or(u32::MAX);
        let finished = tokio::time::timeout(grace, self.state.run_slots.acquire_many(all)).await;
        if finished.is_err() {
            runs::cancel_all(&self.state);
            let _ = tokio::time::timeout(
                Duration::from_secs(30),
                self.state.run_slots.acquire_many(all),
            )
            .await;
        }
        sandboxes::dispose_all(&self.state).await;
    }
}

async fn health(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> axum::Json<serde_json::Value> {
    let live_runs = state.config.max_concurrent_runs - state.run_slots.available_permits();
    axum::Json(serde_json::json!({
        "ok": true,
        "accepting": state.accepting.load(Ordering::SeqCst),
        "runsInProgress": live_runs,
        "maxConcurrentRuns": state.config.max_concurrent_runs,
    }))
}
