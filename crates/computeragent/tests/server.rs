//! The server over real HTTP with real bwrap sandboxes and the scripted model: every route's
//! answers and errors, auth, admission under load (never more boots than the cap, every
//! sandbox disposed), warm sandboxes with snapshot and restore, TTLs, and graceful shutdown.
#![cfg(target_os = "linux")]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use computeragent::server::{Group, Server, ServerConfig, SubstrateProvider};
use serde_json::{Value, json};
use substrate_core::client::SseParser;
use substrate_core::{BootSpec, BootedHarness, Capabilities, Substrate, SubstrateKind, Teardown};
use substrate_testkit::conformance::scripted_engine_envs;
use substrate_testkit::model::{Reply, Script, ScriptedModel};

const TOKEN: &str = "server-test-token";

/// Counts live sandboxes and the most alive at once.
#[derive(Debug, Default)]
struct Counter {
    live: AtomicUsize,
    most: AtomicUsize,
    boots: AtomicUsize,
}

/// A bwrap substrate under a private base directory that counts its sandboxes.
#[derive(Debug)]
struct Counted {
    inner: runtime_bwrap::BwrapSubstrate,
    counter: Arc<Counter>,
}

#[derive(Debug)]
struct CountedTeardown {
    inner: Option<BootedHarness>,
    counter: Arc<Counter>,
}

