//! The `Substrate` trait: boot the harness inside an isolation boundary, hand back how to reach
//! it, tear everything down.

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;
use tokio::sync::Mutex;

use crate::boot::BootSpec;
use crate::client::HarnessClient;
use crate::secret::Secret;
use crate::{Error, Result};

/// Which runtime a substrate is.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubstrateKind {
    /// The harness as a plain host process: no isolation at all. Development only.
    Local,
    /// Linux namespaces via bubblewrap.
    Bwrap,
    /// Tart VMs on Apple Silicon.
    Tart,
    /// Lima VMs.
    Lima,
    /// Apple's `container` (one lightweight VM per container).
    AppleContainer,
}

impl SubstrateKind {
    /// The runtime's stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            SubstrateKind::Local => "local",
            SubstrateKind::Bwrap => "bwrap",
            SubstrateKind::Tart => "tart",
            SubstrateKind::Lima => "lima",
            SubstrateKind::AppleContainer => "apple-container",
        }
    }
}

impl fmt::Display for SubstrateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The boundary a substrate puts between the agent and the host.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isolation {
    /// None: the agent runs as the caller, with the caller's files, network and secrets.
    None,
    /// Kernel namespaces, dropped capabilities, seccomp: a shared kernel.
    Namespaces,
    /// A virtual machine with its own kernel.
    VirtualMachine,
}

/// What a substrate can do, so callers can choose one and fail early.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// The isolation boundary.
    pub isolation: Isolation,
    /// Supports [`crate::NetworkPolicy::None`].
    pub network_none: bool,
    /// Supports [`crate::NetworkPolicy::Allow`].
    pub network_allow: bool,
    /// Supports [`crate::NetworkPolicy::Host`].
    pub network_host: bool,
    /// Can cap memory.
    pub limit_memory: bool,
    /// Can cap CPU.
    pub limit_cpu: bool,
    /// Can cap processes.
    pub limit_pids: bool,
    /// Can cap the workdir's size.
    pub limit_disk: bool,
}

impl Capabilities {
    /// A substrate that can do nothing but exist at the given isolation level.
    pub fn minimal(isolation: Isolation) -> Self {
        Self {
            isolation,
            network_none: false,
            network_allow: false,
            network_host: false,
            limit_memory: false,
            limit_cpu: false,
            limit_pids: false,
            limit_disk: false,
        }
    }
}

/// Where a booted harness listens.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A TCP base URL on the host's loopback, e.g. `http://127.0.0.1:41234`.
    Tcp(String),
    /// A Unix socket on the host.
    Unix(PathBuf),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(url) => f.write_str(url),
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// What a runtime does to tear down one boot. Implementations must be idempotent enough that
/// a second call after a failed first one retries what is left, and should also clean up in
/// `Drop` on a best-effort basis (kill the process, delete the VM) when `shutdown` never ran.
#[async_trait]
pub trait Teardown: Send + Sync + fmt::Debug {
    /// Stops everything the boot created and removes it (unless asked to keep it).
    async fn shutdown(&mut self) -> Result<()>;
}

/// A byte stream out of a sandboxed command.
pub type OutputStream = std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>;

/// How a sandboxed command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandEnd {
    /// Its exit code (a signal death as `128 + N`), when it has one.
    pub code: Option<i32>,
    /// Why it ended, typed.
    pub reason: crate::ExitReason,
}

/// One command running alone in a fresh sandbox of its own (no harness, no HTTP): the fast
/// path for untrusted code. Its output streams; waiting removes the sandbox.
#[async_trait]
pub trait SandboxProcess: Send + fmt::Debug {
    /// Its standard output, once.
    fn take_stdout(&mut self) -> Option<OutputStream>;
    /// Its standard error, once.
    fn take_stderr(&mut self) -> Option<OutputStream>;
    /// Waits for it to end — or, when `deadline` passes first, kills everything in the
    /// sandbox — then removes the sandbox.
    async fn wait(self: Box<Self>, deadline: Option<std::time::Duration>) -> Result<CommandEnd>;
}

/// A harness running inside a substrate.
///
/// Holds the endpoint and the per-boot bearer token. [`BootedHarness::shutdown`] is idempotent.
pub struct BootedHarness {
    kind: SubstrateKind,
    endpoint: Endpoint,
    token: Secret,
    teardown: Mutex<Option<Box<dyn Teardown>>>,
    terminals: Option<std::sync::Arc<dyn crate::terminal::TerminalHost>>,
}

impl BootedHarness {
    /// Assembled by a runtime once the harness answered its health check.
    pub fn new(
        kind: SubstrateKind,
        endpoint: Endpoint,
        token: Secret,
        teardown: Box<dyn Teardown>,
    ) -> Self {
        Self {
            kind,
            endpoint,
            token,
            teardown: Mutex::new(Some(teardown)),
            terminals: None,
        }
    }

    /// Lets callers open terminals inside this sandbox (see [`BootedHarness::open_terminal`]).
    pub fn with_terminals(
        mut self,
        host: std::sync::Arc<dyn crate::terminal::TerminalHost>,
    ) -> Self {
        self.terminals = Some(host);
        self
    }

