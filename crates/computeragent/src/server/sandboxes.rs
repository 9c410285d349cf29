//! Warm sandboxes: booted once and kept (within an idle and a hard TTL), chatted into turn by
//! turn, their workdir snapshotted as tar.gz and restored into another.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use substrate_core::HarnessClient;
use substrate_core::protocol::EntryType;
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc};

use super::error::ApiError;
use super::runs::{self, InlineFile, PathQuery};
use super::{AppState, stream};
use crate::agent::Agent;

/// The largest snapshot restored (uncompressed).
const MAX_RESTORE_BYTES: u64 = 1 << 30;

/// `POST /v1/sandboxes`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SandboxRequest {
    /// The group (default `default`).
    pub group: Option<String>,
    /// Engine variables; each must be in the group's `env_allow`.
    #[serde(default)]
    pub envs: BTreeMap<String, String>,
    /// The model.
    pub model: Option<String>,
    /// Files put into the workdir first (UTF-8 text).
    #[serde(default)]
    pub files: Vec<InlineFile>,
}

/// `POST /v1/sandboxes/{id}/chat`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    /// The message.
    pub message: String,
}

/// A warm sandbox.
pub(crate) struct Sandbox {
    id: String,
    group: String,
    pub(crate) runtime: Option<String>,
    created: Instant,
    idle_ttl: Duration,
    ttl: Duration,
    last_used: std::sync::Mutex<Instant>,
    client: HarnessClient,
    session: String,
    /// Opens terminals in the sandbox without the agent's lock (a debug shell during a turn).
    pub(crate) terminals: Option<Arc<dyn substrate_core::TerminalHost>>,
    /// The agent; locked for the length of a turn (by a task that outlives the handler).
    agent: Arc<tokio::sync::Mutex<Option<Agent>>>,
    _slot: OwnedSemaphorePermit,
}

impl Sandbox {
    fn json(&self) -> Value {
        let idle = self
            .last_used
            .lock()
            .map(|t| t.elapsed().as_secs())
            .unwrap_or(0);
        json!({
            "id": self.id,
            "group": self.group,
            "runtime": self.runtime,
            "ageSecs": self.created.elapsed().as_secs(),
            "idleSecs": idle,
            "idleTtlSecs": self.idle_ttl.as_secs(),
            "ttlSecs": self.ttl.as_secs(),
        })
    }

    pub(crate) fn touch(&self) {
        if let Ok(mut t) = self.last_used.lock() {
            *t = Instant::now();
        }
    }

    fn expired(&self) -> bool {
        let idle = self
            .last_used
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default();
        idle > self.idle_ttl || self.created.elapsed() > self.ttl
    }

    async fn dispose(&self) {
        if let Some(agent) = self.agent.lock().await.take()
            && let Err(e) = agent.dispose().await
        {
            tracing::warn!(sandbox = %self.id, error = %e, "disposing of a sandbox failed");
        }
    }
}

fn poisoned() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL",
        "the server's sandbox table is unusable after a panic",
    )
}

pub(crate) fn find(state: &AppState, id: &str) -> Result<Arc<Sandbox>, ApiError> {
    state
        .sandboxes
        .lock()
        .map_err(|_| poisoned())?
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no sandbox `{id}`")))
}

pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    request: std::result::Result<Json<SandboxRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = runs::body(request)?;
    let group = state.group(request.group.as_deref())?;
    runs::check_envs(&group, &request.envs)?;
    let slot = state.sandbox_slots.clone().try_acquire_owned().map_err(|_| {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "AT_CAPACITY",
            format!(
                "{} warm sandboxes are alive, the most this server keeps; delete one or retry later",
                state.config.max_sandboxes
            ),
        );
        error.retry_after = Some(30);
        error
    })?;
    // The boot itself counts as a run.
    let boot = state.run_slot()?;
    let id = format!(
        "sbx_{}",
        substrate_core::Secret::random_token()
            .map_err(|e| ApiError::from_core(&e))?
            .expose()
            .chars()
            .take(16)
            .collect::<String>()
    );
    let started = async {
        runs::builder(
            &state,
            &group,
            &request.envs,
            request.model.as_deref(),
            &request.files,
            &id,
        )
        .await?
        .start()
        .await
    }
    .await;
    drop(boot);
    let agent = started.map_err(|e| ApiError::from_core(&e))?;
    let client = agent
        .harness_client()
        .map_err(|e| ApiError::from_core(&e))?;
    let session = agent
        .session_id()
        .map_err(|e| ApiError::from_core(&e))?
        .to_owned();
    let sandbox = Arc::new(Sandbox {
        id: id.clone(),
        group: group.name.clone(),
        runtime: agent.runtime().map(|k| k.as_str().to_owned()),
        created: Instant::now(),
        idle_ttl: group.idle_ttl,
        ttl: group.ttl,
        last_used: std::sync::Mutex::new(Instant::now()),
        client,
        session,
        terminals: agent.terminal_host(),
        agent: Arc::new(tokio::sync::Mutex::new(Some(agent))),
        _slot: slot,
    });
    let body = sandbox.json();
    let accepted = match state.sandboxes.lock() {
        Ok(mut all) if state.accepting.load(std::sync::atomic::Ordering::SeqCst) => {
            all.insert(id, sandbox.clone());
            true
        }
        _ => false,
    };
    if !accepted {
        sandbox.dispose().await;
        return Err(state.check_accepting().err().unwrap_or_else(poisoned));
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub(crate) async fn list(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let all = state.sandboxes.lock().map_err(|_| poisoned())?;
    Ok(Json(json!({
        "sandboxes": all.values().map(|s| s.json()).collect::<Vec<_>>()
    })))
}

pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(find(&state, &id)?.json()))
}

pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let sandbox = state
        .sandboxes
        .lock()
        .map_err(|_| poisoned())?
        .remove(&id)
        .ok_or_else(|| ApiError::not_found(format!("no sandbox `{id}`")))?;
    // A turn in progress is interrupted rather than waited for.
    let _ = sandbox.client.cancel(&sandbox.session).await;
    sandbox.dispose().await;
    Ok(Json(json!({"id": id, "state": "disposed"})))
}

pub(crate) async fn chat(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: std::result::Result<Json<ChatRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = runs::body(request)?;
    if request.message.trim().is_empty() {
        return Err(ApiError::validation("`message` is empty"));
    }
    let sandbox = find(&state, &id)?;
    let permit = state.run_slot()?;
    let guard = sandbox.agent.clone().try_lock_owned().map_err(|_| {
        ApiError::new(
            StatusCode::CONFLICT,
            "SANDBOX_BUSY",
            format!("sandbox `{id}` is in a turn already; wait for its end"),
        )
    })?;
    sandbox.touch();
    let (tx, rx) = mpsc::channel(stream::BUFFER);
    tokio::spawn(async move {
        let _permit = permit;
        let mut guard = guard;
        let Some(agent) = guard.as_mut() else {
            let _ = tx
                .send(stream::frame(
                    "error",
                    &json!({"code": "GONE", "message": "the sandbox was disposed of"}),
                ))
                .await;
            return;
        };
        let cancel = Notify::new();
        let turn = runs::stream_turn(
            agent,
            &request.message,
            &tx,
            &cancel,
            &sandbox.client,
            &sandbox.session,
        )
        .await;
        sandbox.touch();
        let frame = match turn {
            Ok((result, _)) => stream::frame("done", &json!({"id": sandbox.id, "result": result})),
            Err(e) => stream::frame("error", &ApiError::from_core(&e).body()["error"]),
        };
        let _ = tx.send(frame).await;
    });
    Ok(stream::response(rx).into_response())
}

pub(crate) async fn file(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<PathQuery>,
) -> Result<Response, ApiError> {
    let sandbox = find(&state, &id)?;
    sandbox.touch();
    runs::read_file(&sandbox.client, &sandbox.session, query.path).await
}

pub(crate) async fn tree(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let sandbox = find(&state, &id)?;
    sandbox.touch();
    runs::list_tree(&sandbox.client, &sandbox.session).await
}

