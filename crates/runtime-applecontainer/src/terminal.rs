//! Terminals in a container: `container exec --interactive --tty` on a PTY the host owns (the
//! CLI is its session leader, the replica its controlling terminal), in a workdir of its own
//! under the harness's workdir root, seeded and read back as tar through `container exec`.
//! Its variables (the engine's placeholders and URLs, `TERM`) reach it in a private env file,
//! never in an argv.

use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use async_trait::async_trait;
use substrate_core::{
    BootedHarness, CommandEnd, EnvVars, Error, ExitReason, Result, Secret, Terminal, TerminalHost,
    TerminalRequest, TerminalSandbox,
};

use crate::argv::Container;

/// What opens terminals in one running container.
#[derive(Debug, Clone)]
pub(crate) struct ContainerTerminals {
    pub(crate) cli: Container,
    /// The container's name.
    pub(crate) name: String,
    /// A private host directory for the terminals' env files (the boot's run directory).
    pub(crate) env_dir: PathBuf,
    /// The engine's variables (placeholders for brokered keys, never a key).
    pub(crate) engine_envs: EnvVars,
}

#[async_trait]
impl TerminalHost for ContainerTerminals {
    async fn open_terminal(&self, request: TerminalRequest) -> Result<Terminal> {
        self.open(request, None).await
    }
}

impl ContainerTerminals {
    /// Starts `request`'s program in the container; with `owner`, the container is that
    /// boot's alone and goes when the terminal is closed.
    pub(crate) async fn open(
        &self,
        request: TerminalRequest,
        owner: Option<BootedHarness>,
    ) -> Result<Terminal> {
        let opened = self.start(request).await;
        match opened {
            Ok((parts, sandbox)) => {
                let (output, input, resizer) = parts;
                let mut sandbox = sandbox;
                sandbox.owner = owner;
                Ok(Terminal::new(output, input, resizer, Box::new(sandbox)))
            }
            Err(e) => {
                if let Some(owner) = owner
                    && let Err(cleanup) = owner.shutdown().await
                {
                    tracing::error!(error = %cleanup, "removing the container failed");
                }
                Err(e)
            }
        }
    }

    #[allow(clippy::type_complexity)]
    async fn start(
        &self,
        request: TerminalRequest,
    ) -> Result<(
        (
            substrate_core::OutputStream,
            substrate_core::InputStream,
            substrate_core::Resizer,
        ),
        ContainerTerminal,
    )> {
        request.check()?;
        let id = random_id()?;
        let workdir = format!(
            "{}/terminal-{id}",
            crate::ImageRecipe::for_this_build().workdir_root()
        );
        let mut terminal = ContainerTerminal {
            cli: self.cli.clone(),
            name: self.name.clone(),
            workdir: workdir.clone(),
            env_file: None,
            child: None,
            end: None,
            owner: None,
        };
        let result = async {
            exec_checked(
                &self.cli,
                &self.name,
                &["mkdir", "-p", &workdir],
                None,
                "make the terminal's workdir",
            )
            .await?;
            if let Some(seed) = &request.seed {
                seed_workdir(&self.cli, &self.name, seed, &workdir).await?;
            }
            let env_file = self.env_dir.join(format!("terminal-{id}.env"));
            terminal.env_file = Some(env_file.clone());
            write_env_file(&env_file, &self.engine_envs, &request.term)?;
            let (main, replica) = substrate_core::pty::open_pty(request.size)?;
            let cmd = self
                .cli
                .exec_terminal(&self.name, &env_file, &workdir, &request.argv);
            terminal.child = Some(spawn_on_terminal(cmd.to_command(), replica)?);
            substrate_core::pty::streams(main)
        }
        .await;
        match result {
            Ok(streams) => Ok((streams, terminal)),
            Err(e) => {
                let _ = terminal.close().await;
                Err(e)
            }
        }
    }
}

/// A fresh name for a terminal's workdir and env file.
fn random_id() -> Result<String> {
    Ok(Secret::random_token()?
        .expose()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect())
}

/// Starts `command` with `replica` as its stdin, stdout, stderr and controlling terminal, in
/// a session of its own (so the terminal's signals go to it, never to the caller).
fn spawn_on_terminal(
    command: std::process::Command,
    replica: OwnedFd,
) -> Result<tokio::process::Child> {
    let io = |e| Error::io("open the container's terminal", e);
    let stdin = replica.try_clone().map_err(io)?;
    let stdout = replica.try_clone().map_err(io)?;
    let mut command = tokio::process::Command::from(command);
    command
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(replica))
        .kill_on_drop(true);
    // SAFETY: between fork and exec the child only makes two system calls (setsid, and the
    // ioctl that takes its stdin as the controlling terminal), which are async-signal-safe.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(|| {
            rustix::process::setsid().map_err(std::io::Error::from)?;
            rustix::process::ioctl_tiocsctty(std::io::stdin()).map_err(std::io::Error::from)
        });
    }
    command
        .spawn()
        .map_err(|e| Error::io("start `container exec`", e))
}

