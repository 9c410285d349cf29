//! The high-level agent: one sandbox, one engine session in it, many turns, its files — and
//! the sandbox gone when the agent is disposed of (or, best effort, dropped).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use substrate_core::client::{PermissionHandler, SessionSummary, Turn, TurnOutcome};
use substrate_core::protocol::{
    CreateSession, ENGINE_CLAUDE_AGENT_SDK, EngineOptions, EntryType, TreeEntry,
};
use substrate_core::{
    BootSpec, BootedHarness, ChatSession, Error, HarnessClient, NetworkPolicy, ProgressSink,
    ResourceLimits, Result, Substrate, SubstrateKind, WorkdirPolicy,
};

use crate::runtime::{self, RuntimeConfig, RuntimeName};

/// Files larger than this are not copied from a local source directory (a build output, a
/// dataset): the agent's workdir is for the project, not its artifacts.
const MAX_SOURCE_FILE: u64 = 64 << 20;

/// Where the agent's files come from.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A host directory, copied into the workdir (symlinks and files over 64 MiB skipped,
    /// `.git` included).
    Dir(PathBuf),
    /// A git repository, cloned shallow on the host (with the host's credentials) and copied
    /// in, so the sandbox needs no network for it.
    Git {
        /// Clone URL.
        url: String,
        /// Branch or tag.
        reference: Option<String>,
    },
    /// Files given inline: (path in the workdir, content).
    Files(Vec<(String, Vec<u8>)>),
}

/// Builds an [`Agent`]. Nothing is booted until [`AgentBuilder::start`].
pub struct AgentBuilder {
    runtime: Option<RuntimeName>,
    substrate: Option<Arc<dyn Substrate>>,
    config: RuntimeConfig,
    engine: String,
    source: Option<Source>,
    spec: BootSpec,
    options: EngineOptions,
    permissions: Option<Arc<dyn PermissionHandler>>,
}

