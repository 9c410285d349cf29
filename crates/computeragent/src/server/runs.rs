//! One-shot runs: boot, one turn streamed as SSE, dispose — with the run's record kept for
//! `GET`, cancellation by `DELETE`, and its files readable while it runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use substrate_core::HarnessClient;
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc};

use super::error::ApiError;
use super::{AppState, Group, stream};
use crate::agent::{Agent, AgentBuilder, Source};

/// Finished runs kept for `GET /v1/runs/{id}`; the oldest go first.
const KEPT_RUNS: usize = 1000;

/// `POST /v1/runs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunRequest {
    /// What to ask the agent.
    pub prompt: String,
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

/// A text file in a request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InlineFile {
    /// Relative to the workdir.
    pub path: String,
    /// Its content.
    pub content: String,
}

/// A run's record.
pub(crate) struct RunRecord {
    id: String,
    group: String,
    state: &'static str,
    created_ms: u128,
    runtime: Option<String>,
    result: Option<Value>,
    error: Option<Value>,
    /// What the agent changed against the request's files, once the turn ended.
    changes: Option<Value>,
    /// The harness client and session while the agent lives.
    live: Option<(HarnessClient, String)>,
    cancel: Arc<Notify>,
}

impl RunRecord {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "group": self.group,
            "state": self.state,
            "createdMs": self.created_ms as u64,
            "runtime": self.runtime,
            "result": self.result,
            "error": self.error,
            "changes": self.changes.as_ref().map(|c| c["changes"].clone()),
        })
    }
}

/// The JSON body, or 400 `VALIDATION` naming what is wrong with it.
pub(crate) fn body<T>(body: std::result::Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b).map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                "the request body is over the server's max_body_bytes",
            )
        } else {
            ApiError::validation(format!("the request body: {}", e.body_text()))
        }
    })
}

/// Checks a request's variables against the group's allow-list.
pub(crate) fn check_envs(group: &Group, envs: &BTreeMap<String, String>) -> Result<(), ApiError> {
    let refused: Vec<&str> = envs
        .keys()
        .filter(|k| !group.env_allow.contains(*k))
        .map(String::as_str)
        .collect();
    if refused.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        "ENV_NOT_ALLOWED",
        format!(
            "group `{}` does not let requests set {}; its env_allow is [{}]",
            group.name,
            refused.join(", "),
            group
                .env_allow
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

/// The agent builder of a group's boot with the server's and the request's variables.
pub(crate) async fn builder(
    state: &AppState,
    group: &Group,
    envs: &BTreeMap<String, String>,
    model: Option<&str>,
    files: &[InlineFile],
    label: &str,
) -> substrate_core::Result<AgentBuilder> {
    let substrate = state.provider.substrate(group).await?;
    let mut builder = Agent::builder()
        .substrate(substrate)
        .network(group.network.clone())
        .limits(group.limits.clone())
        .label(label);
    for (name, value) in state.config.engine_env.iter().chain(envs) {
        builder = builder.env(name.clone(), value.clone());
    }
    if let Some(model) = model {
        builder = builder.model(model);
    }
    if !files.is_empty() {
        builder = builder.source(Source::Files(
            files
                .iter()
                .map(|f| (f.path.clone(), f.content.clone().into_bytes()))
                .collect(),
        ));
    }
    Ok(builder)
}

fn new_id(prefix: &str) -> Result<String, ApiError> {
    let token = substrate_core::Secret::random_token().map_err(|e| ApiError::from_core(&e))?;
    Ok(format!(
        "{prefix}_{}",
        token.expose().chars().take(16).collect::<String>()
    ))
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    request: std::result::Result<Json<RunRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = body(request)?;
    if request.prompt.trim().is_empty() {
        return Err(ApiError::validation("`prompt` is empty"));
    }
    let group = state.group(request.group.as_deref())?;
    check_envs(&group, &request.envs)?;
    let permit = state.run_slot()?;
    let id = new_id("run")?;
    let cancel = Arc::new(Notify::new());
    {
        let mut runs = state.runs.lock().map_err(|_| poisoned())?;
        while runs.len() >= KEPT_RUNS {
            let oldest = runs
                .iter()
                .filter(|(_, r)| r.live.is_none() && r.state != "booting")
                .min_by_key(|(_, r)| r.created_ms)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(old) => runs.remove(&old),
                None => break,
            };
        }
        runs.insert(
            id.clone(),
            RunRecord {
                id: id.clone(),
                group: group.name.clone(),
                state: "booting",
                created_ms: now_ms(),
                runtime: None,
                result: None,
                error: None,
                changes: None,
                live: None,
                cancel: cancel.clone(),
            },
        );
    }
    let (tx, rx) = mpsc::channel(stream::BUFFER);
    tokio::spawn(drive(state, id.clone(), group, request, tx, cancel, permit));
    let mut response = stream::response(rx).into_response();
    if let Ok(value) = header::HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-run-id", value);
    }
    Ok(response)
}

