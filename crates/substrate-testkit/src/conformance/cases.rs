//! The conformance cases. Each takes a fresh [`Ctx`] and returns an error describing the first
//! thing that did not behave as protocol v1 says.
//! Case names say what they check, so they carry no further doc comment.
#![allow(missing_docs)]

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use substrate_core::Error;
use substrate_core::client::{ChatSession, permission_fn};
use substrate_core::protocol::{
    ChatRequest, Decision, EditRequest, EndReason, EntryType, EventKind, FileSpec,
    PermissionDecision, SessionState, SourceSpec,
};

use super::{Ctx, check_event_order, expect_error};
use crate::model::{Reply, Script};

type Outcome = anyhow::Result<()>;

fn protocol_code(err: &Error) -> Option<&str> {
    err.protocol_code()
}

fn ensure_code<T: std::fmt::Debug>(result: substrate_core::Result<T>, code: &str) -> Outcome {
    match result {
        Err(e) if protocol_code(&e) == Some(code) => Ok(()),
        other => bail!("expected protocol error {code}, got {other:?}"),
    }
}

/// A created session id with no engine started.
async fn new_session(ctx: &Ctx) -> anyhow::Result<String> {
    Ok(ctx
        .client
        .create_session(&ctx.session_request())
        .await?
        .session_id)
}

pub async fn health_is_public_and_lists_the_engine(ctx: &Ctx) -> Outcome {
    let resp = ctx.raw.unauthed(Method::GET, "/v1/health").send().await?;
    ensure!(
        resp.status() == StatusCode::OK,
        "health without a token: {}",
        resp.status()
    );
    let body: Value = resp.json().await?;
    ensure!(body["ok"] == true, "{body}");
    ensure!(body["protocol"] == 1, "{body}");
    ensure!(
        body["version"].as_str().is_some_and(|v| !v.is_empty()),
        "{body}"
    );
    let engine = &body["engines"]["claude-agent-sdk"];
    for cap in [
        "streamingInput",
        "partialMessages",
        "permissionCallback",
        "sessions",
        "budget",
    ] {
        ensure!(
            engine[cap].is_boolean(),
            "engine capability {cap} missing: {body}"
        );
    }
    Ok(())
}

pub async fn missing_token_is_401(ctx: &Ctx) -> Outcome {
    let body = serde_json::to_vec(&ctx.session_request())?;
    expect_error(
        ctx.raw.unauthed(Method::POST, "/v1/sessions").body(body),
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
    )
    .await?;
    expect_error(
        ctx.raw.unauthed(Method::GET, "/v1/sessions/sess_x/events"),
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
    )
    .await?;
    Ok(())
}

pub async fn wrong_token_is_401(ctx: &Ctx) -> Outcome {
    let id = new_session(ctx).await?;
    for token in ["wrong", "", &format!("{}x", ctx.harness.token().expose())] {
        expect_error(
            ctx.raw
                .unauthed(Method::GET, &format!("/v1/sessions/{id}"))
                .bearer_auth(token),
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
        )
        .await?;
    }
    // Not a bearer scheme at all.
    expect_error(
        ctx.raw
            .unauthed(Method::GET, &format!("/v1/sessions/{id}"))
            .header(
                "authorization",
                format!("Basic {}", ctx.harness.token().expose()),
            ),
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
    )
    .await?;
    Ok(())
}

pub async fn malformed_json_is_400_validation(ctx: &Ctx) -> Outcome {
    for body in ["{", "not json", "[]", "\"engine\"", "{\"engine\": 3}"] {
        expect_error(
            ctx.raw
                .authed(Method::POST, "/v1/sessions")
                .header("content-type", "application/json")
                .body(body),
            StatusCode::BAD_REQUEST,
            "VALIDATION",
        )
        .await
        .with_context(|| format!("body {body:?}"))?;
    }
    let id = new_session(ctx).await?;
    expect_error(
        ctx.raw
            .authed(Method::POST, &format!("/v1/sessions/{id}/messages"))
            .body("{\"message\": 5}"),
        StatusCode::BAD_REQUEST,
        "VALIDATION",
    )
    .await?;
    expect_error(
        ctx.raw
            .authed(Method::POST, &format!("/v1/sessions/{id}/permission/c1"))
            .body("{\"decision\": \"perhaps\"}"),
        StatusCode::BAD_REQUEST,
        "VALIDATION",
    )
    .await?;
    Ok(())
}

