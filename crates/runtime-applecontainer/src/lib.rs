#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod argv;
mod boot;
mod host;
pub mod image;
mod relay;
mod terminal;

use std::path::PathBuf;

use async_trait::async_trait;
use substrate_core::{
    BootSpec, BootedHarness, Capabilities, Isolation, Result, Substrate, SubstrateKind,
};

pub use argv::{Container, ContainerInfo, Publish, RunArgs, Volume};
pub use boot::Reaped;
pub use image::{HARNESS_PORT, ImageRecipe};

/// The prefix of every container this runtime runs; the reaper removes leftovers by it.
pub const DEFAULT_PREFIX: &str = "computeragent-";

/// Boots the harness in a fresh container of the harness image, one lightweight VM each.
/// Cheap to clone; boots are independent.
#[derive(Debug, Clone)]
pub struct AppleContainerSubstrate {
    pub(crate) container: PathBuf,
    pub(crate) image: String,
    pub(crate) prefix: String,
    pub(crate) state_dir: PathBuf,
    pub(crate) volumes: Vec<Volume>,
    pub(crate) read_only_root: bool,
    pub(crate) check_host: bool,
    pub(crate) host_port: Option<u16>,
}

impl AppleContainerSubstrate {
    /// Boots containers of the harness image of this build ([`ImageRecipe::for_this_build`];
    /// `cargo xtask image` builds it).
    pub fn new() -> Self {
        Self::with_image(image::default_tag())
    }

    /// Boots containers of `image`, which must be laid out as [`ImageRecipe`] says.
    pub fn with_image(image: impl Into<String>) -> Self {
        Self {
            container: PathBuf::from("container"),
            image: image.into(),
            prefix: DEFAULT_PREFIX.into(),
            state_dir: substrate_ssh::guest::default_state_dir("apple-container"),
            volumes: Vec::new(),
            read_only_root: false,
            check_host: true,
            host_port: None,
        }
    }

    /// Uses this `container` binary.
    pub fn container(mut self, program: impl Into<PathBuf>) -> Self {
        self.container = program.into();
        self
    }

    /// Names containers `<prefix><pid>-<label>-<random>`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Keeps per-boot host files (the env file while it exists, sockets) under `dir` instead
    /// of `~/.local/state/computeragent/apple-container`.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = dir.into();
        self
    }

    /// Mounts a host directory into every container (`--volume`).
    pub fn volume(mut self, volume: Volume) -> Self {
        self.volumes.push(volume);
        self
    }

    /// Runs containers with a read-only root filesystem; `/tmp` and the user's home (where
    /// the workdirs are) become tmpfs, so a session's files live in the container's memory.
    pub fn read_only_root(mut self, read_only: bool) -> Self {
        self.read_only_root = read_only;
        self
    }

    /// Publishes the harness on this port of the host's 127.0.0.1 instead of a free one the
    /// runtime picks (and picks again when another process took it first).
    pub fn host_port(mut self, port: u16) -> Self {
        self.host_port = Some(port);
        self
    }

    /// Skips the check that this host is macOS 26 or later: for a `container`-compatible CLI
    /// on another host (a test double). Apple's `container` itself needs macOS 26.
    pub fn assume_supported_host(mut self) -> Self {
        self.check_host = false;
        self
    }

    /// The `container` calls of this substrate.
    pub fn cli(&self) -> Container {
        Container::new(self.container.clone())
    }

    /// The image the boots run.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// Removes containers left by runs whose process is gone (by name prefix).
    pub async fn reap_leftovers(&self) -> Result<Reaped> {
        boot::reap(self).await
    }
}

impl Default for AppleContainerSubstrate {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Substrate for AppleContainerSubstrate {
    fn kind(&self) -> SubstrateKind {
        SubstrateKind::AppleContainer
    }

    fn capabilities(&self) -> Capabilities {
        // Every container has the service's NAT network: there is no `none` to enforce, and
        // `allow` would need its proxy to be the only way out.
        let mut caps = Capabilities::minimal(Isolation::VirtualMachine);
        caps.network_host = true;
        caps.limit_memory = true;
        caps.limit_cpu = true;
        caps
    }

    async fn boot_harness(&self, spec: BootSpec) -> Result<BootedHarness> {
        if self.check_host {
            host::check_supported()?;
        }
        self.check_spec(&spec)?;
        boot::boot(self, spec).await
    }

    /// A program on a terminal in a container of its own (`container exec --tty` on a PTY
    /// the host owns, beside the harness, so the engine's broker serves it); closing the
    /// terminal removes the container.
    async fn open_terminal(
        &self,
        spec: &BootSpec,
        request: substrate_core::TerminalRequest,
    ) -> Result<substrate_core::Terminal> {
        if self.check_host {
            host::check_supported()?;
        }
        self.check_spec(spec)?;
        boot::open_terminal(self, spec.clone(), request).await
    }
}