/// The terminal's variables as a `KEY=VALUE` file only the owner reads, created fresh.
fn write_env_file(path: &Path, engine_envs: &EnvVars, term: &str) -> Result<()> {
    let mut text = String::new();
    for (key, value) in engine_envs
        .expose_map()
        .into_iter()
        .chain([("TERM".to_owned(), term.to_owned())])
    {
        if value.contains(['\n', '\r', '\0']) || key.contains(['=', '\n', '\0']) {
            return Err(Error::invalid(
                format!("terminal variable `{key}`"),
                "an env file cannot carry a line break or NUL",
            ));
        }
        text.push_str(&format!("{key}={value}\n"));
    }
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    file.write_all(text.as_bytes())
        .map_err(|e| Error::io(format!("write {}", path.display()), e))
}

/// Runs `command` in the container; fails with its output unless it succeeds.
async fn exec_checked(
    cli: &Container,
    name: &str,
    command: &[&str],
    stdin: Option<std::process::Stdio>,
    what: &str,
) -> Result<Vec<u8>> {
    let spec = cli.exec(
        name,
        None,
        None,
        &command.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
    );
    let mut cmd = tokio::process::Command::from(spec.to_command());
    cmd.stdin(stdin.unwrap_or_else(Stdio::null))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = cmd
        .output()
        .await
        .map_err(|e| Error::io(format!("{what}: start `{spec}`"), e))?;
    if !out.status.success() {
        return Err(Error::ProcessFailed {
            command: format!("{spec} ({what})"),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(out.stdout)
}

/// Streams `seed`'s tree into `workdir` in the container (host `tar`, the container's `tar`).
async fn seed_workdir(cli: &Container, name: &str, seed: &Path, workdir: &str) -> Result<()> {
    let mut tar = substrate_core::archive::HostTar::pack(seed)?;
    let stdin: Stdio = tar
        .take_output()?
        .try_into()
        .map_err(|e| Error::io("pipe `tar` into the container", e))?;
    let unpacked = exec_checked(
        cli,
        name,
        &["tar", "-C", workdir, "-xf", "-"],
        Some(stdin),
        "copy the project into the container",
    )
    .await;
    tar.finish().await?;
    unpacked.map(drop)
}

/// A program on a terminal in a container.
#[derive(Debug)]
struct ContainerTerminal {
    cli: Container,
    name: String,
    workdir: String,
    env_file: Option<PathBuf>,
    child: Option<tokio::process::Child>,
    end: Option<CommandEnd>,
    /// The container's boot, when the container is this terminal's alone.
    owner: Option<BootedHarness>,
}

#[async_trait]
impl TerminalSandbox for ContainerTerminal {
    async fn wait(&mut self) -> Result<CommandEnd> {
        if let Some(end) = self.end {
            return Ok(end);
        }
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| Error::invalid("terminal", "the terminal is closed"))?;
        // Cancel-safe: tokio's `Child::wait` can be given up and called again.
        let status = child
            .wait()
            .await
            .map_err(|e| Error::io("wait for `container exec`", e))?;
        use std::os::unix::process::ExitStatusExt as _;
        let end = match (status.code(), status.signal()) {
            (Some(code), _) => CommandEnd {
                code: Some(code),
                reason: ExitReason::Exited(code),
            },
            (None, signal) => {
                let signal = signal.unwrap_or(0);
                CommandEnd {
                    code: Some(128 + signal),
                    reason: ExitReason::Signaled(signal),
                }
            }
        };
        self.end = Some(end);
        Ok(end)
    }

    async fn workdir_on_host(&mut self, scratch: &Path) -> Result<PathBuf> {
        let archive = scratch.join("workdir.tar");
        let dest = scratch.join("workdir");
        let tar = exec_checked(
            &self.cli,
            &self.name,
            &["tar", "-C", &self.workdir, "-cf", "-", "."],
            None,
            "read the terminal's workdir",
        )
        .await?;
        std::fs::write(&archive, tar)
            .map_err(|e| Error::io(format!("write {}", archive.display()), e))?;
        let unpack_to = dest.clone();
        tokio::task::spawn_blocking(move || substrate_core::archive::unpack(&archive, &unpack_to))
            .await
            .map_err(|e| Error::io("unpack the workdir", std::io::Error::other(e.to_string())))??;
        Ok(dest)
    }

    async fn close(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            if self.end.is_none() {
                // The exec and whatever it started on the terminal (its session's group).
                if let Some(pid) = child
                    .id()
                    .and_then(|p| rustix::process::Pid::from_raw(p as i32))
                {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
                let _ = child.start_kill();
            }
            let _ = child.wait().await;
        }
        if let Some(file) = self.env_file.take() {
            let _ = std::fs::remove_file(file);
        }
        match self.owner.take() {
            // The container goes, and its workdir with it.
            Some(owner) => owner.shutdown().await,
            None => {
                let workdir = self.workdir.clone();
                let _ = exec_checked(
                    &self.cli,
                    &self.name,
                    &["rm", "-rf", &workdir],
                    None,
                    "remove the terminal's workdir",
                )
                .await;
                Ok(())
            }
        }
    }
}
