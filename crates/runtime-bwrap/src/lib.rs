//! Linux runtime on bubblewrap: one jail per boot, the harness inside it on a Unix socket.
//!
//! What a sandbox gets (see `jail.rs` for the exact argv):
//!
//! - user, mount, pid, ipc, uts and cgroup namespaces, and its own network namespace unless the
//!   policy is `Host`; `--die-with-parent`, `--new-session`, no capabilities, no_new_privs, a
//!   non-root uid inside, nested user namespaces disabled, and seccomp filters built in Rust
//!   (`seccomp.rs`);
//! - read-only system directories, a short `/etc` list and its own `/etc/passwd`; `/proc`, a
//!   minimal `/dev`, private `/tmp` and `/run`; the per-boot workdir read-write at `/workdir`
//!   (HOME and the session root); the harness, `node` and the staged `node_modules` read-only;
//! - an empty environment plus the harness's own variables; secrets (the boot token, engine
//!   keys) through an inherited pipe, never an argv;
//! - network `none` (its own namespace, loopback only), `allow` (still no route out: clients
//!   use `HTTP(S)_PROXY` at a relay on the sandbox's 127.0.0.1 that reaches the host's egress
//!   proxy, `substrate-egress`, through a Unix socket), or `host` (unsafe);
//! - memory, CPU and pids limits in a per-boot cgroup entered before bwrap runs (`cgroup.rs`),
//!   and, as root, a workdir size cap: the workdir is an ext4 image of that size, loop-mounted
//!   (`disk.rs`).
//!
//! When the caller is root, bwrap runs as a fresh unprivileged host uid per boot, so nothing
//! root-owned on the host is ever "owned" by a sandbox (a sandbox mapped to host root could,
//! for one, chmod the host's `/dev/null`).
//!
//! The argv builder compiles on every OS; booting is Linux-only and elsewhere fails with
//! `Unsupported`, naming the runtimes that work there.
#![deny(missing_docs)]

pub mod jail;
pub mod version;

#[cfg(target_os = "linux")]
pub mod cgroup;
#[cfg(target_os = "linux")]
mod disk;
#[cfg(target_os = "linux")]
mod enter;
#[cfg(target_os = "linux")]
mod launcher;
#[cfg(target_os = "linux")]
pub mod probe;
#[cfg(target_os = "linux")]
pub mod reaper;
#[cfg(target_os = "linux")]
pub mod seccomp;
#[cfg(target_os = "linux")]
mod terminal;

use std::path::PathBuf;

use async_trait::async_trait;
use substrate_core::{
    BootSpec, BootedHarness, Capabilities, Isolation, Result, Substrate, SubstrateKind,
};

pub use jail::{JailCommand, JailConfig, JailNetwork, ReadOnlyBind};
#[cfg(target_os = "linux")]
pub use launcher::{ExecOutput, JailExit, JailProcess};
pub use version::{BwrapVersion, MIN_VERSION};

/// Boots the harness inside a bubblewrap jail. Cheap to clone; each boot is independent.
#[derive(Debug, Clone)]
pub struct BwrapSubstrate {
    pub(crate) bwrap: PathBuf,
    pub(crate) node: PathBuf,
    pub(crate) node_modules: PathBuf,
    pub(crate) base_dir: PathBuf,
    pub(crate) extra_ro: Vec<ReadOnlyBind>,
    pub(crate) project: Option<jail::ProjectBind>,
    pub(crate) tmp_bytes: Option<u64>,
    pub(crate) egress_hosts: std::collections::HashMap<String, Vec<std::net::IpAddr>>,
    pub(crate) egress_name_servers: Option<Vec<std::net::SocketAddr>>,
}

impl BwrapSubstrate {
    /// A substrate using `bwrap` and `node` from `PATH` and the staged `node_modules` (see
    /// `cargo xtask stage`).
    pub fn new(node_modules: impl Into<PathBuf>) -> Self {
        Self {
            bwrap: PathBuf::from("bwrap"),
            node: PathBuf::from("node"),
            node_modules: node_modules.into(),
            base_dir: std::env::temp_dir().join("computeragent-bwrap"),
            extra_ro: Vec::new(),
            project: None,
            tmp_bytes: None,
            egress_hosts: std::collections::HashMap::new(),
            egress_name_servers: None,
        }
    }