pub async fn missing_engine_is_400_validation(ctx: &Ctx) -> Outcome {
    let err = expect_error(
        ctx.raw.authed(Method::POST, "/v1/sessions").body("{}"),
        StatusCode::BAD_REQUEST,
        "VALIDATION",
    )
    .await?;
    ensure!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("engine")),
        "the message must name the missing field: {err}"
    );
    Ok(())
}

pub async fn unknown_engine_is_400_with_available_list(ctx: &Ctx) -> Outcome {
    let err = expect_error(
        ctx.raw
            .authed(Method::POST, "/v1/sessions")
            .body("{\"engine\": \"no-such-engine\"}"),
        StatusCode::BAD_REQUEST,
        "UNKNOWN_ENGINE",
    )
    .await?;
    let available = err["details"]["available"]
        .as_array()
        .context("details.available")?;
    ensure!(available.iter().any(|e| e == "claude-agent-sdk"), "{err}");
    Ok(())
}

pub async fn oversized_json_body_is_413(ctx: &Ctx) -> Outcome {
    let big = format!(
        "{{\"engine\": \"claude-agent-sdk\", \"identity\": \"{}\"}}",
        "x".repeat(9 << 20)
    );
    expect_error(
        ctx.raw.authed(Method::POST, "/v1/sessions").body(big),
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
    )
    .await?;
    Ok(())
}

pub async fn unknown_session_is_404(ctx: &Ctx) -> Outcome {
    let id = "sess_doesnotexist";
    ensure_code(ctx.client.session(id).await, "NOT_FOUND")?;
    ensure_code(ctx.client.send_message(id, "hi").await, "NOT_FOUND")?;
    ensure_code(ctx.client.events(id, None).await.map(|_| ()), "NOT_FOUND")?;
    ensure_code(ctx.client.read_file(id, "a.txt").await, "NOT_FOUND")?;
    ensure_code(ctx.client.cancel(id).await, "NOT_FOUND")?;
    ensure_code(ctx.client.delete_session(id).await, "NOT_FOUND")?;
    Ok(())
}

pub async fn unknown_route_is_404_and_wrong_method_405(ctx: &Ctx) -> Outcome {
    expect_error(
        ctx.raw.authed(Method::GET, "/v1/nope"),
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    )
    .await?;
    expect_error(
        ctx.raw.authed(Method::GET, "/v2/health"),
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    )
    .await?;
    expect_error(
        ctx.raw.authed(Method::PATCH, "/v1/sessions"),
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
    )
    .await?;
    Ok(())
}

pub async fn session_lifecycle_create_get_delete(ctx: &Ctx) -> Outcome {
    let mut req = ctx.session_request();
    req.identity = Some(json!({"user": "u1"}));
    let created = ctx.client.create_session(&req).await?;
    ensure!(created.session_id.starts_with("sess_"), "{created:?}");
    ensure!(
        created.events_url == format!("/v1/sessions/{}/events", created.session_id),
        "{created:?}"
    );
    ensure!(created.capabilities.streaming_input, "{created:?}");
    let info = ctx.client.session(&created.session_id).await?;
    ensure!(info.state == SessionState::Created, "{info:?}");
    ensure!(info.identity == Some(json!({"user": "u1"})), "{info:?}");
    ensure!(info.turns == 0 && info.end_reason.is_none(), "{info:?}");
    ctx.client
        .write_file(&created.session_id, "f.txt", "x", None)
        .await?;
    ctx.client.delete_session(&created.session_id).await?;
    ensure_code(ctx.client.session(&created.session_id).await, "NOT_FOUND")?;
    ensure_code(
        ctx.client.read_file(&created.session_id, "f.txt").await,
        "NOT_FOUND",
    )?;
    Ok(())
}

pub async fn client_chosen_session_id_and_conflict(ctx: &Ctx) -> Outcome {
    let mut req = ctx.session_request();
    req.session_id = Some(String::from("sess_chosen-1"));
    let created = ctx.client.create_session(&req).await?;
    ensure!(created.session_id == "sess_chosen-1", "{created:?}");
    ensure_code(ctx.client.create_session(&req).await, "CONFLICT")?;
    Ok(())
}

