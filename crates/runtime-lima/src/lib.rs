#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod argv;
mod boot;

use std::path::PathBuf;

use async_trait::async_trait;
use substrate_core::{
    BootSpec, BootedHarness, Capabilities, Isolation, Result, Substrate, SubstrateKind,
};
use substrate_ssh::SshAuth;

pub use argv::{InstanceShape, Limactl, Mount};
pub use boot::Reaped;

/// The prefix of every instance this runtime creates; the reaper removes leftovers by it.
pub const DEFAULT_PREFIX: &str = "computeragent-";

/// Where each boot's instance comes from.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimaBase {
    /// `limactl clone` of a stopped instance built once (see [`LimaSubstrate::build_base`]):
    /// fast, and the harness is already inside.
    Clone(String),
    /// `limactl create` from a template (a path, URL or `template://NAME`): every boot
    /// provisions a new VM and installs the harness.
    Template(String),
}

/// Boots the harness in a fresh Lima instance. Cheap to clone; boots are independent.
#[derive(Debug, Clone)]
pub struct LimaSubstrate {
    pub(crate) limactl: PathBuf,
    pub(crate) home: Option<PathBuf>,
    pub(crate) base: LimaBase,
    pub(crate) user: Option<String>,
    pub(crate) auth: Option<Vec<SshAuth>>,
    pub(crate) prefix: String,
    pub(crate) state_dir: PathBuf,
    pub(crate) mounts: Vec<Mount>,
    pub(crate) runtime_script: Option<Vec<u8>>,
    pub(crate) keep_on_failure: bool,
}

impl LimaSubstrate {
    /// Boots instances of `base`, logging in as the host's user name with Lima's key
    /// (`$LIMA_HOME/_config/user`), as `limactl shell` does.
    pub fn new(base: LimaBase) -> Self {
        Self {
            limactl: PathBuf::from("limactl"),
            home: None,
            base,
            user: None,
            auth: None,
            prefix: DEFAULT_PREFIX.into(),
            state_dir: substrate_ssh::guest::default_state_dir("lima"),
            mounts: Vec::new(),
            runtime_script: None,
            keep_on_failure: false,
        }
    }

    /// Uses this `limactl` binary.
    pub fn limactl(mut self, program: impl Into<PathBuf>) -> Self {
        self.limactl = program.into();
        self
    }

    /// Keeps instances under this `LIMA_HOME` instead of Lima's default.
    pub fn lima_home(mut self, dir: impl Into<PathBuf>) -> Self {
        self.home = Some(dir.into());
        self
    }

    /// Logs in as `user` with these credentials (for templates that set `user.name`).
    pub fn login(mut self, user: impl Into<String>, auth: Vec<SshAuth>) -> Self {
        self.user = Some(user.into());
        self.auth = Some(auth);
        self
    }

    /// Names instances `<prefix><pid>-<label>-<random>`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Keeps per-boot host files (sockets, known hosts) under `dir` instead of
    /// `~/.local/state/computeragent/lima`.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = dir.into();
        self
    }

    /// Mounts a host directory into every instance at the same path; `writable` for a project
    /// the agent works on (it then writes straight into the host's files).
    pub fn mount(mut self, path: impl Into<PathBuf>, writable: bool) -> Self {
        self.mounts.push(Mount {
            path: path.into(),
            writable,
        });
        self
    }

    /// A shell script run in each instance before the harness starts (a project's
    /// `runtime.sh`); its output goes to the progress sink, and a failure stops the boot.
    pub fn runtime_script(mut self, script: impl Into<Vec<u8>>) -> Self {
        self.runtime_script = Some(script.into());
        self
    }

    /// Leaves an instance whose boot failed running, for debugging, and logs how to reach it.
    pub fn keep_on_failure(mut self, keep: bool) -> Self {
        self.keep_on_failure = keep;
        self
    }

    /// The `limactl` calls of this substrate.
    pub fn cli(&self) -> Limactl {
        Limactl::new(self.limactl.clone(), self.home.clone())
    }

    /// Builds a base instance to clone from: `limactl create` from `template`, start, the
    /// per-user `setup_script` once, the harness installed, stop. Boots with
    /// [`LimaBase::Clone`]`(name)` then install nothing.
    pub async fn build_base(
        &self,
        template: &str,
        name: &str,
        setup_script: Option<&[u8]>,
        spec: BootSpec,
    ) -> Result<()> {
        boot::build_base(self, template, name, setup_script, spec).await
    }

    /// Deletes instances left by runs whose process is gone (by name prefix).
    pub async fn reap_leftovers(&self) -> Result<Reaped> {
        boot::reap(self).await
    }
}

#[async_trait]
impl Substrate for LimaSubstrate {
    fn kind(&self) -> SubstrateKind {
        SubstrateKind::Lima
    }

    /// A VM with its own kernel. Lima always gives its instances the user-mode network
    /// (that is how the host reaches their SSH), so only the `host` network policy is
    /// offered: `none` and `allow` are refused rather than promised.
    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::minimal(Isolation::VirtualMachine);
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