    /// Uses this bwrap binary.
    pub fn bwrap(mut self, bwrap: impl Into<PathBuf>) -> Self {
        self.bwrap = bwrap.into();
        self
    }

    /// Uses this node binary (bound read-only into every sandbox).
    pub fn node(mut self, node: impl Into<PathBuf>) -> Self {
        self.node = node.into();
        self
    }

    /// Keeps per-boot directories (run dir, workdir) under `dir`. When the caller is root, the
    /// sandbox's own uid must be able to traverse it (the default, under the temp dir, is).
    pub fn base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = dir.into();
        self
    }

    /// Binds a project directory into every sandbox at the same path, read-write or
    /// read-only: the agent works on the files themselves, not a copy. Read-write as root
    /// runs the sandbox as the directory's owner (a root-owned project is refused), since a
    /// fresh uid could not write it.
    pub fn project(mut self, dir: impl Into<PathBuf>, writable: bool) -> Self {
        let dir = dir.into();
        self.project = Some(jail::ProjectBind {
            source: dir.clone(),
            dest: dir,
            writable,
        });
        self
    }

    /// Binds a host path read-only into every sandbox.
    pub fn read_only(mut self, source: impl Into<PathBuf>, dest: impl Into<PathBuf>) -> Self {
        self.extra_ro.push(ReadOnlyBind {
            source: source.into(),
            dest: dest.into(),
        });
        self
    }

    /// Caps the sandbox's private `/tmp` (a tmpfs, counted against the memory limit) at
    /// `bytes`.
    pub fn tmp_size(mut self, bytes: u64) -> Self {
        self.tmp_bytes = Some(bytes);
        self
    }

    /// Answers `name` with `ip` in the egress proxy instead of asking DNS (tests, split-horizon
    /// setups). The name must still be allowed by the boot's network policy.
    pub fn egress_host(mut self, name: impl Into<String>, ip: std::net::IpAddr) -> Self {
        self.egress_hosts
            .entry(name.into().to_ascii_lowercase())
            .or_default()
            .push(ip);
        self
    }

    /// The DNS servers the egress proxy asks (default: the host's `/etc/resolv.conf`).
    pub fn egress_name_servers(mut self, servers: Vec<std::net::SocketAddr>) -> Self {
        self.egress_name_servers = Some(servers);
        self
    }

    /// Where per-boot directories live.
    pub fn base_dir_path(&self) -> &std::path::Path {
        &self.base_dir
    }

    /// Runs one command in a fresh sandbox — the same jail, filters and limits as a harness
    /// boot, with `spec`'s network policy, limits and variables — and returns its output once
    /// it exits. The fast path for untrusted code: no harness, no HTTP.
    #[cfg(target_os = "linux")]
    pub async fn exec<I, S>(&self, spec: &BootSpec, argv: I) -> Result<ExecOutput>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString>,
    {
        self.check_spec(spec)?;
        launcher::exec(self, spec, argv.into_iter().map(Into::into).collect(), None).await
    }

    /// [`BwrapSubstrate::exec`] with a deadline: when it expires, everything in the sandbox
    /// is killed and the output's reason is [`substrate_core::ExitReason::Deadline`].
    #[cfg(target_os = "linux")]
    pub async fn exec_with_deadline<I, S>(
        &self,
        spec: &BootSpec,
        argv: I,
        deadline: std::time::Duration,
    ) -> Result<ExecOutput>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString>,
    {
        self.check_spec(spec)?;
        let argv = argv.into_iter().map(Into::into).collect();
        launcher::exec(self, spec, argv, Some(deadline)).await
    }

    /// Starts one command in a fresh sandbox and hands back its running process: stream its
    /// output, wait for it, or kill it. [`BwrapSubstrate::exec`] is this plus collecting.
    #[cfg(target_os = "linux")]
    pub async fn spawn<I, S>(&self, spec: &BootSpec, argv: I) -> Result<JailProcess>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString>,
    {
        self.check_spec(spec)?;
        launcher::spawn(
            self,
            spec,
            argv.into_iter().map(Into::into).collect(),
            None,
            None,
        )
        .await
    }

    /// Starts one command in a fresh sandbox on a terminal: `tty` (the replica side of a PTY
    /// the caller owns — never the caller's own terminal) is its stdin, stdout and stderr,
    /// and its controlling terminal (`setsid --ctty`), so that Ctrl-C, Ctrl-Z and window
    /// sizes reach it through the PTY. The jail keeps its own session (bwrap
    /// `--new-session`) and `TIOCSTI` stays refused. With `seed`, that directory's tree is
    /// put into the workdir (owned by the sandbox) before the command starts.
    #[cfg(target_os = "linux")]
    pub async fn spawn_terminal<I, S>(
        &self,
        spec: &BootSpec,
        argv: I,
        tty: std::os::fd::OwnedFd,
        seed: Option<Seed<'_>>,
    ) -> Result<JailProcess>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString>,
    {
        self.check_spec(spec)?;
        let mut full: Vec<std::ffi::OsString> =
            ["setsid", "--ctty", "--wait"].map(Into::into).to_vec();
        full.extend(argv.into_iter().map(Into::into));
        launcher::spawn(self, spec, full, Some(tty), seed).await
    }

    /// Opens `request` on a terminal inside the running sandbox labelled `id` under this
    /// substrate's base directory (a warm sandbox of the server: `sbx_…`), as the sandbox's
    /// own user with its namespaces, cgroups, seccomp filters and no capabilities. Closing
    /// the terminal ends the program, not the sandbox. Needs root on the host.
    #[cfg(target_os = "linux")]
    pub async fn enter_terminal(
        &self,
        id: &str,
        request: substrate_core::TerminalRequest,
    ) -> Result<substrate_core::Terminal> {
        let boot = enter::find_boot(&self.base_dir, id)?;
        enter::open(boot, request).await
    }

    /// Removes what crashed owners left under this substrate's base directory: boot
    /// directories, their sandboxes and cgroups. Boots of live processes are not touched.
    #[cfg(target_os = "linux")]
    pub fn reap_orphans(&self) -> Result<reaper::Reaped> {
        reaper::reap_orphans(&self.base_dir)
    }
}

