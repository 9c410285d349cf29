//! The `local` substrate: the real harness as a plain host process under `node`.
//!
//! It has **no isolation**: the agent runs as the caller, with the caller's files and network.
//! It exists to prove the harness and protocol end to end on any host and to develop against;
//! every boot logs a warning saying so. It listens on a Unix socket in a fresh per-boot
//! directory and requires the per-boot token, like every runtime.
#![deny(missing_docs)]

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use substrate_core::{
    BootPhase, BootSpec, BootedHarness, Capabilities, CommandSpec, Endpoint, Error, HarnessClient,
    Isolation, Result, Secret, Substrate, SubstrateKind, Teardown, WorkdirPolicy,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Lines of the harness's stderr kept for error messages.
const STDERR_TAIL: usize = 40;

/// Boots the harness as a host process. See the module docs: no isolation.
#[derive(Debug, Clone)]
pub struct LocalSubstrate {
    node: PathBuf,
    node_modules: PathBuf,
    base_dir: PathBuf,
}

impl LocalSubstrate {
    /// A substrate running `node` (looked up on `PATH`) with the staged `node_modules`.
    pub fn new(node_modules: impl Into<PathBuf>) -> Self {
        Self {
            node: PathBuf::from("node"),
            node_modules: node_modules.into(),
            base_dir: std::env::temp_dir().join("computeragent-local"),
        }
    }

    /// Uses this `node` binary.
    pub fn node(mut self, node: impl Into<PathBuf>) -> Self {
        self.node = node.into();
        self
    }

    /// Creates per-boot directories under `dir` instead of the system temp dir.
    pub fn base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = dir.into();
        self
    }

    /// The command that starts the harness for one boot (pure: nothing is spawned).
    pub fn harness_command(
        &self,
        layout: &BootLayout,
        token: &Secret,
        spec: &BootSpec,
    ) -> CommandSpec {
        let mut cmd = CommandSpec::new(&self.node)
            .arg(&layout.harness)
            .env_clear()
            .current_dir(&layout.root);
        // The host's PATH so the engine's tools (bash, git, …) resolve: this runtime is the host.
        if let Some(path) = std::env::var_os("PATH") {
            cmd = cmd.env("PATH", path);
        }
        cmd = cmd
            .env("LANG", "C.UTF-8")
            .env("HOME", &layout.root)
            .env("HARNESS_SOCKET", &layout.socket)
            .env("HARNESS_TOKEN", token.expose())
            .env("HARNESS_WORKDIR_ROOT", &layout.workdir)
            .env("HARNESS_NODE_MODULES", &self.node_modules);
        for (name, value) in spec.engine_envs.iter() {
            cmd = cmd.env(name, value.expose());
        }
        cmd
    }
}

/// Where one boot keeps its files: `<base>/<label>-<random>/{harness.mjs, harness.sock, workdir/}`.
#[derive(Debug, Clone)]
pub struct BootLayout {
    /// The per-boot directory (mode 0700).
    pub root: PathBuf,
    /// The harness script.
    pub harness: PathBuf,
    /// The harness's Unix socket.
    pub socket: PathBuf,
    /// The sessions' workdir root.
    pub workdir: PathBuf,
}

impl BootLayout {
    fn create(base: &Path, label: &str) -> Result<Self> {
        std::fs::create_dir_all(base)
            .map_err(|e| Error::io(format!("create {}", base.display()), e))?;
        let safe_label: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .take(24)
            .collect();
        let dir = tempfile::Builder::new()
            .prefix(&format!(
                "{}-",
                if safe_label.is_empty() {
                    "boot"
                } else {
                    &safe_label
                }
            ))
            .tempdir_in(base)
            .map_err(|e| Error::io(format!("create a boot directory in {}", base.display()), e))?;
        // Keep it until teardown decides: the Teardown owns its removal.
        let root = dir.keep();
        let workdir = root.join("workdir");
        std::fs::create_dir(&workdir)
            .map_err(|e| Error::io(format!("create {}", workdir.display()), e))?;
        let harness = harness_bundle::write_harness(&root)
            .map_err(|e| Error::io("write harness.mjs", std::io::Error::other(e.to_string())))?;
        Ok(Self {
            socket: root.join("harness.sock"),
            harness,
            workdir,
            root,
        })
    }
}