pub async fn invalid_session_id_is_400(ctx: &Ctx) -> Outcome {
    for bad in [
        "nope",
        "sess_",
        "sess_a/b",
        "sess_../x",
        &format!("sess_{}", "a".repeat(65)),
    ] {
        let body = json!({"engine": "claude-agent-sdk", "sessionId": bad});
        expect_error(
            ctx.raw.authed(Method::POST, "/v1/sessions").json(&body),
            StatusCode::BAD_REQUEST,
            "VALIDATION",
        )
        .await
        .with_context(|| format!("session id {bad:?}"))?;
    }
    Ok(())
}

/// Runs one text-only turn to the session's end and returns every event.
async fn run_text_session(
    ctx: &Ctx,
    text: &str,
) -> anyhow::Result<(String, Vec<substrate_core::protocol::Event>)> {
    ctx.model.set_script(Script::new().reply(Reply::text(text)));
    let mut req = ctx.session_request();
    req.messages.push("say the line".into());
    req.streaming_input = Some(false);
    let id = ctx.client.create_session(&req).await?.session_id;
    let events = ctx.client.events(&id, None).await?.collect_all().await?;
    Ok((id, events))
}

pub async fn events_are_ordered_with_contiguous_ids(ctx: &Ctx) -> Outcome {
    let (id, events) = run_text_session(ctx, "ordered reply").await?;
    check_event_order(&events)?;
    let names: Vec<&str> = events.iter().map(|e| e.type_name()).collect();
    let turn = names
        .iter()
        .position(|n| *n == "ca_turn_started")
        .context("no ca_turn_started")?;
    let result = events
        .iter()
        .position(|e| e.as_result().is_some())
        .context("no result message")?;
    let usage = names
        .iter()
        .position(|n| *n == "ca_usage_snapshot")
        .context("no usage snapshot")?;
    ensure!(turn < result && result < usage, "order: {names:?}");
    ensure!(
        events.iter().all(|e| e.session_id == id),
        "events of another session"
    );
    ensure!(events.iter().all(|e| !e.ts.is_empty()), "events without ts");
    match &events[events.len() - 1].kind {
        EventKind::SessionEnded { reason, .. } => {
            ensure!(*reason == EndReason::Complete, "{reason:?}")
        }
        other => bail!("{other:?}"),
    }
    let result_msg = events[result].as_result().context("result")?;
    ensure!(
        result_msg["result"] == "ordered reply",
        "result text: {result_msg}"
    );
    ensure!(
        ctx.client.session(&id).await?.state == SessionState::Ended,
        "state after end"
    );
    Ok(())
}

pub async fn resume_with_last_event_id_replays_only_later_events(ctx: &Ctx) -> Outcome {
    let (id, events) = run_text_session(ctx, "resume me").await?;
    let cut = (events.len() / 2) as u64;
    let replay = ctx
        .client
        .events(&id, Some(cut))
        .await?
        .collect_all()
        .await?;
    ensure!(
        replay.first().map(|e| e.id) == Some(cut + 1),
        "replay starts at {:?}",
        replay.first().map(|e| e.id)
    );
    ensure!(
        replay == events[(cut + 1) as usize..],
        "replayed events differ from the originals"
    );
    // The same through the query parameter.
    let resp = ctx
        .raw
        .authed(
            Method::GET,
            &format!("/v1/sessions/{id}/events?lastEventId={cut}"),
        )
        .send()
        .await?;
    ensure!(resp.status() == StatusCode::OK, "{}", resp.status());
    let text = resp.text().await?;
    ensure!(
        !text.contains(&format!("\nid: {cut}\n")),
        "event {cut} replayed again"
    );
    ensure!(
        text.contains(&format!("id: {}\n", cut + 1)),
        "event {} missing",
        cut + 1
    );
    Ok(())
}

pub async fn two_subscribers_see_the_same_events(ctx: &Ctx) -> Outcome {
    ctx.model
        .set_script(Script::new().reply(Reply::text("for both")));
    let mut req = ctx.session_request();
    req.messages.push("hello".into());
    req.streaming_input = Some(false);
    let id = ctx.client.create_session(&req).await?.session_id;
    let mut a = ctx.client.events(&id, None).await?;
    let mut b = ctx.client.events(&id, None).await?;
    let (ea, eb) = tokio::join!(a.collect_all(), b.collect_all());
    let (ea, eb) = (ea?, eb?);
    check_event_order(&ea)?;
    ensure!(ea == eb, "subscribers saw different events");
    Ok(())
}

