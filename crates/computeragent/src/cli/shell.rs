//! `computeragent shell [-- PROGRAM…]`: a login shell (or any program) in a fresh sandbox, on
//! a real terminal. The caller's terminal goes raw for the session and is restored on every
//! way out (the program's exit, an error, SIGTERM or SIGHUP, a panic); its size follows every
//! resize; Ctrl-C and friends reach the program, not this command; the program's exit status
//! becomes this command's.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use computeragent::RuntimeConfig;
use computeragent::terminal::{Terminal, TerminalRequest, size_of};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::args;
use crate::tty::{KeyReader, RawMode, SessionSignal, SessionSignals};

/// Arguments of `shell`.
#[derive(Debug, clap::Args)]
pub struct ShellArgs {
    /// Runtime (default: the best isolating one here; every isolating one has terminals),
    /// network policy and limits.
    #[command(flatten)]
    sandbox: args::SandboxArgs,
    #[command(flatten)]
    project: ProjectArgs,
    /// A shell in the running sandbox ID instead (a warm sandbox of `serve`: `sbx_…`), as
    /// its own user, confined as it is. Closing the shell leaves the sandbox running.
    #[arg(long, value_name = "ID", conflicts_with_all = ["project", "no_project", "apply", "no_apply", "patch"])]
    into: Option<String>,
    /// With --into: the `computeragent serve` that runs the sandbox (its http:// URL; the
    /// token from COMPUTERAGENT_TOKEN). Without it, a bwrap sandbox on this host is entered
    /// directly (as root).
    #[arg(long, value_name = "URL", env = "COMPUTERAGENT_SERVER")]
    server: Option<String>,
    /// The program (default: a login shell).
    #[arg(last = true)]
    command: Vec<OsString>,
}

/// The project a session works on.
#[derive(Debug, Clone, clap::Args)]
pub struct ProjectArgs {
    /// The project, copied into the sandbox's workdir (default: the current directory).
    /// What changed is shown when the session ends and applied only on approval.
    #[arg(long, value_name = "DIR")]
    project: Option<PathBuf>,
    /// Start with an empty workdir instead.
    #[arg(long, conflicts_with = "project")]
    no_project: bool,
    /// Apply the changes: `--apply` without asking, `--apply=ask` after showing them (the
    /// default on a terminal; elsewhere nothing is applied), `--apply=no` never.
    #[arg(
        long,
        value_enum,
        value_name = "WHEN",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "yes",
        conflicts_with = "no_apply"
    )]
    apply: Option<ApplyWhen>,
    /// Never apply the changes (show them; --patch keeps them); the same as `--apply=no`.
    #[arg(long)]
    no_apply: bool,
    /// Write the changes as a patch (git format) to FILE.
    #[arg(long, value_name = "FILE")]
    patch: Option<PathBuf>,
    /// How the project reaches the sandbox: `copy` (changes reviewed, applied on approval),
    /// `rw` (mounted read-write: the agent changes your files directly) or `ro` (mounted
    /// read-only). rw and ro run on bwrap, lima, tart and apple-container.
    #[arg(long, value_enum, default_value_t = ProjectMode::Copy)]
    mode: ProjectMode,
    /// Leave NAME (wherever it appears: node_modules) or the project's relative PATH
    /// (build/cache) out of the copy and of the change set; repeatable, added to the
    /// config's `exclude`.
    #[arg(long, value_name = "NAME|PATH", value_parser = computeragent::parse::exclude)]
    exclude: Vec<String>,
}

/// When a session's changes are applied to the project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ApplyWhen {
    /// After showing them, if the person says yes.
    Ask,
    /// Without asking.
    Yes,
    /// Never.
    No,
}

/// How a project reaches the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProjectMode {
    /// Copied in; changes reviewed and applied on approval.
    Copy,
    /// Mounted read-write.
    Rw,
    /// Mounted read-only.
    Ro,
}