impl std::fmt::Debug for AgentBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentBuilder")
            .field("runtime", &self.runtime)
            .field("engine", &self.engine)
            .field("source", &self.source)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl AgentBuilder {
    fn new() -> Self {
        Self {
            runtime: None,
            substrate: None,
            config: RuntimeConfig::default(),
            engine: ENGINE_CLAUDE_AGENT_SDK.into(),
            source: None,
            spec: BootSpec::new("agent").network(NetworkPolicy::None),
            options: EngineOptions::default(),
            permissions: None,
        }
    }

    /// Runs on this runtime instead of the best isolating one available here. `local` (no
    /// isolation) only ever runs when named here, and warns on every boot.
    pub fn runtime(mut self, runtime: RuntimeName) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Runs on this substrate (a runtime configured by the caller).
    pub fn substrate(mut self, substrate: Arc<dyn Substrate>) -> Self {
        self.substrate = Some(substrate);
        self
    }

    /// Where runtimes find their images and staged modules.
    pub fn runtime_config(mut self, config: RuntimeConfig) -> Self {
        self.config = config;
        self
    }

    /// The engine (default `claude-agent-sdk`).
    pub fn engine(mut self, engine: impl Into<String>) -> Self {
        self.engine = engine.into();
        self
    }

    /// The agent's files.
    pub fn source(mut self, source: Source) -> Self {
        self.source = Some(source);
        self
    }

    /// A variable for the engine. A model key (`ANTHROPIC_API_KEY`) stays on the host: the
    /// runtime's broker fills it in, the sandbox sees a placeholder.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.spec = self.spec.env(name, value);
        self
    }

    /// The model.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.options.model = Some(model.into());
        self
    }

    /// Engine options (system prompt, turns, budget, tools, …); `model` set before is kept
    /// unless `options` names one.
    pub fn options(mut self, options: EngineOptions) -> Self {
        let model = self.options.model.take();
        self.options = options;
        if self.options.model.is_none() {
            self.options.model = model;
        }
        self
    }

    /// The network policy (default [`NetworkPolicy::None`]: the model is still reached through
    /// the host's broker). A runtime that cannot enforce the policy refuses to boot.
    pub fn network(mut self, policy: NetworkPolicy) -> Self {
        self.spec = self.spec.network(policy);
        self
    }

    /// Resource limits.
    pub fn limits(mut self, limits: ResourceLimits) -> Self {
        self.spec = self.spec.limits(limits);
        self
    }

    /// Keep or remove the sandbox's workdir on the host at shutdown (default: remove).
    pub fn workdir(mut self, policy: WorkdirPolicy) -> Self {
        self.spec = self.spec.workdir(policy);
        self
    }

    /// A label for the sandbox (its name carries it).
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.spec.label = label.into();
        self
    }

    /// Where boot progress goes.
    pub fn progress(mut self, sink: ProgressSink) -> Self {
        self.spec = self.spec.progress(sink);
        self
    }

    /// The whole boot spec (limits, deadlines, audit, brokered upstreams, …), replacing what
    /// `env`, `network`, `limits`, `label` and `progress` set.
    pub fn boot_spec(mut self, spec: BootSpec) -> Self {
        self.spec = spec;
        self
    }

    /// Decides the engine's tool permission requests (default: allow all; the sandbox is the
    /// boundary).
    pub fn permissions(mut self, handler: impl PermissionHandler + 'static) -> Self {
        self.permissions = Some(Arc::new(handler));
        self
    }

    /// Boots the sandbox, creates the session, copies the source in and starts the engine.
    /// Every failure after the boot shuts the sandbox down again.
    pub async fn start(self) -> Result<Agent> {
        let files = match &self.source {
            Some(source) => source_files(source).await?,
            None => Vec::new(),
        };
        let substrate = match self.substrate {
            Some(substrate) => substrate,
            None => {
                let name = match self.runtime {
                    Some(name) => name,
                    None => runtime::select(&self.config).await?,
                };
                if name == RuntimeName::Local {
                    tracing::warn!(
                        "the local runtime has NO isolation: the agent runs as you, with your \
                         files and network"
                    );
                }
                runtime::open(name, &self.config).await?
            }
        };
        let harness = substrate.boot_harness(self.spec).await?;
        let started = async {
            let client = harness.client()?;
            let request = CreateSession {
                options: Some(self.options),
                ..CreateSession::new(self.engine)
            };
            let created = client.create_session(&request).await?;
            for (path, content) in files {
                client
                    .write_file(&created.session_id, &path, content, None)
                    .await?;
            }
            let chat = ChatSession::attach(client.clone(), created.session_id).await?;
            Ok::<_, Error>(match self.permissions {
                Some(handler) => chat.with_permissions(ArcHandler(handler)),
                None => chat,
            })
        }
        .await;
        match started {
            Ok(chat) => Ok(Agent {
                harness: Some(harness),
                chat: Some(chat),
            }),
            Err(e) => {
                if let Err(cleanup) = harness.shutdown().await {
                    tracing::error!(error = %cleanup, "shutting the sandbox down failed");
                }
                Err(e)
            }
        }
    }
}

/// A shared handler as a handler.
struct ArcHandler(Arc<dyn PermissionHandler>);

#[async_trait::async_trait]
impl PermissionHandler for ArcHandler {
    async fn decide(
        &self,
        request: &substrate_core::client::PermissionRequest,
    ) -> substrate_core::protocol::PermissionDecision {
        self.0.decide(request).await
    }
}

/// An agent in a sandbox of its own. Talk to it with [`Agent::chat`] or [`Agent::ask`]; take
/// its files with [`Agent::fetch_artifact`]; end it with [`Agent::dispose`].
#[derive(Debug)]
pub struct Agent {
    harness: Option<BootedHarness>,
    chat: Option<ChatSession>,
}

impl Agent {
    /// A builder.
    pub fn builder() -> AgentBuilder {
        AgentBuilder::new()
    }