pub async fn one_shot_chat_streams_and_deletes_the_session(ctx: &Ctx) -> Outcome {
    ctx.model
        .set_script(Script::new().reply(Reply::text("one shot")));
    let req = ChatRequest {
        session: ctx.session_request(),
        message: "go".into(),
        keep: false,
    };
    let events = ctx.client.chat(&req).await?.collect_all().await?;
    check_event_order(&events)?;
    let id = events[0].session_id.clone();
    ensure!(
        events
            .iter()
            .any(|e| e.as_result().is_some_and(|r| r["result"] == "one shot")),
        "no result"
    );
    ensure_code(ctx.client.session(&id).await, "NOT_FOUND")?;
    // Validation errors come as JSON before any SSE byte.
    expect_error(
        ctx.raw
            .authed(Method::POST, "/v1/chat")
            .json(&json!({"engine": "claude-agent-sdk"})),
        StatusCode::BAD_REQUEST,
        "VALIDATION",
    )
    .await?;
    Ok(())
}

pub async fn one_shot_chat_keep_leaves_files_readable(ctx: &Ctx) -> Outcome {
    ctx.model.set_script(
        Script::new()
            .reply(Reply::tool_use(
                "Bash",
                json!({"command": "printf kept > kept.txt"}),
            ))
            .reply(Reply::text("wrote it")),
    );
    let mut session = ctx.session_request();
    session.options = Some(substrate_core::protocol::EngineOptions {
        permission_mode: Some(String::from("acceptEdits")),
        allowed_tools: Some(vec![String::from("Bash")]),
        ..Default::default()
    });
    let req = ChatRequest {
        session,
        message: "write kept.txt".into(),
        keep: true,
    };
    let events = ctx.client.chat(&req).await?.collect_all().await?;
    check_event_order(&events)?;
    let id = events[0].session_id.clone();
    let body = ctx.client.read_file(&id, "kept.txt").await?;
    ensure!(&body[..] == b"kept", "kept.txt = {body:?}");
    ensure!(
        ctx.client.session(&id).await?.state == SessionState::Ended,
        "kept session ended"
    );
    Ok(())
}

pub async fn multi_turn_streaming_input(ctx: &Ctx) -> Outcome {
    ctx.model.set_script(
        Script::new()
            .reply(Reply::text("first answer"))
            .reply(Reply::text("second answer")),
    );
    let mut chat = ChatSession::start(ctx.client.clone(), ctx.session_request()).await?;
    let one = chat.ask("first").await?;
    ensure!(one.turn == 1, "turn {}", one.turn);
    ensure!(
        one.result_text() == Some("first answer"),
        "{:?}",
        one.result
    );
    ensure!(
        ctx.client.session(chat.session_id()).await?.state == SessionState::Idle,
        "idle between turns"
    );
    let two = chat.ask("second").await?;
    ensure!(two.turn == 2, "turn {}", two.turn);
    ensure!(
        two.result_text() == Some("second answer"),
        "{:?}",
        two.result
    );
    let second_request = ctx
        .model
        .model_requests()
        .last()
        .cloned()
        .context("no model request")?;
    let messages = second_request.body["messages"]
        .as_array()
        .context("messages")?;
    ensure!(
        messages
            .iter()
            .any(|m| m.to_string().contains("first answer")),
        "the second turn must carry the first turn's history"
    );
    let summary = chat.finish().await?;
    ensure!(summary.reason == EndReason::Complete, "{summary:?}");
    ensure!(summary.turns == 2, "{summary:?}");
    ensure!(
        summary.usage.output_tokens > 0,
        "usage rolled up: {summary:?}"
    );
    Ok(())
}

pub async fn cancel_mid_turn_ends_cancelled(ctx: &Ctx) -> Outcome {
    ctx.model.set_script(Script::new().reply(Reply::hang()));
    let mut chat = ChatSession::start(ctx.client.clone(), ctx.session_request()).await?;
    let id = chat.session_id().to_owned();
    let mut turn = chat.send("wait forever").await?;
    // Wait until the engine is really in the turn (the model request is in flight).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while ctx.model.model_requests().is_empty() {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the engine never called the model"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ctx.client.cancel(&id).await?;
    let mut reason = None;
    while let Some(event) = turn.next().await {
        if let EventKind::SessionEnded { reason: r, .. } = event?.kind {
            reason = Some(r);
        }
    }
    drop(turn);
    let summary = chat.finish().await?;
    ensure!(
        summary.reason == EndReason::Cancelled,
        "ended {:?} (seen in the turn: {reason:?})",
        summary.reason
    );
    ensure!(
        ctx.client.session(&id).await?.end_reason == Some(EndReason::Cancelled),
        "state"
    );
    ensure_code(ctx.client.send_message(&id, "more").await, "SESSION_ENDED")?;
    Ok(())
}