impl ProjectArgs {
    fn review_options(&self) -> crate::project::Review {
        crate::project::Review {
            apply: self.apply == Some(ApplyWhen::Yes),
            no_apply: self.no_apply || self.apply == Some(ApplyWhen::No),
            patch: self.patch.clone(),
        }
    }

    /// The project directory, if any; the current directory unless that is `/` or HOME.
    fn directory(&self) -> computeragent::Result<Option<PathBuf>> {
        if self.no_project {
            return Ok(None);
        }
        if let Some(dir) = &self.project {
            return Ok(Some(dir.clone()));
        }
        let cwd = std::env::current_dir()
            .map_err(|e| computeragent::Error::io("find the current directory", e))?;
        let home = std::env::var_os("HOME").map(PathBuf::from);
        if cwd == std::path::Path::new("/") || Some(&cwd) == home.as_ref() {
            return Err(computeragent::Error::invalid(
                "project",
                format!(
                    "the current directory {} is not a project to copy; cd into one, or pass \
                     --project DIR or --no-project",
                    cwd.display()
                ),
            ));
        }
        Ok(Some(cwd))
    }
}

/// Runs the project's runtime script, if it has one, then the program (in the mounted
/// project, when there is one).
const RUNTIME_SCRIPT: &str = r#"if [ -n "${COMPUTERAGENT_PROJECT:-}" ]; then cd "$COMPUTERAGENT_PROJECT" || exit 126; fi
for script in .computeragent/runtime.sh .claude-vm.runtime.sh; do
  if [ -f "$script" ]; then
    echo "computeragent: running $script" >&2
    # Every file's inode, size, mtime and ctime before the script: what differs after is
    # the script's (a timestamp alone could fall in the same clock tick as the script's writes).
    before=$(mktemp)
    list() { find . -type f ! -path ./.computeragent/script-output -printf '%i %s %T@ %C@ %p\n' 2>/dev/null | sort; }
    list > "$before"
    sh "$script" || { status=$?; rm -f "$before"; echo "computeragent: $script failed with status $status" >&2; exit $status; }
    # In a copy, what the script made is not the agent's work: its files and their digests
    # are listed for the change set to leave out.
    if [ -z "${COMPUTERAGENT_PROJECT:-}" ]; then
      mkdir -p .computeragent
      list | comm -13 "$before" - | cut -d' ' -f5- | while IFS= read -r file; do sha256sum "$file"; done \
        > .computeragent/script-output 2>/dev/null || true
    fi
    rm -f "$before"
    break
  fi
done
exec "$@""#;

/// How an attached session ended.
enum Ended {
    /// The program ended by itself, with this status.
    Exited(i32),
    /// A signal from outside ended the session; the caller closes the sandbox.
    Signalled {
        /// The signal's name.
        name: &'static str,
        /// The status a shell gives for it.
        code: u8,
    },
}

/// Bridges the caller's terminal and the program's until the program ends or a signal from
/// outside ends the session. When it returns, no key is read from the caller any more.
async fn attach(
    terminal: &mut Terminal,
    signals: &mut SessionSignals,
) -> computeragent::Result<Ended> {
    let missing = || computeragent::Error::invalid("shell", "the terminal's streams are gone");
    let mut to_program = terminal.take_input().ok_or_else(missing)?;
    let mut from_program = terminal.take_output().ok_or_else(missing)?;
    let (keys, mut typed) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    let reader = KeyReader::spawn(keys)?;
    let typing = tokio::spawn(async move {
        while let Some(bytes) = typed.recv().await {
            if to_program.write_all(&bytes).await.is_err() || to_program.flush().await.is_err() {
                break;
            }
        }
    });
    let output = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = from_program.read(&mut buf).await {
            if n == 0 || stdout.write_all(&buf[..n]).await.is_err() {
                break;
            }
            let _ = stdout.flush().await;
        }
    });

    let resizer = terminal.resizer();
    let ended = loop {
        tokio::select! {
            end = terminal.wait() => break end.map(|end| Ended::Exited(end.code.unwrap_or(128))),
            signal = signals.next() => match signal {
                SessionSignal::Resized => {
                    if let Some(size) = size_of(std::io::stdin()) {
                        let _ = resizer.resize(size);
                    }
                }
                SessionSignal::Ended { name, code } => break Ok(Ended::Signalled { name, code }),
            },
        }
    };
    typing.abort();
    reader.stop().await;
    if matches!(ended, Ok(Ended::Exited(_))) {
        // What the program printed last, up to the terminal's end.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), output).await;
    } else {
        output.abort();
    }
    ended
}

