//! `computeragent run "prompt"`: boot, one agent turn streamed as readable text (or NDJSON),
//! the workdir copied out on request, the sandbox gone.

use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use computeragent::{Agent, RuntimeConfig, Source};
use indicatif::{ProgressBar, ProgressStyle};
use scripted_model::{Reply, Script, ScriptedModel};
use serde_json::json;
use substrate_core::protocol::{EntryType, EventKind};
use substrate_core::{BootEvent, ProgressSink, WorkdirPolicy};

use crate::{args, render};

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// What to ask the agent.
    prompt: String,
    #[command(flatten)]
    sandbox: args::SandboxArgs,
    /// A directory copied into the agent's workdir first.
    #[arg(long, value_name = "DIR")]
    source: Option<PathBuf>,
    /// Work on this project in `copy` mode: it is copied into the workdir, and what the agent
    /// changed is shown afterwards and applied only on approval (or with --apply).
    #[arg(long, value_name = "DIR", conflicts_with = "source")]
    project: Option<PathBuf>,
    /// Apply the project's changes without asking.
    #[arg(long, requires = "project")]
    apply: bool,
    /// Write the project's changes as a patch (git format) to FILE.
    #[arg(long, value_name = "FILE", requires = "project")]
    patch: Option<PathBuf>,
    /// Leave NAME (wherever it appears) or the project's relative PATH out of the copy and
    /// of the change set; repeatable, added to the config's `exclude`.
    #[arg(long, value_name = "NAME|PATH", requires = "project", value_parser = computeragent::parse::exclude)]
    exclude: Vec<String>,
    /// Copy the workdir back into DIR when the agent is done.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Print the events as NDJSON instead of text.
    #[arg(long)]
    json: bool,
    /// Keep the sandbox's workdir on the host afterwards (where the runtime supports it).
    #[arg(long)]
    keep: bool,
    /// The model (default: the engine's).
    #[arg(long)]
    model: Option<String>,
}