pub async fn permission_deny_reaches_the_engine(ctx: &Ctx) -> Outcome {
    ctx.model.set_script(
        Script::new()
            .reply(Reply::tool_use(
                "Bash",
                json!({"command": "touch denied.txt"}),
            ))
            .reply(Reply::text("understood")),
    );
    let chat = ChatSession::start(ctx.client.clone(), ctx.session_request()).await?;
    let mut chat = chat.with_permissions(permission_fn(|req| {
        if req.tool_name == "Bash" {
            PermissionDecision::deny("policy forbids touching files")
        } else {
            PermissionDecision::allow()
        }
    }));
    let outcome = chat.ask("touch a file").await?;
    let request = outcome.events.iter().find_map(|e| match &e.kind {
        EventKind::PermissionRequest {
            tool_name, input, ..
        } => Some((tool_name.clone(), input.clone())),
        _ => None,
    });
    let (tool, input) = request.context("no ca_permission_request")?;
    ensure!(
        tool == "Bash" && input["command"] == "touch denied.txt",
        "{tool} {input}"
    );
    let decision = outcome.events.iter().find_map(|e| match &e.kind {
        EventKind::PermissionDecision { decision, by, .. } => Some((decision.clone(), *by)),
        _ => None,
    });
    ensure!(
        matches!(
            decision,
            Some((
                Decision::Deny,
                substrate_core::protocol::PermissionDecisionBy::Client
            ))
        ),
        "{decision:?}"
    );
    ensure_code(
        ctx.client.read_file(chat.session_id(), "denied.txt").await,
        "NOT_FOUND",
    )?;
    let second = ctx
        .model
        .model_requests()
        .last()
        .cloned()
        .context("no model request")?;
    let last = second.body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or_default();
    ensure!(
        last.to_string().contains("policy forbids touching files"),
        "the denial must reach the model as the tool result: {last}"
    );
    chat.finish().await?;
    Ok(())
}

pub async fn permission_modify_replaces_the_input(ctx: &Ctx) -> Outcome {
    ctx.model.set_script(
        Script::new()
            .reply(Reply::tool_use(
                "Bash",
                json!({"command": "printf asked > out.txt"}),
            ))
            .reply(Reply::text("done")),
    );
    let chat = ChatSession::start(ctx.client.clone(), ctx.session_request()).await?;
    let mut chat = chat.with_permissions(permission_fn(|req| {
        let mut input = req.input.clone();
        input["command"] = json!("printf modified > out.txt");
        PermissionDecision::modify(input)
    }));
    chat.ask("write").await?;
    let body = ctx.client.read_file(chat.session_id(), "out.txt").await?;
    ensure!(
        &body[..] == b"modified",
        "out.txt = {:?}",
        String::from_utf8_lossy(&body)
    );
    chat.finish().await?;
    Ok(())
}

pub async fn input_after_end_is_409(ctx: &Ctx) -> Outcome {
    ctx.model
        .set_script(Script::new().reply(Reply::text("only")));
    let id = new_session(ctx).await?;
    ctx.client.send_message(&id, "one").await?;
    ctx.client.end_input(&id).await?;
    ensure_code(ctx.client.send_message(&id, "two").await, "INPUT_ENDED")?;
    let events = ctx.client.events(&id, None).await?.collect_all().await?;
    check_event_order(&events)?;
    ensure_code(ctx.client.send_message(&id, "three").await, "SESSION_ENDED")?;
    Ok(())
}

