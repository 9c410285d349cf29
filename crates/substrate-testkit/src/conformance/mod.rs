//! Black-box conformance cases for harness protocol v1, run against a harness booted by any
//! substrate.
//!
//! A runtime's test file provides one async function that boots a harness and returns a
//! [`Ctx`], then expands [`conformance_suite!`](crate::conformance_suite) with it: one test per
//! case, each on a fresh harness, each ending with a health check (nothing may crash the
//! harness) and a shutdown.

pub mod cases;

use std::collections::BTreeMap;

use anyhow::{Context, anyhow, bail, ensure};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;
use substrate_core::protocol::{CreateSession, ENGINE_CLAUDE_AGENT_SDK, Event};
use substrate_core::{BootedHarness, Endpoint, HarnessClient};

use crate::model::ScriptedModel;

/// Engine environment that points the real Claude Code CLI at a scripted model and keeps it
/// from any other traffic.
pub fn scripted_engine_envs(model_base_url: &str) -> BTreeMap<String, String> {
    [
        ("ANTHROPIC_BASE_URL", model_base_url),
        ("ANTHROPIC_API_KEY", "sk-ant-scripted-model"),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
        ("DISABLE_TELEMETRY", "1"),
        ("DISABLE_AUTOUPDATER", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A boot spec whose engine reaches the scripted model at `model_base_url` with a key given
/// at boot, as a real run passes the real key: the runtime brokers it, so the sandbox holds a
/// placeholder and the key never enters. Sessions then need no envs of their own.
pub fn scripted_boot_spec(label: &str, model_base_url: &str) -> substrate_core::BootSpec {
    scripted_engine_envs(model_base_url)
        .into_iter()
        .fold(substrate_core::BootSpec::new(label), |spec, (k, v)| {
            spec.env(k, v)
        })
}

/// One harness under test, with the scripted model its engine talks to.
#[derive(Debug)]
pub struct Ctx {
    /// The booted harness.
    pub harness: BootedHarness,
    /// A client with the right token.
    pub client: HarnessClient,
    /// Raw HTTP, for requests the typed client refuses to make.
    pub raw: RawHttp,
    /// The scripted model.
    pub model: ScriptedModel,
    /// Engine envs every session of the suite uses (how the engine reaches the model).
    pub engine_envs: BTreeMap<String, String>,
}

impl Ctx {
    /// Wraps a booted harness.
    pub fn new(
        harness: BootedHarness,
        model: ScriptedModel,
        engine_envs: BTreeMap<String, String>,
    ) -> anyhow::Result<Self> {
        let client = harness.client()?;
        let raw = RawHttp::new(harness.endpoint(), harness.token().expose())?;
        Ok(Self {
            harness,
            client,
            raw,
            model,
            engine_envs,
        })
    }

    /// A session request for the Claude Agent SDK engine wired to the scripted model.
    pub fn session_request(&self) -> CreateSession {
        let mut req = CreateSession::new(ENGINE_CLAUDE_AGENT_SDK);
        req.envs = self.engine_envs.clone();
        req
    }

    /// Health check, then shutdown; the result of the health check.
    pub async fn finish(self) -> anyhow::Result<()> {
        let health = self
            .client
            .health()
            .await
            .context("the harness must survive every case");
        let shutdown = self.harness.shutdown().await.context("shutdown");
        health?;
        shutdown?;
        Ok(())
    }
}

/// Raw HTTP to the harness: bodies and headers the typed client would never send.
#[derive(Debug, Clone)]
pub struct RawHttp {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl RawHttp {
    /// Raw access to the harness at `endpoint`.
    pub fn new(endpoint: &Endpoint, token: &str) -> anyhow::Result<Self> {
        let builder = reqwest::Client::builder().no_proxy();
        let (builder, base) = match endpoint {
            Endpoint::Tcp(url) => (builder, url.trim_end_matches('/').to_owned()),
            Endpoint::Unix(path) => (
                builder.unix_socket(path.as_path()),
                String::from("http://harness"),
            ),
            other => bail!("unsupported endpoint {other}"),
        };
        Ok(Self {
            http: builder.build()?,
            base,
            token: token.to_owned(),
        })
    }

    /// A request with the right token.
    pub fn authed(&self, method: Method, path: &str) -> RequestBuilder {
        self.unauthed(method, path).bearer_auth(&self.token)
    }

    /// A request without any token.
    pub fn unauthed(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }
}

/// Sends `req` and checks that the answer is the error envelope with `status` and `code`;
/// returns the envelope's `error` object.
pub async fn expect_error(
    req: RequestBuilder,
    status: StatusCode,
    code: &str,
) -> anyhow::Result<Value> {
    let resp = req.send().await?;
    let got = resp.status();
    let body = resp.text().await?;
    ensure!(got == status, "expected {status} {code}, got {got}: {body}");
    let value: Value =
        serde_json::from_str(&body).with_context(|| format!("error body is not JSON: {body}"))?;
    let error = value
        .get("error")
        .ok_or_else(|| anyhow!("no `error` in {body}"))?;
    ensure!(error["code"] == code, "expected code {code}, got {body}");
    ensure!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error without a message: {body}"
    );
    Ok(error.clone())
}

/// Checks the protocol's ordering rules over a whole session's events.
pub fn check_event_order(events: &[Event]) -> anyhow::Result<()> {
    ensure!(!events.is_empty(), "no events");
    for (i, e) in events.iter().enumerate() {
        ensure!(
            e.id == i as u64,
            "event {i} has id {} (ids must be 0, 1, 2, …)",
            e.id
        );
    }
    ensure!(
        events[0].type_name() == "ca_session_started",
        "first event is {}",
        events[0].type_name()
    );
    let last = &events[events.len() - 1];
    ensure!(last.is_session_end(), "last event is {}", last.type_name());
    ensure!(
        events.iter().filter(|e| e.is_session_end()).count() == 1,
        "ca_session_ended more than once"
    );
    Ok(())
}

/// Expands to one `#[tokio::test]` per conformance case, each booting with `$boot` (an
/// `async fn() -> anyhow::Result<Ctx>`).
#[macro_export]
macro_rules! conformance_suite {
    ($boot:path) => {
        $crate::conformance_suite!(@cases $boot;
            health_is_public_and_lists_the_engine,
            missing_token_is_401,
            wrong_token_is_401,
            malformed_json_is_400_validation,
            missing_engine_is_400_validation,
            unknown_engine_is_400_with_available_list,
            oversized_json_body_is_413,
            unknown_session_is_404,
            unknown_route_is_404_and_wrong_method_405,
            session_lifecycle_create_get_delete,
            client_chosen_session_id_and_conflict,
            invalid_session_id_is_400,
            events_are_ordered_with_contiguous_ids,
            resume_with_last_event_id_replays_only_later_events,
            two_subscribers_see_the_same_events,
            one_shot_chat_streams_and_deletes_the_session,
            one_shot_chat_keep_leaves_files_readable,
            multi_turn_streaming_input,
            cancel_mid_turn_ends_cancelled,
            permission_deny_reaches_the_engine,
            permission_modify_replaces_the_input,
            input_after_end_is_409,
            fs_put_get_round_trip_binary_and_mode,
            fs_tree_lists_sorted_with_depth,
            fs_delete_file_and_directory,
            fs_edit_replaces_exactly,
            fs_mkdir_and_move,
            fs_missing_and_wrong_kind,
            hostile_paths_are_path_escape,
            symlinks_out_of_the_workdir_are_path_escape,
            inline_source_and_attachments_are_materialised,
            escaping_attachment_refuses_the_session
        );
    };
    (@cases $boot:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let ctx = $boot().await.expect("boot the harness under test");
                let outcome = $crate::conformance::cases::$case(&ctx).await;
                let finish = ctx.finish().await;
                outcome.expect(concat!("conformance case ", stringify!($case)));
                finish.expect("health after the case, then shutdown");
            }
        )*
    };
}