/// Arguments of `claude`.
#[derive(Debug, clap::Args)]
pub struct ClaudeArgs {
    /// Runtime (default: the best isolating one here), network policy and limits.
    #[command(flatten)]
    sandbox: args::SandboxArgs,
    #[command(flatten)]
    project: ProjectArgs,
    /// Arguments for Claude Code.
    #[arg(last = true)]
    args: Vec<OsString>,
}

/// Prepares the sandbox's HOME so that no first-run screen waits for a person (onboarding,
/// the folder trust dialog, the custom-key prompt for the per-boot placeholder, the
/// bypass-permissions warning), then runs Claude Code's own binary with full autonomy.
const CLAUDE_LAUNCH: &str = r#"const fs = require("fs");
const key = process.env.ANTHROPIC_API_KEY || "";
fs.writeFileSync(process.env.HOME + "/.claude.json", JSON.stringify({
  hasCompletedOnboarding: true,
  bypassPermissionsModeAccepted: true,
  projects: { [process.cwd()]: { hasTrustDialogAccepted: true } },
  customApiKeyResponses: { approved: key ? [key.slice(-20)] : [], rejected: [] },
}));
const dir = `${process.env.HARNESS_NODE_MODULES || "/opt/harness/node_modules"}/@anthropic-ai`;
const pkg = fs.readdirSync(dir).find((d) => d.startsWith("claude-agent-sdk-linux-") && fs.existsSync(`${dir}/${d}/claude`));
if (!pkg) { console.error("Claude Code's binary is not among the staged modules"); process.exit(127); }
const { spawnSync } = require("child_process");
for (const s of ["SIGINT", "SIGQUIT", "SIGTSTP"]) process.on(s, () => {});
const r = spawnSync(`${dir}/${pkg}/claude`, ["--dangerously-skip-permissions", ...process.argv.slice(1)], { stdio: "inherit" });
process.exit(r.status ?? 1);
"#;

pub async fn claude(
    args: ClaudeArgs,
    config: &RuntimeConfig,
    user: &crate::config::UserConfig,
) -> computeragent::Result<ExitCode> {
    let key = std::env::var("ANTHROPIC_API_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty());
    let demo = match key {
        Some(_) => None,
        None => {
            eprintln!(
                "note: ANTHROPIC_API_KEY is not set: the SCRIPTED DEMO MODEL answers (offline, \
                 canned replies). Set the key for the real model."
            );
            Some(crate::run::demo_model("your request").await?)
        }
    };
    let mut argv: Vec<OsString> = vec!["node".into(), "-e".into(), CLAUDE_LAUNCH.into()];
    argv.extend(args.args.iter().cloned());
    let shell = ShellArgs {
        sandbox: args.sandbox.clone(),
        project: args.project.clone(),
        into: None,
        server: None,
        command: argv,
    };
    let mut extra: Vec<(String, String)> = vec![
        ("DISABLE_AUTOUPDATER".into(), "1".into()),
        ("DISABLE_TELEMETRY".into(), "1".into()),
        (
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into(),
            "1".into(),
        ),
    ];
    match (&demo, key) {
        (Some(model), _) => {
            extra.push(("ANTHROPIC_BASE_URL".into(), model.base_url()));
            extra.push(("ANTHROPIC_API_KEY".into(), "sk-ant-scripted-demo".into()));
        }
        (None, Some(key)) => extra.push(("ANTHROPIC_API_KEY".into(), key)),
        (None, None) => {}
    }
    session(shell, config, user, extra).await
}

pub async fn run(
    args: ShellArgs,
    config: &RuntimeConfig,
    user: &crate::config::UserConfig,
) -> computeragent::Result<ExitCode> {
    match (args.into.clone(), args.server.clone()) {
        (Some(id), Some(server)) => {
            crate::remote::shell_into(&server, &id, args.command.clone()).await
        }
        (Some(id), None) => enter(args, &id, config, user).await,
        (None, _) => session(args, config, user, Vec::new()).await,
    }
}

/// `shell --into ID`: a shell in a running sandbox, which stays when the shell ends.
async fn enter(
    args: ShellArgs,
    id: &str,
    config: &RuntimeConfig,
    user: &crate::config::UserConfig,
) -> computeragent::Result<ExitCode> {
    if !std::io::stdin().is_terminal() {
        return Err(computeragent::Error::invalid(
            "shell",
            "stdin is not a terminal: run it in one",
        ));
    }
    let runtime = args
        .sandbox
        .runtime(user)
        .unwrap_or(computeragent::RuntimeName::Bwrap);
    let argv = if args.command.is_empty() {
        vec![OsString::from("bash"), OsString::from("-l")]
    } else {
        args.command.clone()
    };
    let size = size_of(std::io::stdin()).unwrap_or_default();
    let term = std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into());
    let request = TerminalRequest::new(argv).size(size).term(term);
    let mut terminal = computeragent::terminal::enter(runtime, config, id, request).await?;
    let mut signals = SessionSignals::watch()?;
    let raw = RawMode::enter(&signals)?;
    let ended = attach(&mut terminal, &mut signals).await;
    drop(raw);
    let closed = terminal.close().await;
    let ended = ended?;
    closed?;
    Ok(exit_code(&ended, "the sandbox keeps running"))
}

