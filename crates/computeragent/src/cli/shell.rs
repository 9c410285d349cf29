//! `computeragent shell [-- PROGRAM…]`: a login shell (or any program) in a fresh sandbox, on
//! a real terminal. The caller's terminal goes raw for the session and is restored on every
//! way out (the program's exit, an error, SIGTERM or SIGHUP, a panic); its size follows every
//! resize; Ctrl-C and friends reach the program, not this command; the program's exit status
//! becomes this command's.

use std::ffi::OsString;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

use computeragent::terminal::{Terminal, size_of};
use computeragent::{RuntimeConfig, RuntimeName};
use rustix::termios::{OptionalActions, Termios, tcgetattr, tcsetattr};

use crate::args;

/// Arguments of `shell`.
#[derive(Debug, clap::Args)]
pub struct ShellArgs {
    /// Runtime (default bwrap; interactive sessions run there so far), network policy and
    /// limits.
    #[command(flatten)]
    sandbox: args::SandboxArgs,
    #[command(flatten)]
    project: ProjectArgs,
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
    /// Apply the changes without asking.
    #[arg(long, conflicts_with = "no_apply")]
    apply: bool,
    /// Never apply the changes (show them; --patch keeps them).
    #[arg(long)]
    no_apply: bool,
    /// Write the changes as a patch (git format) to FILE.
    #[arg(long, value_name = "FILE")]
    patch: Option<PathBuf>,
}

impl ProjectArgs {
    fn review_options(&self) -> crate::project::Review {
        crate::project::Review {
            apply: self.apply,
            no_apply: self.no_apply,
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

/// Runs the project's runtime script, if it has one, then the program.
const RUNTIME_SCRIPT: &str = r#"for script in .computeragent/runtime.sh .claude-vm.runtime.sh; do
  if [ -f "$script" ]; then
    echo "computeragent: running $script" >&2
    sh "$script" || { status=$?; echo "computeragent: $script failed with status $status" >&2; exit $status; }
    break
  fi
done
exec "$@""#;

/// The caller's terminal settings before raw mode, for whoever restores them first.
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

fn restore() {
    if let Ok(mut saved) = SAVED.lock()
        && let Some(termios) = saved.take()
    {
        let _ = tcsetattr(std::io::stdin(), OptionalActions::Now, &termios);
    }
}

/// Raw mode on stdin's terminal until dropped.
struct RawMode;

impl RawMode {
    fn enter() -> computeragent::Result<Self> {
        let original = tcgetattr(std::io::stdin())
            .map_err(|e| computeragent::Error::io("read the terminal's settings", e.into()))?;
        let mut raw = original.clone();
        raw.make_raw();
        if let Ok(mut saved) = SAVED.lock() {
            *saved = Some(original);
        }
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        tcsetattr(std::io::stdin(), OptionalActions::Now, &raw)
            .map_err(|e| computeragent::Error::io("make the terminal raw", e.into()))?;
        Ok(Self)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

/// Arguments of `claude`.
#[derive(Debug, clap::Args)]
pub struct ClaudeArgs {
    /// Runtime (default bwrap), network policy and limits.
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
const dir = "/opt/harness/node_modules/@anthropic-ai";
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
    session(args, config, user, Vec::new()).await
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
    let runtime = args.sandbox.runtime(user).unwrap_or(RuntimeName::Bwrap);
    let spec = computeragent::BootSpec::new("shell")
        .network(args.sandbox.network(user))
        .limits(args.sandbox.limits(user))
        .env(
            "TERM",
            std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into()),
        );
    let mut spec = spec;
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
    let spec = spec.env("HOME", "/tmp");
    let project = match args.project.directory()? {
        Some(dir) => Some(crate::project::Staged::stage(&dir)?),
        None => None,
    };
    let spec = if project.is_some() {
        spec.workdir(computeragent::core::WorkdirPolicy::Keep)
    } else {
        spec
    };
    // The project's runtime script (agent-vm's name is read too) runs first, in the sandbox,
    // on the terminal; its failure ends the session with its status.
    let argv = if project.is_some() {
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
    let terminal = Terminal::open(
        runtime,
        config,
        &spec,
        argv,
        size,
        project.as_ref().map(|p| p.staging()),
    )
    .await?;
    let workdir = terminal.workdir();
    let raw = RawMode::enter()?;

    // Keys to the program, its output to ours: plain threads on blocking descriptors.
    let mut to_program = terminal.writer()?;
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 || to_program.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let mut from_program = terminal.reader()?;
    let output = std::thread::spawn(move || {
        let mut stdout = std::io::stdout().lock();
        let mut buf = [0u8; 4096];
        // EIO once the program and its children closed the terminal.
        while let Ok(n) = from_program.read(&mut buf) {
            if n == 0 || stdout.write_all(&buf[..n]).is_err() {
                break;
            }
            let _ = stdout.flush();
        }
    });

    let signal = |kind| {
        tokio::signal::unix::signal(kind).map_err(|e| computeragent::Error::io("watch signals", e))
    };
    let mut resized = signal(tokio::signal::unix::SignalKind::window_change())?;
    let mut term = signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hangup = signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut interrupt = signal(tokio::signal::unix::SignalKind::interrupt())?;
    let resizer = terminal.writer()?;
    // Boxed, so that dropping it (a signal from outside) kills the sandbox before the output
    // thread is joined.
    let mut wait = Box::pin(terminal.wait());
    let code = loop {
        tokio::select! {
            end = &mut wait => {
                let end = end?;
                break end.code.unwrap_or(128);
            }
            _ = resized.recv() => {
                if let Some(size) = size_of(std::io::stdin()) {
                    let _ = rustix::termios::tcsetwinsize(&resizer, rustix::termios::Winsize {
                        ws_row: size.rows,
                        ws_col: size.cols,
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    });
                }
            }
            // Sent from outside (the terminal's own Ctrl-C is a byte for the program now):
            // dropping the wait kills the sandbox.
            _ = term.recv() => break 143,
            _ = hangup.recv() => break 129,
            _ = interrupt.recv() => break 130,
        }
    };
    drop(wait);
    let _ = output.join();
    drop(raw);
    if let (Some(project), Some(workdir)) = (&project, &workdir) {
        let reviewed = project.review(workdir, &args.project.review_options());
        // The kept boot directory goes once its changes are read.
        if let Some(boot) = workdir.parent() {
            let _ = std::fs::remove_dir_all(boot);
        }
        reviewed?;
    }
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