pub async fn fs_put_get_round_trip_binary_and_mode(ctx: &Ctx) -> Outcome {
    let id = new_session(ctx).await?;
    let bytes: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let written = ctx
        .client
        .write_file(&id, "dir/sub/data.bin", bytes.clone(), None)
        .await?;
    ensure!(
        written.size == bytes.len() as u64 && written.path == "dir/sub/data.bin",
        "{written:?}"
    );
    let back = ctx.client.read_file(&id, "dir/sub/data.bin").await?;
    ensure!(back[..] == bytes[..], "bytes differ after a round trip");
    ctx.client
        .write_file(&id, "run.sh", "#!/bin/sh\n", Some(0o755))
        .await?;
    let tree = ctx.client.tree(&id, ".", 1).await?;
    let entry = tree
        .entries
        .iter()
        .find(|e| e.path == "run.sh")
        .context("run.sh listed")?;
    ensure!(entry.mode & 0o777 == 0o755, "mode {:o}", entry.mode);
    // Overwrite replaces the whole content.
    ctx.client
        .write_file(&id, "dir/sub/data.bin", "short", None)
        .await?;
    ensure!(
        &ctx.client.read_file(&id, "dir/sub/data.bin").await?[..] == b"short",
        "overwrite"
    );
    // Empty files are files.
    ctx.client
        .write_file(&id, "empty", Vec::new(), None)
        .await?;
    ensure!(
        ctx.client.read_file(&id, "empty").await?.is_empty(),
        "empty file"
    );
    Ok(())
}

pub async fn fs_tree_lists_sorted_with_depth(ctx: &Ctx) -> Outcome {
    let id = new_session(ctx).await?;
    for path in ["b.txt", "a/x.txt", "a/deep/y.txt"] {
        ctx.client.write_file(&id, path, "1", None).await?;
    }
    let top = ctx.client.tree(&id, ".", 1).await?;
    let paths: Vec<&str> = top.entries.iter().map(|e| e.path.as_str()).collect();
    ensure!(paths == ["a", "b.txt"], "depth 1: {paths:?}");
    ensure!(
        top.entries[0].entry_type == EntryType::Dir && top.entries[1].entry_type == EntryType::File,
        "{top:?}"
    );
    ensure!(top.entries[1].size == 1, "{top:?}");
    let all = ctx.client.tree(&id, ".", 0).await?;
    let paths: Vec<&str> = all.entries.iter().map(|e| e.path.as_str()).collect();
    ensure!(
        paths == ["a", "a/deep", "a/deep/y.txt", "a/x.txt", "b.txt"],
        "unlimited: {paths:?}"
    );
    let sub = ctx.client.tree(&id, "a", 1).await?;
    let paths: Vec<&str> = sub.entries.iter().map(|e| e.path.as_str()).collect();
    ensure!(paths == ["a/deep", "a/x.txt"], "subdir: {paths:?}");
    Ok(())
}

pub async fn fs_delete_file_and_directory(ctx: &Ctx) -> Outcome {
    let id = new_session(ctx).await?;
    ctx.client.write_file(&id, "d/f.txt", "1", None).await?;
    ctx.client.write_file(&id, "g.txt", "1", None).await?;
    ctx.client.delete_path(&id, "g.txt", false).await?;
    ensure_code(ctx.client.read_file(&id, "g.txt").await, "NOT_FOUND")?;
    ensure!(
        ctx.client.delete_path(&id, "d", false).await.is_err(),
        "a directory needs recursive"
    );
    ctx.client.delete_path(&id, "d", true).await?;
    ensure_code(ctx.client.tree(&id, "d", 1).await, "NOT_FOUND")?;
    ensure_code(
        ctx.client.delete_path(&id, "nothing", false).await,
        "NOT_FOUND",
    )?;
    Ok(())
}

pub async fn fs_edit_replaces_exactly(ctx: &Ctx) -> Outcome {
    let id = new_session(ctx).await?;
    ctx.client
        .write_file(&id, "e.txt", "one two two", None)
        .await?;
    let edit = |old: &str, new: &str, all: bool| EditRequest {
        path: String::from("e.txt"),
        old_string: old.to_owned(),
        new_string: new.to_owned(),
        replace_all: all,
    };
    let done = ctx.client.edit(&id, &edit("one", "1", false)).await?;
    ensure!(done.replacements == 1, "{done:?}");
    ensure_code(
        ctx.client.edit(&id, &edit("two", "2", false)).await,
        "EDIT_AMBIGUOUS",
    )?;
    ensure_code(
        ctx.client.edit(&id, &edit("three", "3", false)).await,
        "EDIT_NO_MATCH",
    )?;
    let all = ctx.client.edit(&id, &edit("two", "2", true)).await?;
    ensure!(all.replacements == 2, "{all:?}");
    ensure!(
        &ctx.client.read_file(&id, "e.txt").await?[..] == b"1 2 2",
        "content after edits"
    );
    Ok(())
}