    /// Boots an agent with `builder`, gives it `prompt`, waits for the answer, and disposes of
    /// it; returns the turn and every file of its workdir, read before the sandbox went.
    pub async fn run_task(builder: AgentBuilder, prompt: &str) -> Result<TaskResult> {
        let mut agent = builder.start().await?;
        let result = async {
            let outcome = agent.ask(prompt).await?;
            let mut files = Vec::new();
            for entry in agent.list_workdir().await? {
                if entry.entry_type == EntryType::File {
                    let content = agent.fetch_artifact(&entry.path).await?;
                    files.push((entry.path, content));
                }
            }
            Ok::<_, Error>((outcome, files))
        }
        .await;
        let summary = agent.dispose().await;
        let (outcome, files) = result?;
        Ok(TaskResult {
            outcome,
            files,
            summary: summary?,
        })
    }

    /// The runtime it runs on.
    pub fn runtime(&self) -> Option<SubstrateKind> {
        self.harness.as_ref().map(BootedHarness::kind)
    }

    /// The engine session's id.
    pub fn session_id(&self) -> Result<&str> {
        Ok(self.session()?.session_id())
    }

    fn session(&self) -> Result<&ChatSession> {
        self.chat.as_ref().ok_or(Error::ShutDown)
    }

    fn client(&self) -> Result<&HarnessClient> {
        Ok(self.session()?.client())
    }

    /// A program on a terminal inside the agent's sandbox, beside its engine (a debug shell
    /// into a live agent): read, type, resize, wait. Closing it ends the program; the agent
    /// goes on. bwrap (as root), tart and lima.
    pub async fn open_terminal(
        &self,
        request: substrate_core::TerminalRequest,
    ) -> Result<substrate_core::Terminal> {
        self.harness
            .as_ref()
            .ok_or(Error::ShutDown)?
            .open_terminal(request)
            .await
    }

    /// What opens terminals in the agent's sandbox, usable apart from the agent (while a turn
    /// holds it, say); `None` on runtimes without terminals.
    pub fn terminal_host(&self) -> Option<std::sync::Arc<dyn substrate_core::TerminalHost>> {
        self.harness.as_ref().and_then(BootedHarness::terminal_host)
    }

    /// A client of the agent's harness (for file routes from elsewhere while it runs).
    pub fn harness_client(&self) -> Result<HarnessClient> {
        self.client().cloned()
    }

    /// Sends `message`; read the turn's events with [`Turn::next`] as they stream.
    pub async fn chat(&mut self, message: &str) -> Result<Turn<'_>> {
        self.chat
            .as_mut()
            .ok_or(Error::ShutDown)?
            .send(message)
            .await
    }

    /// Sends `message` and waits for the turn's end.
    pub async fn ask(&mut self, message: &str) -> Result<TurnOutcome> {
        self.chat
            .as_mut()
            .ok_or(Error::ShutDown)?
            .ask(message)
            .await
    }

    /// Interrupts the engine; the session ends `cancelled`.
    pub async fn cancel(&self) -> Result<()> {
        self.session()?.cancel().await
    }

    /// A file of the workdir.
    pub async fn fetch_artifact(&self, path: &str) -> Result<Bytes> {
        let chat = self.session()?;
        chat.client().read_file(chat.session_id(), path).await
    }

    /// Writes a file into the workdir.
    pub async fn write_artifact(&self, path: &str, content: impl Into<Bytes>) -> Result<()> {
        let chat = self.session()?;
        chat.client()
            .write_file(chat.session_id(), path, content.into(), None)
            .await
            .map(drop)
    }

    /// Every file, directory and symlink of the workdir, sorted by path.
    pub async fn list_workdir(&self) -> Result<Vec<TreeEntry>> {
        let chat = self.session()?;
        Ok(self
            .client()?
            .tree(chat.session_id(), ".", 0)
            .await?
            .entries)
    }

    /// Ends the session and shuts the sandbox down; returns how the session ended.
    pub async fn dispose(mut self) -> Result<SessionSummary> {
        let summary = match self.chat.take() {
            Some(chat) => chat.finish().await,
            None => Err(Error::ShutDown),
        };
        if let Some(harness) = self.harness.take() {
            harness.shutdown().await?;
        }
        summary
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let Some(harness) = self.harness.take() else {
            return;
        };
        // Best effort: shut down on the runtime we were dropped in; runtimes' own teardowns
        // also clean up synchronously when they are dropped unshut.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if let Err(e) = harness.shutdown().await {
                        tracing::error!(error = %e, "shutting down a dropped agent's sandbox failed");
                    }
                });
            }
            Err(_) => drop(harness),
        }
    }
}