    /// What opens terminals inside this sandbox, if the runtime can (for callers that keep
    /// it apart from the harness, as a server does while a turn holds the agent).
    pub fn terminal_host(&self) -> Option<std::sync::Arc<dyn crate::terminal::TerminalHost>> {
        self.terminals.clone()
    }

    /// Starts `request`'s program on a terminal inside this sandbox, beside the harness, in
    /// the harness's workdir root: a debug shell into a live agent's sandbox. Closing the
    /// terminal ends the program; the sandbox stays until [`BootedHarness::shutdown`].
    /// Runtimes that cannot answer [`Error::Unsupported`].
    pub async fn open_terminal(
        &self,
        request: crate::terminal::TerminalRequest,
    ) -> Result<crate::terminal::Terminal> {
        if self.is_shut_down().await {
            return Err(Error::ShutDown);
        }
        match &self.terminals {
            Some(host) => host.open_terminal(request).await,
            None => Err(Error::Unsupported {
                what: format!("terminals in a booted {} sandbox", self.kind),
                reason: "bwrap (as root), tart and lima open them".into(),
            }),
        }
    }

    /// The runtime that booted it.
    pub fn kind(&self) -> SubstrateKind {
        self.kind
    }

    /// Where the harness listens.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The per-boot bearer token.
    pub fn token(&self) -> &Secret {
        &self.token
    }

    /// A client for this harness, with the token set.
    pub fn client(&self) -> Result<HarnessClient> {
        HarnessClient::new(self.endpoint.clone(), Some(self.token.clone()))
    }

    /// Tears the substrate down. Calling it again is a no-op that returns `Ok`; if a previous
    /// call failed, the next one retries.
    pub async fn shutdown(&self) -> Result<()> {
        let mut slot = self.teardown.lock().await;
        let Some(teardown) = slot.as_mut() else {
            return Ok(());
        };
        teardown.shutdown().await?;
        *slot = None;
        Ok(())
    }

    /// Whether [`BootedHarness::shutdown`] has completed.
    pub async fn is_shut_down(&self) -> bool {
        self.teardown.lock().await.is_none()
    }
}

impl fmt::Debug for BootedHarness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootedHarness")
            .field("kind", &self.kind)
            .field("endpoint", &self.endpoint)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// A runtime that boots the harness inside an isolation boundary.
#[async_trait]
pub trait Substrate: Send + Sync + fmt::Debug {
    /// Which runtime this is.
    fn kind(&self) -> SubstrateKind;

    /// What it can do.
    fn capabilities(&self) -> Capabilities;

    /// Boots a fresh boundary with the harness inside, and returns once the harness answered
    /// its health check. Every failure tears down what the boot created before returning.
    async fn boot_harness(&self, spec: BootSpec) -> Result<BootedHarness>;

    /// Starts `argv` alone in a fresh sandbox with `spec`'s policy, limits and variables.
    /// Runtimes that only boot harnesses answer [`Error::Unsupported`].
    async fn spawn_command(
        &self,
        spec: &BootSpec,
        argv: Vec<std::ffi::OsString>,
    ) -> Result<Box<dyn SandboxProcess>> {
        let _ = (spec, argv);
        Err(Error::Unsupported {
            what: format!("single commands on the {} runtime", self.kind()),
            reason: "it boots harnesses only; single commands run in bwrap sandboxes".into(),
        })
    }

    /// Starts `request`'s program alone in a fresh sandbox with `spec`'s policy, limits and
    /// variables, on a terminal of its own (see [`crate::terminal`]). Runtimes without
    /// interactive sessions answer [`Error::Unsupported`].
    async fn open_terminal(
        &self,
        spec: &BootSpec,
        request: crate::terminal::TerminalRequest,
    ) -> Result<crate::terminal::Terminal> {
        let _ = (spec, request);
        Err(Error::Unsupported {
            what: format!("interactive sessions on the {} runtime", self.kind()),
            reason: "they run on bwrap, tart, lima and apple-container".into(),
        })
    }

    /// Refuses a spec that asks for what this substrate cannot enforce — never a silent no-op.
    fn check_spec(&self, spec: &BootSpec) -> Result<()> {
        let caps = self.capabilities();
        let kind = self.kind();
        let refuse = |what: &str| {
            Err(Error::Unsupported {
                what: what.to_owned(),
                reason: format!(
                    "the {kind} runtime cannot enforce it; remove it or pick another runtime"
                ),
            })
        };
        match &spec.network {
            crate::NetworkPolicy::None if !caps.network_none => {
                return refuse("network policy `none`");
            }
            crate::NetworkPolicy::Allow(_) if !caps.network_allow => {
                return refuse("network policy `allow`");
            }
            crate::NetworkPolicy::Host if !caps.network_host => {
                return refuse("network policy `host`");
            }
            _ => {}
        }
        let limits = &spec.limits;
        if limits.memory_bytes.is_some() && !caps.limit_memory {
            return refuse("a memory limit");
        }
        if limits.cpu_millis.is_some() && !caps.limit_cpu {
            return refuse("a CPU limit");
        }
        if limits.pids.is_some() && !caps.limit_pids {
            return refuse("a process limit");
        }
        if limits.disk_bytes.is_some() && !caps.limit_disk {
            return refuse("a workdir size limit");
        }
        Ok(())
    }
}