#[async_trait]
impl Substrate for BwrapSubstrate {
    fn kind(&self) -> SubstrateKind {
        SubstrateKind::Bwrap
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::minimal(Isolation::Namespaces);
        caps.network_none = true;
        caps.network_allow = true;
        caps.network_host = true;
        caps.limit_memory = true;
        caps.limit_cpu = true;
        caps.limit_pids = true;
        // A loop-mounted workdir: root only; others get a clear refusal at boot.
        caps.limit_disk = true;
        caps
    }

    #[cfg(target_os = "linux")]
    async fn spawn_command(
        &self,
        spec: &BootSpec,
        argv: Vec<std::ffi::OsString>,
    ) -> Result<Box<dyn substrate_core::SandboxProcess>> {
        Ok(Box::new(self.spawn(spec, argv).await?))
    }

    #[cfg(target_os = "linux")]
    async fn open_terminal(
        &self,
        spec: &BootSpec,
        request: substrate_core::TerminalRequest,
    ) -> Result<substrate_core::Terminal> {
        terminal::open(self, spec, request).await
    }

    async fn boot_harness(&self, spec: BootSpec) -> Result<BootedHarness> {
        self.check_spec(&spec)?;
        #[cfg(target_os = "linux")]
        {
            launcher::boot(self, spec).await
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = spec;
            Err(substrate_core::Error::Unsupported {
                what: String::from("the bwrap runtime"),
                reason: format!(
                    "bubblewrap needs Linux namespaces and this host runs {}; on macOS use the \
                     tart, lima or apple-container runtime",
                    std::env::consts::OS
                ),
            })
        }
    }
}

/// A host directory whose tree a sandbox's workdir starts with.
#[derive(Debug, Clone, Copy)]
pub enum Seed<'a> {
    /// Copied; the directory is left as it is.
    Copy(&'a std::path::Path),
    /// Handed over: its entries are moved into the workdir when both are on one filesystem
    /// (nothing is copied, and files keep their inodes), else copied.
    Move(&'a std::path::Path),
}