async fn session(
    args: ShellArgs,
    config: &RuntimeConfig,
    user: &crate::config::UserConfig,
    extra_env: Vec<(String, String)>,
) -> computeragent::Result<ExitCode> {
    if !std::io::stdin().is_terminal() {
        return Err(computeragent::Error::invalid(
            "shell",
            "stdin is not a terminal: run it in one (or use `computeragent exec` for a command)",
        ));
    }
    let runtime = match args.sandbox.runtime(user) {
        Some(runtime) => runtime,
        None => computeragent::runtime::select_for_terminals(config).await?,
    };
    let mut spec = computeragent::BootSpec::new("shell")
        .network(args.sandbox.network(user))
        .limits(args.sandbox.limits(user));
    for name in &user.env_allow {
        if let Ok(value) = std::env::var(name) {
            spec = spec.env(name.clone(), value);
        }
    }
    for (name, value) in extra_env {
        spec = spec.env(name, value);
    }
    let argv = if args.command.is_empty() {
        let shell = if std::path::Path::new("/bin/bash").exists() {
            "bash"
        } else {
            "sh"
        };
        vec![OsString::from(shell), OsString::from("-l")]
    } else {
        args.command.clone()
    };
    // The session's own HOME, so that shell history and the program's settings do not land
    // in the project's change set.
    spec = spec.env("HOME", "/tmp");
    let directory = args.project.directory()?;
    let mut config = config.clone();
    let project = match (directory, args.project.mode) {
        (Some(dir), ProjectMode::Copy) => {
            let mut excludes = user.exclude.clone();
            excludes.extend(args.project.exclude.iter().cloned());
            Some(crate::project::Staged::stage(&dir, excludes)?)
        }
        (Some(dir), mode) => {
            let dir = dir.canonicalize().map_err(|e| {
                computeragent::Error::io(format!("open the project {}", dir.display()), e)
            })?;
            let writable = mode == ProjectMode::Rw;
            if writable {
                eprintln!(
                    "warning: {} is mounted READ-WRITE: the agent changes your files directly, \
                     with no review. The copy mode (the default) shows the changes first.",
                    dir.display()
                );
            }
            let mount = computeragent::ProjectMount {
                path: dir,
                writable,
            };
            spec = spec.env(
                "COMPUTERAGENT_PROJECT",
                mount.path_inside(runtime).display().to_string(),
            );
            config.project_mount = Some(mount);
            None
        }
        (None, _) => None,
    };
    let mounted = config.project_mount.is_some();
    let config = &config;
    // The project's runtime script (agent-vm's name is read too) runs first, in the sandbox,
    // on the terminal; its failure ends the session with its status.
    let argv = if project.is_some() || mounted {
        let mut wrapped: Vec<OsString> = vec![
            "sh".into(),
            "-c".into(),
            RUNTIME_SCRIPT.into(),
            "computeragent-runtime".into(),
        ];
        wrapped.extend(argv);
        wrapped
    } else {
        argv
    };
    let size = size_of(std::io::stdin()).unwrap_or_default();
    let term = std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into());
    let mut request = TerminalRequest::new(argv).size(size).term(term);
    if let Some(project) = &project {
        request = request.seed_moved(project.staging());
    }
    let mut terminal = computeragent::terminal::open(runtime, config, &spec, request).await?;
    let mut signals = match SessionSignals::watch() {
        Ok(signals) => signals,
        Err(e) => {
            let _ = terminal.close().await;
            return Err(e);
        }
    };
    let raw = match RawMode::enter(&signals) {
        Ok(raw) => raw,
        Err(e) => {
            let _ = terminal.close().await;
            return Err(e);
        }
    };
    let ended = attach(&mut terminal, &mut signals).await;
    drop(raw);
    let ended = match ended {
        Ok(ended) => ended,
        Err(e) => {
            let _ = terminal.close().await;
            return Err(e);
        }
    };
    // Ended from outside, nobody can review the session's work now: it is kept as a patch
    // (bounded in time, as whoever sent the signal may not wait long).
    let kept = match (&project, &ended) {
        (Some(project), Ended::Signalled { .. }) => {
            let keep = async {
                let scratch = computeragent::project::ScratchDir::new("workdir")?;
                let workdir = terminal.workdir_as_it_is_now(scratch.path()).await?;
                project.keep_as_patch(&workdir, &crate::project::unreviewed_dir())
            };
            Some(
                match tokio::time::timeout(std::time::Duration::from_secs(20), keep).await {
                    Ok(kept) => kept,
                    Err(_) => Err(computeragent::Error::invalid(
                        "shell",
                        "fetching the workdir took over 20 s",
                    )),
                },
            )
        }
        _ => None,
    };
    let reviewed = match &project {
        Some(project) if matches!(ended, Ended::Exited(_)) => {
            // The program ended by itself: its workdir holds the session's work.
            match computeragent::project::ScratchDir::new("workdir") {
                Ok(scratch) => {
                    let reviewed = match terminal.workdir_on_host(scratch.path()).await {
                        Ok(workdir) => project.review(&workdir, &args.project.review_options()),
                        Err(e) => Err(e),
                    };
                    drop(scratch);
                    reviewed
                }
                Err(e) => Err(e),
            }
        }
        _ => Ok(()),
    };
    let closed = terminal.close().await;
    reviewed?;
    closed?;
    let then = match kept {
        None => "the sandbox is gone".to_owned(),
        Some(Ok(None)) => "the sandbox is gone; it had changed nothing in the project".to_owned(),
        Some(Ok(Some(file))) => format!(
            "the sandbox is gone; what it changed in its copy of the project is kept, \
             unreviewed, in {} (`git apply` it in the project to have it)",
            file.display()
        ),
        Some(Err(e)) => format!(
            "the sandbox is gone, and what it changed in its copy of the project could not be \
             kept: {e}"
        ),
    };
    Ok(exit_code(&ended, &then))
}

/// The CLI's exit status for how a session ended: the program's own, or a shell's for the
/// signal that ended it (said on stderr, with `what_then`).
fn exit_code(ended: &Ended, what_then: &str) -> ExitCode {
    match ended {
        Ended::Exited(code) => ExitCode::from(u8::try_from(*code).unwrap_or(1)),
        Ended::Signalled { name, code } => {
            eprintln!("computeragent: the session was ended by {name}; {what_then}");
            ExitCode::from(*code)
        }
    }
}