pub async fn fs_mkdir_and_move(ctx: &Ctx) -> Outcome {
    let id = new_session(ctx).await?;
    ctx.client.mkdir(&id, "m/n", true).await?;
    ensure!(
        ctx.client.tree(&id, "m", 1).await?.entries[0].entry_type == EntryType::Dir,
        "m/n"
    );
    ctx.client.write_file(&id, "file", "1", None).await?;
    ensure_code(ctx.client.mkdir(&id, "file", true).await, "CONFLICT")?;
    ctx.client.write_file(&id, "src.txt", "moved", None).await?;
    ctx.client
        .move_path(&id, "src.txt", "m/n/dst.txt", false)
        .await?;
    ensure!(
        &ctx.client.read_file(&id, "m/n/dst.txt").await?[..] == b"moved",
        "moved content"
    );
    ensure_code(ctx.client.read_file(&id, "src.txt").await, "NOT_FOUND")?;
    ensure_code(
        ctx.client
            .move_path(&id, "file", "m/n/dst.txt", false)
            .await,
        "CONFLICT",
    )?;
    ctx.client
        .move_path(&id, "file", "m/n/dst.txt", true)
        .await?;
    ensure!(
        &ctx.client.read_file(&id, "m/n/dst.txt").await?[..] == b"1",
        "overwritten"
    );
    Ok(())
}

pub async fn fs_missing_and_wrong_kind(ctx: &Ctx) -> Outcome {
    let id = new_session(ctx).await?;
    ensure_code(ctx.client.read_file(&id, "missing.txt").await, "NOT_FOUND")?;
    ctx.client.mkdir(&id, "adir", false).await?;
    ensure_code(ctx.client.read_file(&id, "adir").await, "NOT_A_FILE")?;
    ctx.client.write_file(&id, "afile", "x", None).await?;
    ensure_code(ctx.client.tree(&id, "afile", 1).await, "NOT_A_DIRECTORY")?;
    Ok(())
}

pub async fn hostile_paths_are_path_escape(ctx: &Ctx) -> Outcome {
    let id = new_session(ctx).await?;
    let hostile = [
        "../escape.txt",
        "/etc/passwd",
        "a/../../escape",
        "..",
        "a/..\u{0}/b",
        "x\u{0}y",
    ];
    for path in hostile {
        ensure_code(ctx.client.read_file(&id, path).await, "PATH_ESCAPE")
            .with_context(|| format!("GET {path:?}"))?;
        ensure_code(
            ctx.client.write_file(&id, path, "x", None).await,
            "PATH_ESCAPE",
        )
        .with_context(|| format!("PUT {path:?}"))?;
        ensure_code(ctx.client.delete_path(&id, path, true).await, "PATH_ESCAPE")
            .with_context(|| format!("DELETE {path:?}"))?;
        ensure_code(ctx.client.tree(&id, path, 1).await, "PATH_ESCAPE")
            .with_context(|| format!("tree {path:?}"))?;
        ensure_code(ctx.client.mkdir(&id, path, true).await, "PATH_ESCAPE")
            .with_context(|| format!("mkdir {path:?}"))?;
        ensure_code(
            ctx.client.move_path(&id, path, "in.txt", true).await,
            "PATH_ESCAPE",
        )
        .with_context(|| format!("move from {path:?}"))?;
    }
    ctx.client.write_file(&id, "in.txt", "x", None).await?;
    ensure_code(
        ctx.client
            .move_path(&id, "in.txt", "../out.txt", true)
            .await,
        "PATH_ESCAPE",
    )?;
    let edit = EditRequest {
        path: String::from("../../etc/hostname"),
        old_string: String::from("a"),
        new_string: String::from("b"),
        replace_all: true,
    };
    ensure_code(ctx.client.edit(&id, &edit).await, "PATH_ESCAPE")?;
    // Percent-encoded traversal arrives decoded and is refused the same way.
    expect_error(
        ctx.raw.authed(
            Method::GET,
            &format!("/v1/sessions/{id}/fs/file?path=%2E%2E%2Fx"),
        ),
        StatusCode::BAD_REQUEST,
        "PATH_ESCAPE",
    )
    .await?;
    Ok(())
}

