#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod argv;
mod boot;

use std::path::PathBuf;

use async_trait::async_trait;
use substrate_core::{
    BootSpec, BootedHarness, Capabilities, Isolation, Result, Secret, Substrate, SubstrateKind,
};
use substrate_ssh::guest::EgressOptions;
use substrate_ssh::{HostKeyPolicy, SshAuth};

pub use argv::{LINUX_SHARES, SharedDir, Tart, TartNet};
pub use boot::Reaped;

/// The prefix of every VM this runtime clones; `gc` removes leftovers by it.
pub const DEFAULT_PREFIX: &str = "computeragent-";

/// Boots the harness in a fresh clone of a Tart VM image. Cheap to clone; boots are
/// independent.
#[derive(Debug, Clone)]
pub struct TartSubstrate {
    pub(crate) tart: PathBuf,
    pub(crate) home: Option<PathBuf>,
    pub(crate) image: String,
    pub(crate) user: String,
    pub(crate) auth: Vec<SshAuth>,
    pub(crate) host_keys: Option<HostKeyPolicy>,
    pub(crate) prefix: String,
    pub(crate) state_dir: PathBuf,
    pub(crate) keep_on_failure: bool,
    pub(crate) audit_snapshot: bool,
    pub(crate) dirs: Vec<SharedDir>,
    pub(crate) egress: EgressOptions,
}

impl TartSubstrate {
    /// Clones `image` for each boot, logging in as `admin`/`admin` (the login of Cirrus Labs'
    /// Linux images); the image's host key is recorded on first use and must not change.
    pub fn new(image: impl Into<String>) -> Self {
        let state_dir = substrate_ssh::guest::default_state_dir("tart");
        Self {
            tart: PathBuf::from("tart"),
            home: None,
            image: image.into(),
            user: "admin".into(),
            auth: vec![
                SshAuth::Password(Secret::new("admin")),
                SshAuth::KeyboardInteractive(Secret::new("admin")),
            ],
            host_keys: None,
            prefix: DEFAULT_PREFIX.into(),
            state_dir,
            keep_on_failure: false,
            audit_snapshot: false,
            dirs: Vec::new(),
            egress: EgressOptions::default(),
        }
    }

    /// Uses this `tart` binary.
    pub fn tart(mut self, program: impl Into<PathBuf>) -> Self {
        self.tart = program.into();
        self
    }

    /// Keeps VMs under this `TART_HOME` instead of tart's default.
    pub fn tart_home(mut self, dir: impl Into<PathBuf>) -> Self {
        self.home = Some(dir.into());
        self
    }

    /// Logs in as `user` with these credentials, tried in order.
    pub fn login(mut self, user: impl Into<String>, auth: Vec<SshAuth>) -> Self {
        self.user = user.into();
        self.auth = auth;
        self
    }

    /// Checks the guest's host key with `policy` instead of recording the image's key on
    /// first use in `<state dir>/known_hosts`.
    pub fn host_keys(mut self, policy: HostKeyPolicy) -> Self {
        self.host_keys = Some(policy);
        self
    }

    /// Names clones `<prefix><pid>-<label>-<random>`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Keeps per-boot host files (sockets, logs) and the known-hosts file under `dir` instead
    /// of `~/.local/state/computeragent/tart`.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = dir.into();
        self
    }

    /// Leaves a VM whose boot failed running, for debugging, and logs how to reach it.
    pub fn keep_on_failure(mut self, keep: bool) -> Self {
        self.keep_on_failure = keep;
        self
    }

    /// Clones each VM to `<name>-audit` before deleting it, for later inspection.
    pub fn audit_snapshot(mut self, snapshot: bool) -> Self {
        self.audit_snapshot = snapshot;
        self
    }

    /// Shares a host directory into every VM (`tart run --dir`).
    pub fn share(mut self, dir: SharedDir) -> Self {
        self.dirs.push(dir);
        self
    }

    /// What the egress proxy of `allow` boots resolves with.
    pub fn egress_options(mut self, options: EgressOptions) -> Self {
        self.egress = options;
        self
    }

    /// The `tart` calls of this substrate.
    pub fn cli(&self) -> Tart {
        Tart::new(self.tart.clone(), self.home.clone())
    }

    /// Turns `base` (a vanilla Linux image with Node.js 20+) into `prepared`: a clone with the
    /// harness of this build installed, so boots on it upload and install nothing.
    pub async fn prepare(&self, base: &str, prepared: &str, spec: BootSpec) -> Result<()> {
        boot::prepare(self, base, prepared, spec).await
    }

    /// Stops and deletes VMs left by runs whose process is gone (by name prefix).
    pub async fn reap_leftovers(&self) -> Result<Reaped> {
        boot::reap(self).await
    }
}

#[async_trait]
impl Substrate for TartSubstrate {
    fn kind(&self) -> SubstrateKind {
        SubstrateKind::Tart
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::minimal(Isolation::VirtualMachine);
        caps.network_none = true;
        caps.network_allow = true;
        caps.network_host = true;
        caps.limit_memory = true;
        caps.limit_cpu = true;
        caps
    }

    async fn boot_harness(&self, spec: BootSpec) -> Result<BootedHarness> {
        self.check_spec(&spec)?;
        boot::boot(self, spec).await
    }

    async fn open_terminal(
        &self,
        spec: &BootSpec,
        request: substrate_core::TerminalRequest,
    ) -> Result<substrate_core::Terminal> {
        self.check_spec(spec)?;
        boot::open_terminal(self, spec.clone(), request).await
    }
}