fn poisoned() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL",
        "the server's run table is unusable after a panic",
    )
}

fn update(state: &AppState, id: &str, f: impl FnOnce(&mut RunRecord)) {
    if let Ok(mut runs) = state.runs.lock()
        && let Some(record) = runs.get_mut(id)
    {
        f(record);
    }
}

/// Boots, runs the turn, streams it, disposes — and records how it went.
async fn drive(
    state: Arc<AppState>,
    id: String,
    group: Group,
    request: RunRequest,
    tx: mpsc::Sender<axum::response::sse::Event>,
    cancel: Arc<Notify>,
    _permit: OwnedSemaphorePermit,
) {
    let _ = tx.send(stream::frame("run", &json!({"id": id}))).await;
    let baseline = match input_baseline(&request.files) {
        Ok(baseline) => Some(baseline),
        Err(e) => {
            tracing::warn!(run = %id, error = %e, "no change set for this run");
            None
        }
    };
    let outcome = async {
        let builder = builder(
            &state,
            &group,
            &request.envs,
            request.model.as_deref(),
            &request.files,
            &id,
        )
        .await?;
        let booted = tokio::select! {
            agent = builder.start() => Some(agent?),
            () = cancel.notified() => None,
        };
        let Some(mut agent) = booted else {
            return Ok((None, "cancelled"));
        };
        let client = agent.harness_client()?;
        let session = agent.session_id()?.to_owned();
        update(&state, &id, |r| {
            r.state = "running";
            r.runtime = agent.runtime().map(|k| k.as_str().to_owned());
            r.live = Some((client.clone(), session.clone()));
        });
        let turn = stream_turn(&mut agent, &request.prompt, &tx, &cancel, &client, &session).await;
        // The run's changes against its input files, read before the sandbox goes.
        let changes = match &baseline {
            Some((baseline, _)) if turn.is_ok() => {
                match changes_of(baseline, &client, &session).await {
                    Ok(changes) => Some(changes),
                    Err(e) => {
                        tracing::warn!(run = %id, error = %e, "could not read the run's changes");
                        None
                    }
                }
            }
            _ => None,
        };
        update(&state, &id, |r| {
            r.live = None;
            r.changes = changes.clone();
        });
        let summary = agent.dispose().await;
        let (result, cancelled) = turn?;
        let summary = summary?;
        let ended = if cancelled { "cancelled" } else { "done" };
        Ok::<_, substrate_core::Error>((
            Some(json!({
                "changes": changes.as_ref().map(|c| c["changes"].clone()),
                "result": result,
                "reason": format!("{:?}", summary.reason).to_ascii_lowercase(),
                "turns": summary.turns,
                "usage": serde_json::to_value(&summary.usage).unwrap_or(Value::Null),
            })),
            ended,
        ))
    }
    .await;
    match outcome {
        Ok((result, ended)) => {
            update(&state, &id, |r| {
                r.state = ended;
                r.result = result.clone();
            });
            let mut done = json!({"id": id, "state": ended});
            if let (Some(map), Some(Value::Object(result))) = (done.as_object_mut(), result) {
                map.extend(result);
            }
            let _ = tx.send(stream::frame("done", &done)).await;
        }
        Err(e) => {
            let error = ApiError::from_core(&e).body()["error"].clone();
            update(&state, &id, |r| {
                r.state = "failed";
                r.error = Some(error.clone());
            });
            let _ = tx.send(stream::frame("error", &error)).await;
        }
    }
}