#[async_trait]
impl Substrate for LocalSubstrate {
    fn kind(&self) -> SubstrateKind {
        SubstrateKind::Local
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::minimal(Isolation::None);
        caps.network_host = true;
        caps
    }

    async fn boot_harness(&self, spec: BootSpec) -> Result<BootedHarness> {
        self.check_spec(&spec)?;
        tracing::warn!(
            label = %spec.label,
            "local runtime: the harness runs as a plain host process with NO isolation"
        );
        let token = Secret::random_token()?;
        let layout = spec
            .run_phase(BootPhase::Stage, |_| async {
                BootLayout::create(&self.base_dir, &spec.label)
            })
            .await?;
        let mut teardown = LocalTeardown {
            child: None,
            pgid: None,
            root: Some(layout.root.clone()),
            keep_workdir: spec.workdir == WorkdirPolicy::Keep,
        };
        match self.start(&spec, &layout, &token, &mut teardown).await {
            Ok(()) => Ok(BootedHarness::new(
                SubstrateKind::Local,
                Endpoint::Unix(layout.socket),
                token,
                Box::new(teardown),
            )),
            Err(e) => {
                if let Err(cleanup) = teardown.shutdown().await {
                    tracing::error!(error = %cleanup, "cleanup after a failed boot failed");
                }
                Err(e)
            }
        }
    }
}

impl LocalSubstrate {
    async fn start(
        &self,
        spec: &BootSpec,
        layout: &BootLayout,
        token: &Secret,
        teardown: &mut LocalTeardown,
    ) -> Result<()> {
        let command = self.harness_command(layout, token, spec);
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let mut stderr_task = None;
        spec.run_phase(BootPhase::Spawn, |_| async {
            let mut cmd = Command::from(command.to_command());
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .process_group(0)
                .kill_on_drop(true);
            let mut child = cmd.spawn().map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::NotInstalled {
                    tool: self.node.display().to_string(),
                    hint: String::from(
                        "install Node.js 20 or newer (e.g. `apt-get install nodejs`)",
                    ),
                },
                _ => Error::io(format!("spawn `{command}`"), e),
            })?;
            teardown.pgid = child.id().and_then(|id| i32::try_from(id).ok());
            if let Some(stderr) = child.stderr.take() {
                stderr_task = Some(tokio::spawn(forward_stderr(stderr, stderr_tail.clone())));
            }
            teardown.child = Some(child);
            Ok(())
        })
        .await?;

        let client =
            HarnessClient::new(Endpoint::Unix(layout.socket.clone()), Some(token.clone()))?;
        let deadline = spec.deadlines.get(BootPhase::Health);
        spec.run_phase(BootPhase::Health, |probe| async move {
            let Some(child) = teardown.child.as_mut() else {
                return Err(Error::invalid("boot", "no harness process"));
            };
            tokio::select! {
                health = client.wait_healthy(deadline, Some(&probe)) => health.map(drop),
                status = child.wait() => {
                    let status = status.map_err(|e| Error::io("wait for the harness", e))?;
                    // Let the forwarder read the dead process's last words.
                    if let Some(task) = stderr_task {
                        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), task).await;
                    }
                    Err(Error::ProcessFailed {
                        command: command.to_string(),
                        status: status.to_string(),
                        stderr: tail_text(&stderr_tail),
                    })
                }
            }
        })
        .await
    }
}

