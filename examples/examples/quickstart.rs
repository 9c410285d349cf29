//! The quick start: boot the harness, run one agent turn end to end, print the streamed events
//! and the file the agent wrote.
//!
//! The agent is the real Claude Code CLI driven by the real `@anthropic-ai/claude-agent-sdk`;
//! only the model is scripted (a Messages API server on 127.0.0.1), so this runs offline.
//! The harness runs with the `local` runtime: a plain host process, **no isolation**.
//!
//! ```text
//! cargo run -p substrate-examples --example quickstart
//! ```

use std::time::Instant;

use serde_json::{Value, json};
use substrate_core::client::ChatSession;
use substrate_core::protocol::{CreateSession, ENGINE_CLAUDE_AGENT_SDK, EventKind};
use substrate_core::{BootEvent, BootSpec, NetworkPolicy, ProgressSink, Substrate};
use substrate_testkit::conformance::scripted_engine_envs;
use substrate_testkit::local::LocalSubstrate;
use substrate_testkit::model::{Reply, Script, ScriptedModel};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| String::from("warn")))
        .with_writer(std::io::stderr)
        .init();

    println!("• staging the agent SDK and its CLI (once; about 400 MB) …");
    let started = Instant::now();
    let modules = substrate_testkit::stage::ensure_staged().map_err(anyhow::Error::msg)?;
    println!(
        "  node_modules ready at {} ({:.1?})",
        modules.display(),
        started.elapsed()
    );

    let model = ScriptedModel::start(
        Script::new()
            .reply(Reply::tool_use(
                "Bash",
                json!({"command": "printf '# Hello\\n\\nWritten by the agent inside its substrate.\\n' > hello.md && ls -l hello.md"}),
            ))
            .reply(Reply::text("I created hello.md with a short greeting.")),
    )
    .await?;
    println!(
        "• scripted model listening at {} (no real model is called)",
        model.base_url()
    );

    let spec = BootSpec::new("quickstart")
        .network(NetworkPolicy::Host)
        .progress(ProgressSink::new(|event| {
            if let BootEvent::PhaseFinished {
                phase,
                elapsed,
                error,
            } = event
            {
                match error {
                    None => println!("  boot: {phase:<8} {elapsed:>8.1?}"),
                    Some(e) => println!("  boot: {phase:<8} failed: {e}"),
                }
            }
        }));
    println!("• booting the harness (local runtime: a host process, NO isolation)");
    let harness = LocalSubstrate::new(&modules).boot_harness(spec).await?;
    let result = run(&harness, &model).await;
    harness.shutdown().await?;
    println!("• harness shut down; its directory and processes are gone");
    result
}

async fn run(harness: &substrate_core::BootedHarness, model: &ScriptedModel) -> anyhow::Result<()> {
    let client = harness.client()?;
    let health = client.health().await?;
    println!(
        "  harness {} speaks protocol v{}",
        health.version,
        health.protocol.unwrap_or(0)
    );

    let mut request = CreateSession::new(ENGINE_CLAUDE_AGENT_SDK);
    request.envs = scripted_engine_envs(&model.base_url());
    let mut chat = ChatSession::start(client.clone(), request).await?;
    println!(
        "• session {} — prompt: \"Write hello.md\"",
        chat.session_id()
    );

    let mut turn = chat.send("Write hello.md").await?;
    while let Some(event) = turn.next().await {
        let event = event?;
        println!("  [{:>2}] {}", event.id, describe(&event.kind));
    }
    let outcome = turn.finish().await?;
    let usage = chat.usage().clone();
    println!(
        "• turn {} done: {} input / {} output tokens",
        outcome.turn, usage.input_tokens, usage.output_tokens
    );

    let file = client.read_file(chat.session_id(), "hello.md").await?;
    println!("• hello.md, fetched back through the harness:\n");
    for line in String::from_utf8_lossy(&file).lines() {
        println!("    {line}");
    }
    println!();
    let summary = chat.finish().await?;
    println!("• session ended: {:?}", summary.reason);
    Ok(())
}

/// One readable line per event.
fn describe(kind: &EventKind) -> String {
    match kind {
        EventKind::SessionStarted { engine, .. } => format!("session started ({engine})"),
        EventKind::TurnStarted { turn, .. } => format!("turn {turn} started"),
        EventKind::PermissionRequest {
            tool_name, input, ..
        } => {
            format!("permission asked: {tool_name} {}", short(input))
        }
        EventKind::PermissionDecision { decision, .. } => format!("permission {decision:?}"),
        EventKind::UsageSnapshot { usage, .. } => {
            format!(
                "usage: {} in / {} out",
                usage.input_tokens, usage.output_tokens
            )
        }
        EventKind::SessionEnded { reason, .. } => format!("session ended: {reason:?}"),
        EventKind::SdkMessage { message } => describe_sdk(message),
        other => format!("{other:?}"),
    }
}

fn describe_sdk(message: &Value) -> String {
    let kind = message["type"].as_str().unwrap_or("?");
    match kind {
        "assistant" => {
            let parts: Vec<String> = message["message"]["content"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|block| match block["type"].as_str() {
                    Some("text") => format!("says: {}", block["text"].as_str().unwrap_or_default()),
                    Some("tool_use") => format!(
                        "calls {} {}",
                        block["name"].as_str().unwrap_or("?"),
                        short(&block["input"])
                    ),
                    other => format!("{other:?}"),
                })
                .collect();
            format!("assistant {}", parts.join("; "))
        }
        "user" => {
            let results: Vec<String> = message["message"]["content"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|b| b["type"] == "tool_result")
                .map(|b| format!("tool result: {}", short(&b["content"])))
                .collect();
            if results.is_empty() {
                String::from("user message")
            } else {
                results.join("; ")
            }
        }
        "result" => format!(
            "result ({}): {}",
            message["subtype"].as_str().unwrap_or("?"),
            message["result"].as_str().unwrap_or_default()
        ),
        "system" => format!("system {}", message["subtype"].as_str().unwrap_or("")),
        other => format!("sdk {other}"),
    }
}

fn short(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let text = text.replace('\n', "⏎");
    if text.chars().count() > 100 {
        format!("{}…", text.chars().take(100).collect::<String>())
    } else {
        text
    }
}