/// The request's files as a project on the host: the baseline a run's changes are measured
/// against, and the directory holding them, kept while the run is: the patch reads its old
/// side there.
fn input_baseline(
    files: &[InlineFile],
) -> substrate_core::Result<(crate::project::ProjectCopy, crate::project::ScratchDir)> {
    let dir = crate::project::ScratchDir::new("run-input")?;
    let written = (|| {
        for file in files {
            let rel = std::path::Path::new(&file.path);
            if rel.is_absolute()
                || rel
                    .components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return Err(substrate_core::Error::invalid(
                    "files",
                    format!("`{}` is not a plain relative path", file.path),
                ));
            }
            let target = dir.path().join(rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    substrate_core::Error::io(format!("create {}", parent.display()), e)
                })?;
            }
            std::fs::write(&target, &file.content)
                .map_err(|e| substrate_core::Error::io(format!("write {}", target.display()), e))?;
        }
        crate::project::ProjectCopy::stage(dir.path(), &changeset::Options::default())
    })();
    Ok((written?, dir))
}

/// What the agent changed in the workdir against `baseline`: each change's summary line and
/// path, and the whole as a patch `git apply` reads (binary files included).
async fn changes_of(
    baseline: &crate::project::ProjectCopy,
    client: &HarnessClient,
    session: &str,
) -> substrate_core::Result<Value> {
    let (changes, _fetched) = baseline.changes(client, session).await?;
    let patch = changes
        .render(changeset::DiffFormat::Git)
        .map_err(|e| substrate_core::Error::invalid("changes", e.to_string()))?
        .text;
    let list: Vec<Value> = changes
        .changes()
        .iter()
        .map(|c| json!({"path": c.path(), "summary": c.summary()}))
        .collect();
    Ok(json!({"changes": list, "patch": patch}))
}

/// `GET /v1/runs/{id}/changes`: what a finished run changed against its input files, as JSON
/// (`changes` and `patch`), or as the patch alone with `?format=patch`.
pub(crate) async fn changes(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<FormatQuery>,
) -> Result<Response, ApiError> {
    let runs = state.runs.lock().map_err(|_| poisoned())?;
    let record = runs
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("no run `{id}`")))?;
    let Some(changes) = record.changes.clone() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "NO_CHANGES_YET",
            format!(
                "run `{id}` is {}: its changes are read when its turn ends",
                record.state
            ),
        ));
    };
    match query.format.as_deref() {
        None | Some("json") => Ok(Json(changes).into_response()),
        Some("patch") => Ok((
            [(header::CONTENT_TYPE, "text/x-diff; charset=utf-8")],
            changes["patch"].as_str().unwrap_or_default().to_owned(),
        )
            .into_response()),
        Some(other) => Err(ApiError::validation(format!(
            "`format={other}` is not one of json, patch"
        ))),
    }
}

/// `?format=`.
#[derive(Debug, Deserialize)]
pub(crate) struct FormatQuery {
    format: Option<String>,
}

/// Streams one turn's events to `tx`; the result text and whether it was cancelled (by
/// `DELETE` or by the client going away).
pub(crate) async fn stream_turn(
    agent: &mut Agent,
    prompt: &str,
    tx: &mpsc::Sender<axum::response::sse::Event>,
    cancel: &Notify,
    client: &HarnessClient,
    session: &str,
) -> substrate_core::Result<(Option<String>, bool)> {
    let mut turn = agent.chat(prompt).await?;
    let mut cancelled = false;
    loop {
        let event = tokio::select! {
            event = turn.next() => event,
            () = cancel.notified(), if !cancelled => {
                cancelled = true;
                let _ = client.cancel(session).await;
                continue;
            }
        };
        let Some(event) = event else { break };
        let event = event?;
        let frame = stream::frame(event.type_name(), &event.to_json());
        if tx.send(frame).await.is_err() && !cancelled {
            // Nobody listens any more: stop the engine rather than run for no one.
            cancelled = true;
            let _ = client.cancel(session).await;
        }
    }
    let outcome = turn.finish().await?;
    Ok((outcome.result_text().map(str::to_owned), cancelled))
}

/// Cancels every run in progress (shutdown after the grace time).
pub(crate) fn cancel_all(state: &AppState) {
    if let Ok(runs) = state.runs.lock() {
        for record in runs.values() {
            if matches!(record.state, "booting" | "running") {
                record.cancel.notify_one();
            }
        }
    }
}

pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let runs = state.runs.lock().map_err(|_| poisoned())?;
    runs.get(&id)
        .map(|r| Json(r.json()))
        .ok_or_else(|| ApiError::not_found(format!("no run `{id}`")))
}

pub(crate) async fn cancel(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let runs = state.runs.lock().map_err(|_| poisoned())?;
    let record = runs
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("no run `{id}`")))?;
    if matches!(record.state, "booting" | "running") {
        record.cancel.notify_one();
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({"id": id, "state": "cancelling"})),
        )
            .into_response());
    }
    Ok(Json(record.json()).into_response())
}

/// The harness client and session of a live run, or 404/409.
fn live(state: &AppState, id: &str) -> Result<(HarnessClient, String), ApiError> {
    let runs = state.runs.lock().map_err(|_| poisoned())?;
    let record = runs
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("no run `{id}`")))?;
    record.live.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "RUN_NOT_LIVE",
            format!(
                "run `{id}` is {}: its sandbox is gone (or not booted yet)",
                record.state
            ),
        )
    })
}

/// `?path=`.
#[derive(Debug, Deserialize)]
pub(crate) struct PathQuery {
    pub(crate) path: Option<String>,
}

pub(crate) async fn file(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<PathQuery>,
) -> Result<Response, ApiError> {
    let (client, session) = live(&state, &id)?;
    read_file(&client, &session, query.path).await
}

pub(crate) async fn tree(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (client, session) = live(&state, &id)?;
    list_tree(&client, &session).await
}

/// A workdir file as the response body.
pub(crate) async fn read_file(
    client: &HarnessClient,
    session: &str,
    path: Option<String>,
) -> Result<Response, ApiError> {
    let path = path.ok_or_else(|| ApiError::validation("`?path=` is missing"))?;
    let bytes = client
        .read_file(session, &path)
        .await
        .map_err(|e| ApiError::from_core(&e))?;
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from(bytes),
    )
        .into_response())
}

/// Every entry of a workdir.
pub(crate) async fn list_tree(
    client: &HarnessClient,
    session: &str,
) -> Result<Json<Value>, ApiError> {
    let tree = client
        .tree(session, ".", 0)
        .await
        .map_err(|e| ApiError::from_core(&e))?;
    Ok(Json(serde_json::to_value(tree).unwrap_or(Value::Null)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // test code

    use super::*;

    /// The patch of a run that edits an input file reads the input's old side, which needs the
    /// input directory to outlive the staging; and `git apply` recreates what the run did.
    #[test]
    fn a_runs_patch_edits_its_input_files_and_carries_binaries() {
        let files = [InlineFile {
            path: "brief.txt".into(),
            content: "the brief\n".into(),
        }];
        let (copy, _input) = input_baseline(&files).unwrap();
        let after = tempfile::tempdir().unwrap();
        std::fs::write(after.path().join("brief.txt"), "the brief, edited\n").unwrap();
        std::fs::write(after.path().join("out.bin"), [0u8, 1, 2, 0, 255]).unwrap();
        let now = changeset::Snapshot::scan(after.path(), &changeset::Options::default()).unwrap();
        let patch = changeset::ChangeSet::between(copy.baseline(), &now)
            .render(changeset::DiffFormat::Git)
            .unwrap();
        assert!(patch.stale.is_empty(), "{}", patch.text);
        assert!(
            patch.text.contains("-the brief\n+the brief, edited\n"),
            "{}",
            patch.text
        );
        let target = tempfile::tempdir().unwrap();
        std::fs::write(target.path().join("brief.txt"), "the brief\n").unwrap();
        let file = target.path().join("run.patch");
        std::fs::write(&file, &patch.text).unwrap();
        let out = std::process::Command::new("git")
            .args(["apply", "run.patch"])
            .current_dir(target.path())
            .output()
            .expect("git is installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::read(target.path().join("brief.txt")).unwrap(),
            b"the brief, edited\n"
        );
        assert_eq!(
            std::fs::read(target.path().join("out.bin")).unwrap(),
            [0u8, 1, 2, 0, 255]
        );
    }
}