/// What [`Agent::run_task`] returns.
#[derive(Debug, Clone)]
pub struct TaskResult {
    /// The turn.
    pub outcome: TurnOutcome,
    /// Every file of the workdir: (path, content).
    pub files: Vec<(String, Bytes)>,
    /// How the session ended.
    pub summary: SessionSummary,
}

/// The source's files, read on the host.
async fn source_files(source: &Source) -> Result<Vec<(String, Vec<u8>)>> {
    match source {
        Source::Files(files) => Ok(files.clone()),
        Source::Dir(dir) => {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || read_tree(&dir))
                .await
                .map_err(|e| Error::invalid("source", format!("reading it failed: {e}")))?
        }
        Source::Git { url, reference } => {
            let checkout = tempdir_for_clone()?;
            let mut cmd = tokio::process::Command::new("git");
            cmd.args(["clone", "--depth", "1", "--quiet"]);
            if let Some(reference) = reference {
                cmd.args(["--branch", reference]);
            }
            let out = cmd
                .arg("--")
                .arg(url)
                .arg(&checkout)
                .env("GIT_TERMINAL_PROMPT", "0")
                .kill_on_drop(true)
                .output()
                .await
                .map_err(|e| Error::io("run git", e))?;
            let result = if out.status.success() {
                let dir = checkout.clone();
                tokio::task::spawn_blocking(move || read_tree(&dir))
                    .await
                    .map_err(|e| Error::invalid("source", format!("reading it failed: {e}")))?
            } else {
                Err(Error::invalid(
                    format!("git source `{url}`"),
                    format!(
                        "`git clone` failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                ))
            };
            let _ = std::fs::remove_dir_all(&checkout);
            result
        }
    }
}

fn tempdir_for_clone() -> Result<PathBuf> {
    let token = substrate_core::Secret::random_token()?;
    let dir = std::env::temp_dir().join(format!(
        "computeragent-clone-{}",
        token.expose().chars().take(12).collect::<String>()
    ));
    Ok(dir)
}

/// Every regular file under `root` (symlinks and oversize files skipped), with paths relative
/// to it.
fn read_tree(root: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let meta = std::fs::metadata(root)
        .map_err(|e| Error::io(format!("read the source directory {}", root.display()), e))?;
    if !meta.is_dir() {
        return Err(Error::invalid(
            "source",
            format!("{} is not a directory", root.display()),
        ));
    }
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|e| Error::io(format!("read {}", dir.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(format!("read {}", dir.display()), e))?;
            let path = entry.path();
            let kind = entry
                .file_type()
                .map_err(|e| Error::io(format!("inspect {}", path.display()), e))?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                if size > MAX_SOURCE_FILE {
                    tracing::warn!(file = %path.display(), size, "not copied into the workdir: over 64 MiB");
                    continue;
                }
                let relative = path
                    .strip_prefix(root)
                    .map_err(|_| Error::invalid("source", "a path left the source directory"))?;
                let Some(relative) = relative.to_str() else {
                    return Err(Error::invalid(
                        "source",
                        format!("{} is not a UTF-8 path", path.display()),
                    ));
                };
                let content = std::fs::read(&path)
                    .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
                files.push((relative.to_owned(), content));
            }
        }
    }
    files.sort();
    Ok(files)
}