pub async fn run(
    args: RunArgs,
    config: &RuntimeConfig,
    user: &crate::config::UserConfig,
) -> computeragent::Result<ExitCode> {
    let key = std::env::var("ANTHROPIC_API_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty());
    // Without a key, a scripted model on this host answers: the agent, its tools and the
    // sandbox are real; the model's replies are canned.
    let demo = match key {
        Some(_) => None,
        None => {
            eprintln!(
                "note: ANTHROPIC_API_KEY is not set: the SCRIPTED DEMO MODEL answers (offline, \
                 canned replies; the agent and its tools run for real). Set the key for the real \
                 model."
            );
            Some(demo_model(&args.prompt).await?)
        }
    };
    let progress = boot_progress(args.json);
    let mut builder = Agent::builder()
        .runtime_config(config.clone())
        .network(args.sandbox.network(user))
        .limits(args.sandbox.limits(user))
        .label("run")
        .progress(progress.sink());
    builder = match (&demo, key) {
        (Some(model), _) => builder
            .env("ANTHROPIC_BASE_URL", model.base_url())
            .env("ANTHROPIC_API_KEY", "sk-ant-scripted-demo"),
        (None, Some(key)) => builder.env("ANTHROPIC_API_KEY", key),
        (None, None) => builder,
    };
    for name in [
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
        "DISABLE_TELEMETRY",
        "DISABLE_AUTOUPDATER",
    ] {
        builder = builder.env(name, "1");
    }
    if let Some(runtime) = args.sandbox.runtime(user) {
        builder = builder.runtime(runtime);
    }
    for name in &user.env_allow {
        if let Ok(value) = std::env::var(name) {
            builder = builder.env(name.clone(), value);
        }
    }
    if let Some(model) = &args.model {
        builder = builder.model(model.clone());
    }
    if let Some(dir) = &args.source {
        builder = builder.source(Source::Dir(dir.clone()));
    }
    if args.keep {
        builder = builder.workdir(WorkdirPolicy::Keep);
    }
    let project = match &args.project {
        Some(dir) => {
            let mut excludes = user.exclude.clone();
            excludes.extend(args.exclude.iter().cloned());
            let options = changeset::Options {
                excludes,
                ..changeset::Options::default()
            };
            Some(computeragent::project::ProjectCopy::stage(dir, &options)?)
        }
        None => None,
    };
    let started = builder.start().await;
    progress.finish();
    let mut agent = started?;
    if let Some(copy) = &project
        && let Err(e) = copy
            .upload(&agent.harness_client()?, agent.session_id()?)
            .await
    {
        let _ = agent.dispose().await;
        return Err(e);
    }
    if !args.json {
        eprintln!(
            "agent running on {}",
            agent.runtime().map(|k| k.as_str()).unwrap_or("?")
        );
    }
    let mut result = converse(&mut agent, &args).await;
    if let (Ok(_), Some(copy)) = (&result, &project)
        && let Err(e) = review(&agent, copy, &args).await
    {
        result = Err(e);
    }
    let copied = match (&result, &args.out) {
        (Ok(_), Some(dir)) => copy_out(&agent, dir).await,
        _ => Ok(0),
    };
    let summary = agent.dispose().await;
    let success = result?;
    let copied = copied?;
    if let Some(dir) = &args.out {
        eprintln!("copied {copied} file(s) into {}", dir.display());
    }
    let summary = summary?;
    if !args.json {
        eprintln!(
            "session {:?} after {} turn(s)",
            summary.reason, summary.turns
        );
    }
    Ok(if success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Streams the turn; whether it ended in success.
async fn converse(agent: &mut Agent, args: &RunArgs) -> computeragent::Result<bool> {
    let mut turn = agent.chat(&args.prompt).await?;
    let mut success = false;
    while let Some(event) = turn.next().await {
        let event = event?;
        if let Some(result) = event.as_result() {
            success = result.get("subtype").and_then(|s| s.as_str()) == Some("success");
        }
        if args.json {
            println!("{}", event.to_json());
        } else {
            print!("{}", render::event(&event));
        }
        if let EventKind::SessionEnded { .. } = event.kind {
            break;
        }
    }
    turn.finish().await?;
    Ok(success)
}

/// Shows what the agent changed in the project, writes the patch, and applies it when asked.
async fn review(
    agent: &Agent,
    copy: &computeragent::project::ProjectCopy,
    args: &RunArgs,
) -> computeragent::Result<()> {
    let client = agent.harness_client()?;
    let (changes, _fetched) = copy.changes(&client, agent.session_id()?).await?;
    let review = crate::project::Review {
        apply: args.apply,
        no_apply: false,
        patch: args.patch.clone(),
    };
    let Some(report) = crate::project::review_changes(&changes, copy.project(), &review)? else {
        return Ok(());
    };
    if report.conflicts.is_empty() && report.refused.is_empty() {
        Ok(())
    } else {
        Err(computeragent::Error::invalid(
            "changes",
            format!(
                "{} conflict(s) and {} refused change(s) were not applied",
                report.conflicts.len(),
                report.refused.len()
            ),
        ))
    }
}

/// Copies every file of the workdir into `dir`; how many.
async fn copy_out(agent: &Agent, dir: &Path) -> computeragent::Result<usize> {
    let mut copied = 0;
    for entry in agent.list_workdir().await? {
        if entry.entry_type != EntryType::File {
            continue;
        }
        let relative = Path::new(&entry.path);
        if !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(computeragent::Error::invalid(
                "workdir entry",
                format!("`{}` is not a plain relative path", entry.path),
            ));
        }
        let target = dir.join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| computeragent::Error::io(format!("create {}", parent.display()), e))?;
        }
        let content = agent.fetch_artifact(&entry.path).await?;
        std::fs::write(&target, &content)
            .map_err(|e| computeragent::Error::io(format!("write {}", target.display()), e))?;
        copied += 1;
    }
    Ok(copied)
}

/// The scripted model of the offline demo: the agent writes `answer.md` with the prompt in
/// it, then says what it did.
pub(crate) async fn demo_model(prompt: &str) -> computeragent::Result<ScriptedModel> {
    let quoted = prompt.replace('\'', "'\\''");
    let script = Script::new()
        .reply(Reply::tool_use(
            "Bash",
            json!({"command": format!(
                "printf '# Answer\\n\\nYou asked: %s\\n\\n(Written by the agent in its sandbox, driven by the scripted demo model.)\\n' '{quoted}' > answer.md && ls -l answer.md && id -un"
            )}),
        ))
        .reply(Reply::text(
            "(scripted demo model) I wrote answer.md in my workdir with your request in it. \
             Set ANTHROPIC_API_KEY to talk to the real model.",
        ));
    ScriptedModel::start(script).await.map_err(|e| {
        computeragent::Error::io(
            "start the scripted demo model",
            std::io::Error::other(e.to_string()),
        )
    })
}

/// A spinner through the boot phases on stderr (hidden when stderr is no terminal or the
/// output is NDJSON).
struct BootProgress {
    bar: Arc<ProgressBar>,
}

fn boot_progress(json: bool) -> BootProgress {
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    BootProgress { bar: Arc::new(bar) }
}

impl BootProgress {
    fn sink(&self) -> ProgressSink {
        let bar = self.bar.clone();
        ProgressSink::new(move |event| match event {
            BootEvent::PhaseStarted { phase } => bar.set_message(format!("booting: {phase}")),
            BootEvent::PhaseFinished {
                phase,
                elapsed,
                error,
            } => match error {
                None => bar.println(format!("  {phase} {elapsed:.1?}")),
                Some(e) => bar.println(format!("  {phase} failed after {elapsed:.1?}: {e}")),
            },
            BootEvent::Note { phase, message } => bar.println(format!("  {phase}: {message}")),
            _ => {}
        })
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