pub async fn symlinks_out_of_the_workdir_are_path_escape(ctx: &Ctx) -> Outcome {
    // The agent itself plants the links, as a hostile agent would.
    ctx.model.set_script(
        Script::new()
            .reply(Reply::tool_use(
                "Bash",
                json!({"command": "ln -s / root-link && ln -s /etc/hostname host-file && ln -s .. up && mkdir inner && ln -s inner inner-ok"}),
            ))
            .reply(Reply::text("linked")),
    );
    // Commands that reach outside the workdir ask for permission: the chat allows them.
    let mut chat = ChatSession::start(ctx.client.clone(), ctx.session_request()).await?;
    chat.ask("plant links").await?;
    let id = chat.session_id().to_owned();
    let tree = ctx.client.tree(&id, ".", 1).await?;
    let link = tree
        .entries
        .iter()
        .find(|e| e.path == "root-link")
        .context("root-link listed")?;
    ensure!(
        link.entry_type == EntryType::Symlink,
        "listed as symlink, not followed: {link:?}"
    );
    for path in ["root-link/etc/passwd", "host-file", "up/x", "root-link"] {
        ensure_code(ctx.client.read_file(&id, path).await, "PATH_ESCAPE")
            .with_context(|| format!("GET {path}"))?;
    }
    for path in ["root-link/tmp/planted", "up/planted", "host-file"] {
        ensure_code(
            ctx.client.write_file(&id, path, "x", None).await,
            "PATH_ESCAPE",
        )
        .with_context(|| format!("PUT {path}"))?;
    }
    ensure_code(ctx.client.tree(&id, "root-link", 1).await, "PATH_ESCAPE")?;
    ensure_code(ctx.client.tree(&id, "up", 1).await, "PATH_ESCAPE")?;
    ensure_code(
        ctx.client.mkdir(&id, "up/newdir", true).await,
        "PATH_ESCAPE",
    )?;
    // A link that stays inside works.
    ctx.client
        .write_file(&id, "inner-ok/f.txt", "inside", None)
        .await?;
    ensure!(
        &ctx.client.read_file(&id, "inner/f.txt").await?[..] == b"inside",
        "inner link"
    );
    Ok(())
}

pub async fn inline_source_and_attachments_are_materialised(ctx: &Ctx) -> Outcome {
    let mut req = ctx.session_request();
    req.source = Some(SourceSpec::Files {
        files: vec![
            FileSpec::text("agent/CLAUDE.md", "be brief"),
            FileSpec {
                path: String::from("agent/run.sh"),
                content: String::from("IyEvYmluL3NoCg=="),
                encoding: substrate_core::protocol::Encoding::Base64,
                mode: Some(0o755),
            },
        ],
    });
    req.attachments = vec![FileSpec::text("inbox/note.txt", "attached")];
    let id = ctx.client.create_session(&req).await?.session_id;
    ensure!(
        &ctx.client.read_file(&id, "agent/CLAUDE.md").await?[..] == b"be brief",
        "inline file"
    );
    ensure!(
        &ctx.client.read_file(&id, "agent/run.sh").await?[..] == b"#!/bin/sh\n",
        "base64 file"
    );
    ensure!(
        &ctx.client.read_file(&id, "inbox/note.txt").await?[..] == b"attached",
        "attachment"
    );
    let tree = ctx.client.tree(&id, "agent", 1).await?;
    let run = tree
        .entries
        .iter()
        .find(|e| e.path == "agent/run.sh")
        .context("run.sh")?;
    ensure!(run.mode & 0o777 == 0o755, "mode {:o}", run.mode);
    Ok(())
}

pub async fn escaping_attachment_refuses_the_session(ctx: &Ctx) -> Outcome {
    for path in ["../evil.txt", "/tmp/evil.txt"] {
        let mut req = ctx.session_request();
        req.session_id = Some(String::from("sess_evil"));
        req.attachments = vec![FileSpec::text(path, "x")];
        ensure_code(ctx.client.create_session(&req).await, "PATH_ESCAPE")
            .with_context(|| path.to_owned())?;
        ensure_code(ctx.client.session("sess_evil").await, "NOT_FOUND")
            .context("a refused session must not exist")?;
    }
    Ok(())
}