/// The workdir's files and directories as a tar.gz (symlinks are left out).
pub(crate) async fn snapshot(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let sandbox = find(&state, &id)?;
    sandbox.touch();
    let entries = sandbox
        .client
        .tree(&sandbox.session, ".", 0)
        .await
        .map_err(|e| ApiError::from_core(&e))?
        .entries;
    let mut files = Vec::new();
    for entry in &entries {
        if entry.entry_type == EntryType::File {
            let content = sandbox
                .client
                .read_file(&sandbox.session, &entry.path)
                .await
                .map_err(|e| ApiError::from_core(&e))?;
            files.push((entry.path.clone(), entry.mode, content));
        }
    }
    let dirs: Vec<(String, u32)> = entries
        .iter()
        .filter(|e| e.entry_type == EntryType::Dir)
        .map(|e| (e.path.clone(), e.mode))
        .collect();
    let archive = tokio::task::spawn_blocking(move || pack(&dirs, &files))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/gzip"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"workdir.tar.gz\"",
            ),
        ],
        Body::from(archive),
    )
        .into_response())
}

fn pack(dirs: &[(String, u32)], files: &[(String, u32, Bytes)]) -> std::io::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (path, mode) in dirs {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(mode & 0o7777);
        header.set_size(0);
        tar.append_data(&mut header, format!("{path}/"), std::io::empty())?;
    }
    for (path, mode, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(mode & 0o7777);
        header.set_size(content.len() as u64);
        tar.append_data(&mut header, path, &content[..])?;
    }
    tar.into_inner()?.finish()
}

/// Writes a snapshot's files into the sandbox's workdir (regular files and directories with
/// plain relative paths only; anything else refuses the whole archive before a byte is
/// written).
pub(crate) async fn restore(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    archive: Bytes,
) -> Result<Json<Value>, ApiError> {
    let sandbox = find(&state, &id)?;
    sandbox.touch();
    let files = tokio::task::spawn_blocking(move || unpack(&archive))
        .await
        .map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string())
        })??;
    let count = files.len();
    for (path, mode, content) in files {
        sandbox
            .client
            .write_file(&sandbox.session, &path, content, Some(mode & 0o777))
            .await
            .map_err(|e| ApiError::from_core(&e))?;
    }
    Ok(Json(json!({"id": id, "restored": count})))
}

fn unpack(archive: &[u8]) -> Result<Vec<(String, u32, Vec<u8>)>, ApiError> {
    let bad = |why: String| ApiError::validation(format!("the snapshot: {why}"));
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    let mut files = Vec::new();
    let mut total = 0u64;
    for entry in tar.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let path = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        let plain = path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        let Some(text) = path.to_str().filter(|_| plain) else {
            return Err(bad(format!(
                "`{}` is not a plain relative path",
                path.display()
            )));
        };
        match entry.header().entry_type() {
            tar::EntryType::Directory => continue,
            tar::EntryType::Regular => {}
            other => {
                return Err(bad(format!(
                    "`{text}` is a {other:?} entry; only files and directories are restored"
                )));
            }
        }
        total += entry.header().size().unwrap_or(0);
        if total > MAX_RESTORE_BYTES {
            return Err(bad("more than 1 GiB uncompressed".into()));
        }
        let mode = entry.header().mode().unwrap_or(0o644);
        let mut content = Vec::new();
        entry
            .read_to_end(&mut content)
            .map_err(|e| bad(e.to_string()))?;
        files.push((text.to_owned(), mode, content));
    }
    Ok(files)
}

/// Disposes of sandboxes past their idle or hard TTL, every second, until aborted.
pub(crate) async fn reap_expired(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let expired: Vec<Arc<Sandbox>> = match state.sandboxes.lock() {
            Ok(mut all) => {
                let ids: Vec<String> = all
                    .iter()
                    .filter(|(_, s)| s.expired() && s.agent.try_lock().is_ok())
                    .map(|(id, _)| id.clone())
                    .collect();
                ids.iter().filter_map(|id| all.remove(id)).collect()
            }
            Err(_) => Vec::new(),
        };
        for sandbox in expired {
            tracing::info!(sandbox = %sandbox.id, "disposing of an expired sandbox");
            sandbox.dispose().await;
        }
    }
}

/// Disposes of every sandbox (shutdown).
pub(crate) async fn dispose_all(state: &AppState) {
    let all: Vec<Arc<Sandbox>> = match state.sandboxes.lock() {
        Ok(mut all) => std::mem::take(&mut *all).into_values().collect(),
        Err(_) => Vec::new(),
    };
    for sandbox in all {
        let _ = sandbox.client.cancel(&sandbox.session).await;
        sandbox.dispose().await;
    }
}