#[async_trait]
impl Teardown for CountedTeardown {
    async fn shutdown(&mut self) -> substrate_core::Result<()> {
        if let Some(inner) = &self.inner {
            inner.shutdown().await?;
            self.inner = None;
            self.counter.live.fetch_sub(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

#[async_trait]
impl Substrate for Counted {
    fn kind(&self) -> SubstrateKind {
        self.inner.kind()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn spawn_command(
        &self,
        spec: &BootSpec,
        argv: Vec<std::ffi::OsString>,
    ) -> substrate_core::Result<Box<dyn substrate_core::SandboxProcess>> {
        self.inner.spawn_command(spec, argv).await
    }

    async fn boot_harness(&self, spec: BootSpec) -> substrate_core::Result<BootedHarness> {
        let live = self.counter.live.fetch_add(1, Ordering::SeqCst) + 1;
        self.counter.most.fetch_max(live, Ordering::SeqCst);
        self.counter.boots.fetch_add(1, Ordering::SeqCst);
        match self.inner.boot_harness(spec).await {
            Ok(inner) => Ok(BootedHarness::new(
                inner.kind(),
                inner.endpoint().clone(),
                inner.token().clone(),
                Box::new(CountedTeardown {
                    inner: Some(inner),
                    counter: self.counter.clone(),
                }),
            )),
            Err(e) => {
                self.counter.live.fetch_sub(1, Ordering::SeqCst);
                Err(e)
            }
        }
    }
}

struct Provider(Arc<Counted>);

#[async_trait]
impl SubstrateProvider for Provider {
    async fn substrate(&self, _group: &Group) -> substrate_core::Result<Arc<dyn Substrate>> {
        Ok(self.0.clone())
    }
}

struct Harness {
    url: String,
    counter: Arc<Counter>,
    base: tempfile::TempDir,
    model: ScriptedModel,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<substrate_core::Result<()>>>,
    http: reqwest::Client,
}

impl Harness {
    async fn start(script: Script, extra_toml: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let model = ScriptedModel::start(script).await.unwrap();
        let base = tempfile::tempdir().unwrap();
        std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let modules = substrate_testkit::stage::ensure_staged().unwrap();
        let counter = Arc::new(Counter::default());
        let counted = Arc::new(Counted {
            inner: runtime_bwrap::BwrapSubstrate::new(modules).base_dir(base.path().join("boots")),
            counter: counter.clone(),
        });
        let env: String = scripted_engine_envs(&model.base_url())
            .into_iter()
            .map(|(k, v)| format!("{k} = {v:?}\n"))
            .collect();
        let config = ServerConfig::from_toml(&format!(
            "tokens = [\"{TOKEN}\"]\nmax_concurrent_runs = 4\nmax_body_bytes = 65536\n\
             shutdown_grace_secs = 20\n{extra_toml}\n[engine_env]\n{env}"
        ))
        .unwrap();
        let server = Server::new(config, Arc::new(Provider(counted)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(async move {
            server
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await
        });
        Self {
            url,
            counter,
            base,
            model,
            stop: Some(stop),
            served: Some(served),
            http: reqwest::Client::new(),
        }
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
    }

    fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .delete(format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
    }

    fn boots_left(&self) -> Vec<PathBuf> {
        boots_left(self.base.path())
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            served.await.unwrap().unwrap();
        }
        assert_eq!(
            self.counter.live.load(Ordering::SeqCst),
            0,
            "sandboxes left"
        );
        assert!(self.boots_left().is_empty(), "{:?}", self.boots_left());
    }
}

fn boots_left(base: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(base.join("boots"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// The SSE frames of a response, as (event, JSON data).
async fn frames(response: reqwest::Response) -> Vec<(String, Value)> {
    let body = response.bytes().await.unwrap();
    SseParser::new()
        .feed(&body)
        .into_iter()
        .filter(|f| !f.data.is_empty())
        .map(|f| {
            (
                f.event.unwrap_or_default(),
                serde_json::from_str(&f.data).unwrap_or(Value::Null),
            )
        })
        .collect()
}

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

fn write_script() -> Script {
    Script::new()
        .reply(Reply::tool_use(
            "Bash",
            json!({"command": "cat brief.txt > out.md; echo done >> out.md"}),
        ))
        .reply(Reply::text("Wrote out.md."))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_streams_its_events_and_its_record_stays() {
    let h = Harness::start(write_script(), "").await;
    let response = h
        .post("/v1/runs")
        .json(&json!({"prompt": "Write it", "files": [{"path": "brief.txt", "content": "the brief\n"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-run-id"].to_str().unwrap().to_owned();
    let frames = frames(response).await;
    let names: Vec<&str> = frames.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"run"), "{names:?}");
    assert!(names.contains(&"sdk_message"), "{names:?}");
    assert!(names.contains(&"ca_turn_started"), "{names:?}");
    let (last, done) = frames.last().unwrap();
    assert_eq!(last, "done", "{frames:?}");
    assert_eq!(done["state"], "done");
    assert_eq!(done["result"], "Wrote out.md.");
    assert_eq!(done["reason"], "complete");
    let record: Value = h
        .get(&format!("/v1/runs/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(record["state"], "done");
    assert_eq!(record["runtime"], "bwrap");
    // What the run changed against its input files: out.md is new, the brief untouched.
    assert_eq!(
        done["changes"],
        json!([{"path": "out.md", "summary": "A out.md"}]),
        "{done}"
    );
    assert_eq!(record["changes"], done["changes"]);
    let patch = h
        .get(&format!("/v1/runs/{id}/changes?format=patch"))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 200);
    let patch = patch.text().await.unwrap();
    assert!(
        patch.contains("+++ b/out.md") && patch.contains("+the brief") && patch.contains("+done"),
        "{patch}"
    );
    let (status, code) = error_code(
        h.get(&format!("/v1/runs/{id}/changes?format=tar"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "VALIDATION"));
    // The sandbox is gone with the run: its files are no longer there to read.
    let (status, code) = error_code(
        h.get(&format!("/v1/runs/{id}/files?path=out.md"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (409, "RUN_NOT_LIVE"));
    let (status, code) = error_code(h.get("/v1/runs/run_nope").send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (404, "NOT_FOUND"));
    assert!(
        h.model.unexpected().is_empty(),
        "{:?}",
        h.model.unexpected()
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_get_stable_codes_and_auth_guards_all_but_health() {
    let h = Harness::start(
        write_script(),
        "[groups.restricted]\nenv_allow = [\"GITHUB_TOKEN\"]",
    )
    .await;
    let health: Value = h
        .http
        .get(format!("{}/health", h.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["ok"], true);
    let bare = h
        .http
        .post(format!("{}/v1/runs", h.url))
        .json(&json!({"prompt": "x"}));
    assert_eq!(
        error_code(bare.send().await.unwrap()).await,
        (401, "UNAUTHORIZED".into())
    );
    let wrong = h
        .http
        .get(format!("{}/v1/sandboxes", h.url))
        .bearer_auth("not-the-token");
    assert_eq!(
        error_code(wrong.send().await.unwrap()).await,
        (401, "UNAUTHORIZED".into())
    );
    let cases = [
        (
            h.post("/v1/runs")
                .header("content-type", "application/json")
                .body("{not json"),
            400,
            "VALIDATION",
        ),
        (
            h.post("/v1/runs").json(&json!({"prompt": "  "})),
            400,
            "VALIDATION",
        ),
        (
            h.post("/v1/runs")
                .json(&json!({"prompt": "x", "colour": 1})),
            400,
            "VALIDATION",
        ),
        (
            h.post("/v1/runs")
                .json(&json!({"prompt": "x", "group": "vip"})),
            400,
            "UNKNOWN_GROUP",
        ),
        (
            h.post("/v1/runs")
                .json(&json!({"prompt": "x", "group": "restricted", "envs": {"AWS_SECRET": "s"}})),
            400,
            "ENV_NOT_ALLOWED",
        ),
        (
            h.post("/v1/runs")
                .json(&json!({"prompt": "x".repeat(70_000)})),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        (h.get("/v1/nowhere"), 404, "NOT_FOUND"),
        (h.delete("/v1/sandboxes/sbx_nope"), 404, "NOT_FOUND"),
        (
            h.post("/v1/sandboxes/sbx_nope/chat")
                .json(&json!({"message": "hi"})),
            404,
            "NOT_FOUND",
        ),
    ];
    for (request, status, code) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{code}");
        if !code.is_empty() {
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], code, "{body}");
        }
    }
    assert_eq!(
        h.counter.boots.load(Ordering::SeqCst),
        0,
        "a bad request booted a sandbox"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_run_stops_and_its_files_were_readable_while_it_ran() {
    let script = Script::new()
        .reply(Reply::tool_use(
            "Bash",
            json!({"command": "echo started > started.txt; sleep 60"}),
        ))
        .reply(Reply::text("never"));
    let h = Harness::start(script, "").await;
    let response = h
        .post("/v1/runs")
        .json(&json!({"prompt": "wait"}))
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-run-id"].to_str().unwrap().to_owned();
    let reader = tokio::spawn(frames(response));
    // Wait until the tool runs, reading its file through the live run.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = h
            .get(&format!("/v1/runs/{id}/files?path=started.txt"))
            .send()
            .await
            .unwrap();
        // The file may be read between its creation and the echo's write.
        if r.status() == 200 && r.text().await.unwrap() == "started\n" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the tool never started"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let tree: Value = h
        .get(&format!("/v1/runs/{id}/tree"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        tree["entries"].to_string().contains("started.txt"),
        "{tree}"
    );
    let cancelled = h.delete(&format!("/v1/runs/{id}")).send().await.unwrap();
    assert_eq!(cancelled.status(), 202);
    let frames = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .unwrap()
        .unwrap();
    let (last, done) = frames.last().unwrap();
    assert_eq!(last, "done", "{frames:?}");
    assert_eq!(done["state"], "cancelled");
    let record: Value = h
        .get(&format!("/v1/runs/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(record["state"], "cancelled");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_requests_with_a_cap_of_four() {
    let h = Harness::start(write_script(), "").await;
    let h = Arc::new(h);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let response = h
                .post("/v1/runs")
                .json(&json!({"prompt": format!("run {i}"), "files": [{"path": "brief.txt", "content": "b\n"}]}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            if status == 429 {
                let retry = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"]["code"], "AT_CAPACITY");
                assert_eq!(retry.as_deref(), Some("5"));
                (429, None)
            } else {
                let frames = frames(response).await;
                (status, frames.last().map(|(n, d)| (n.clone(), d["state"].clone())))
            }
        }));
    }
    let mut ran = 0;
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            (429, _) => refused += 1,
            (200, Some((last, state))) => {
                assert_eq!((last.as_str(), state), ("done", json!("done")));
                ran += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(ran + refused, 200);
    assert!(ran >= 4, "only {ran} ran");
    assert!(refused > 0, "nothing was refused");
    let most = h.counter.most.load(Ordering::SeqCst);
    assert!(most <= 4, "{most} sandboxes were alive at once");
    assert_eq!(h.counter.boots.load(Ordering::SeqCst), ran);
    let h = Arc::into_inner(h).unwrap();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn warm_sandboxes_chat_snapshot_restore_and_expire() {
    let h = Harness::start(write_script(), "[groups.brief]\nidle_ttl_secs = 2").await;
    let created = h
        .post("/v1/sandboxes")
        .json(&json!({"files": [{"path": "brief.txt", "content": "warm\n"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let first: Value = created.json().await.unwrap();
    let id = first["id"].as_str().unwrap().to_owned();
    let chat = h
        .post(&format!("/v1/sandboxes/{id}/chat"))
        .json(&json!({"message": "go"}))
        .send()
        .await
        .unwrap();
    let frames = frames(chat).await;
    let (last, done) = frames.last().unwrap();
    assert_eq!(last, "done", "{frames:?}");
    assert_eq!(done["result"], "Wrote out.md.");
    let out = h
        .get(&format!("/v1/sandboxes/{id}/files?path=out.md"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.text().await.unwrap(), "warm\ndone\n");
    // The terminal route answers in the API's terms before any upgrade.
    let (status, code) = error_code(
        h.get("/v1/sandboxes/sbx_nope/terminal")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (404, "NOT_FOUND"));
    let (status, code) = error_code(
        h.get(&format!("/v1/sandboxes/{id}/terminal?command=sh"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "VALIDATION"));
    let (status, code) = error_code(
        h.get(&format!("/v1/sandboxes/{id}/terminal"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (426, "UPGRADE_REQUIRED"));
    // This test's substrate wraps bwrap's boots without their terminals: a real handshake
    // gets a clear refusal.
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "{}/v1/sandboxes/{id}/terminal",
            h.url.replacen("http://", "ws://", 1)
        ))
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 409);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned();
            assert!(body.contains("NO_TERMINALS"), "{body}");
        }
        other => panic!("expected a 409, got {other:?}"),
    }
    let snapshot = h
        .get(&format!("/v1/sandboxes/{id}/snapshot"))
        .send()
        .await
        .unwrap();
    assert_eq!(snapshot.headers()["content-type"], "application/gzip");
    let archive = snapshot.bytes().await.unwrap();

    let second: Value = h
        .post("/v1/sandboxes")
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let second_id = second["id"].as_str().unwrap().to_owned();
    let restored: Value = h
        .post(&format!("/v1/sandboxes/{second_id}/restore"))
        .body(archive.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(restored["restored"], 2, "{restored}");
    let out = h
        .get(&format!("/v1/sandboxes/{second_id}/files?path=out.md"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.text().await.unwrap(), "warm\ndone\n");
    // A snapshot with a path out of the workdir is refused whole.
    let (status, code) = error_code(
        h.post(&format!("/v1/sandboxes/{second_id}/restore"))
            .body(evil_archive())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "VALIDATION"));
    let listed: Value = h
        .get("/v1/sandboxes")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["sandboxes"].as_array().unwrap().len(), 2);
    for sandbox in [&id, &second_id] {
        let gone = h
            .delete(&format!("/v1/sandboxes/{sandbox}"))
            .send()
            .await
            .unwrap();
        assert_eq!(gone.status(), 200);
    }
    assert_eq!(h.counter.live.load(Ordering::SeqCst), 0);

    // The idle TTL disposes of a sandbox nobody uses.
    let brief: Value = h
        .post("/v1/sandboxes")
        .json(&json!({"group": "brief"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let brief_id = brief["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = h
            .get(&format!("/v1/sandboxes/{brief_id}"))
            .send()
            .await
            .unwrap()
            .status();
        if status == 404 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the idle sandbox was kept"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The reaper takes it out of the table first, then disposes of it.
    while h.counter.live.load(Ordering::SeqCst) != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the expired sandbox was never disposed of"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.stop().await;
}

fn evil_archive() -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(4);
    header.set_mode(0o644);
    // `append_data` refuses `..`; write the name into the header directly.
    header.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"../escape.txt");
    header.set_cksum();
    tar.append(&header, &b"evil"[..]).unwrap();
    tar.into_inner().unwrap().finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_lets_a_run_finish_and_disposes_of_every_sandbox() {
    let script = Script::new()
        .reply(Reply::tool_use(
            "Bash",
            json!({"command": "sleep 2; echo slept"}),
        ))
        .reply(Reply::text("Finished after the signal."));
    let mut h = Harness::start(script, "").await;
    let warm = h
        .post("/v1/sandboxes")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(warm.status(), 201);
    let response = h
        .post("/v1/runs")
        .json(&json!({"prompt": "slow"}))
        .send()
        .await
        .unwrap();
    let reader = tokio::spawn(frames(response));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = h.stop.take().unwrap().send(());
    let frames = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .unwrap()
        .unwrap();
    let (last, done) = frames.last().unwrap();
    assert_eq!(last, "done", "{frames:?}");
    assert_eq!(done["result"], "Finished after the signal.");
    // No new work once shutting down: the listener is closed, or the answer is 503.
    match h
        .post("/v1/runs")
        .json(&json!({"prompt": "late"}))
        .send()
        .await
    {
        Err(_) => {}
        Ok(late) => assert_eq!(late.status(), 503),
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exec_streams_a_command_and_its_exit() {
    let h = Harness::start(Script::new(), "").await;
    let response = h
        .post("/v1/exec")
        .json(&json!({"command": ["sh", "-c", "echo out; echo err >&2; id -un; exit 4"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let frames = frames(response).await;
    let text = |name: &str| -> String {
        frames
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, d)| d["text"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(text("stdout"), "out\nagent\n");
    assert!(text("stderr").contains("err"), "{frames:?}");
    let (last, exit) = frames.last().unwrap();
    assert_eq!(last, "exit");
    assert_eq!(exit["code"], 4);
    assert_eq!(exit["success"], false);
    let deadline = h
        .post("/v1/exec")
        .json(&json!({"command": ["sleep", "30"], "timeoutSecs": 1}))
        .send()
        .await
        .unwrap();
    let ended = self::frames(deadline).await;
    let (_, exit) = ended.last().unwrap();
    assert!(
        exit["reason"].as_str().unwrap().contains("deadline"),
        "{exit}"
    );
    let (status, code) = error_code(
        h.post("/v1/exec")
            .json(&json!({"command": []}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "VALIDATION"));
    h.stop().await;
}