fn tail_text(tail: &Mutex<VecDeque<String>>) -> String {
    tail.lock()
        .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

/// Forwards the harness's JSON log lines to `tracing` and keeps the last few for errors.
async fn forward_stderr(stderr: tokio::process::ChildStderr, tail: Arc<Mutex<VecDeque<String>>>) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(target: "harness", "{line}");
        if let Ok(mut t) = tail.lock() {
            if t.len() == STDERR_TAIL {
                t.pop_front();
            }
            t.push_back(line);
        }
    }
}

/// Stops the harness's whole process group and removes the boot directory.
#[derive(Debug)]
struct LocalTeardown {
    child: Option<Child>,
    pgid: Option<i32>,
    root: Option<PathBuf>,
    keep_workdir: bool,
}

impl LocalTeardown {
    fn signal_group(&self, signal: nix::sys::signal::Signal) {
        if let Some(pgid) = self.pgid {
            // ESRCH (already gone) is the expected outcome of a second call.
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), signal);
        }
    }

    fn remove_files(&mut self) -> Result<()> {
        let Some(root) = self.root.take() else {
            return Ok(());
        };
        if self.keep_workdir {
            tracing::info!(dir = %root.display(), "keeping the boot directory as asked");
            return Ok(());
        }
        match std::fs::remove_dir_all(&root) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => {
                let err = Error::io(format!("remove {}", root.display()), e);
                self.root = Some(root);
                Err(err)
            }
        }
    }
}

/// A process: its pid and its start time (so a reused pid is never mistaken for it).
type ProcessId = (i32, u64);

/// Every live descendant of `root`, from /proc (Linux; empty elsewhere). Tools an engine
/// starts in a session of their own leave the harness's process group, not its process tree.
fn descendants(root: i32) -> Vec<ProcessId> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let table: Vec<(i32, i32, u64)> = dir
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let (ppid, start) = stat_of(pid)?;
            Some((pid, ppid, start))
        })
        .collect();
    let mut found: Vec<ProcessId> = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid, start) in &table {
            if ppid == parent && !found.iter().any(|(p, _)| *p == pid) {
                found.push((pid, start));
                frontier.push(pid);
            }
        }
    }
    found
}

/// `(ppid, start time)` from `/proc/PID/stat` (fields 4 and 22; the name may hold spaces).
fn stat_of(pid: i32) -> Option<(i32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    Some((fields.get(1)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

/// Whether the process is still the one recorded (alive, same start time).
fn still_running((pid, start): ProcessId) -> bool {
    stat_of(pid).is_some_and(|(_, s)| s == start)
}

#[async_trait]
impl Teardown for LocalTeardown {
    async fn shutdown(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let mut tree = self.pgid.map(descendants).unwrap_or_default();
            // SIGTERM lets the harness cancel its engines; the engine CLI and its tools are in
            // the same process group, so the group signal reaches them too.
            self.signal_group(nix::sys::signal::Signal::SIGTERM);
            if tokio::time::timeout(std::time::Duration::from_secs(3), child.wait())
                .await
                .is_err()
            {
                tracing::warn!("harness did not exit within 3 s of SIGTERM; killing");
            }
            // Whatever the tree held before or holds now — tools in sessions of their own
            // included — goes with the group.
            if let Some(pgid) = self.pgid {
                tree.extend(descendants(pgid));
            }
            self.signal_group(nix::sys::signal::Signal::SIGKILL);
            for &(pid, start) in &tree {
                if still_running((pid, start)) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            let _ = child.wait().await;
            // SIGKILL is delivered, not yet done: wait until the engine and its tools are gone
            // too, so that "shut down" means no process is left.
            if let Some(pgid) = self.pgid {
                let group = nix::unistd::Pid::from_raw(-pgid);
                for _ in 0..200 {
                    let group_gone = nix::sys::signal::kill(group, None).is_err();
                    if group_gone && !tree.iter().any(|p| still_running(*p)) {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
            self.pgid = None;
        }
        self.remove_files()
    }
}

impl Drop for LocalTeardown {
    /// Best effort when `shutdown` never ran: kill the group, remove the files.
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal_group(nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.remove_files();
    }
}
