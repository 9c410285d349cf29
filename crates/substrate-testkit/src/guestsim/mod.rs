//! Guest simulators: executables named `tart`, `limactl` and `container` that implement the
//! subset of each CLI the runtimes use — same arguments, output formats and exit codes — over
//! real Linux guests. A tart or Lima VM is a network namespace with a real OpenSSH sshd and a
//! disk of its own (see [`vm`]); an Apple container is a network namespace on a bridged
//! "default" network with its image's command in a bwrap jail (see [`container`]). The
//! runtimes under test cannot tell.
//!
//! One binary, `guest-sim`, serves every tool by the name it is called as; [`SimTools`]
//! puts links with the tools' names into a directory for a test to use.
//!
//! Needs root (namespaces, overlay mounts), `ip` (iproute2), `bwrap`, `setpriv`
//! (util-linux), `sshd` and `ssh-keygen` (openssh-server), `openssl`.

pub mod container;
pub mod lima;
pub mod tart;
pub mod vm;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub use container::{ContainerFaults, ContainerImage, ContainerStore};
pub use vm::{Faults, GUEST_PASSWORD, GUEST_USER, Store};

/// The tools the simulator plays.
const TOOLS: &[&str] = &["tart", "limactl", "container"];

/// The `guest-sim` binary, built next to the test executables of this workspace.
pub fn sim_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("find the test executable")?;
    // target/<profile>/{deps,examples}/<exe> → target/<profile>/guest-sim
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test executable has no target directory")?;
    let bin = profile_dir.join("guest-sim");
    if !bin.is_file() {
        bail!(
            "{} is missing: build it with `cargo build -p substrate-testkit --bin guest-sim` \
             (`cargo xtask test` does)",
            bin.display()
        );
    }
    Ok(bin)
}

/// The host's npm cache, filled with exactly the harness's locked packages by staging.
fn npm_mirror() -> Result<PathBuf> {
    crate::stage::ensure_staged().map_err(anyhow::Error::msg)?;
    let out = std::process::Command::new("npm")
        .args(["config", "get", "cache"])
        .output()
        .context("run npm")?;
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// A directory of tool links (`tart` → `guest-sim`, …) and the simulator's stores.
#[derive(Debug)]
pub struct SimTools {
    bin_dir: PathBuf,
    store: Store,
    container: ContainerStore,
}

impl SimTools {
    /// Links every simulated tool into `bin_dir` (created) with its store under `home`
    /// (`container`'s under `home/container`, named by `bin_dir/container-sim-home`, since
    /// the real `container` reads no variable to find its service).
    pub fn install(bin_dir: &Path, home: &Path) -> Result<Self> {
        let sim = sim_binary()?;
        std::fs::create_dir_all(bin_dir)?;
        std::fs::create_dir_all(home)?;
        // Fresh files renamed over the old ones: concurrent test processes and threads never
        // see a tool (or the container store's name) missing or half written.
        let tmp_name = |name: &str| {
            bin_dir.join(format!(
                ".{name}.{}.{}",
                std::process::id(),
                vm::random_id()
            ))
        };
        for tool in TOOLS {
            let link = bin_dir.join(tool);
            let tmp = tmp_name(tool);
            std::os::unix::fs::symlink(&sim, &tmp)
                .with_context(|| format!("link {}", tmp.display()))?;
            std::fs::rename(&tmp, &link).with_context(|| format!("link {}", link.display()))?;
        }
        let container_root = home.join("container");
        std::fs::create_dir_all(&container_root)?;
        let tmp = tmp_name("container-sim-home");
        std::fs::write(&tmp, container_root.display().to_string())
            .with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, bin_dir.join("container-sim-home"))
            .context("name the container store")?;
        Ok(Self {
            bin_dir: bin_dir.to_owned(),
            store: Store::new(home),
            container: ContainerStore::new(container_root),
        })
    }

    /// The `tart` to run.
    pub fn tart(&self) -> PathBuf {
        self.bin_dir.join("tart")
    }

    /// The `limactl` to run.
    pub fn limactl(&self) -> PathBuf {
        self.bin_dir.join("limactl")
    }

    /// The `container` to run.
    pub fn container(&self) -> PathBuf {
        self.bin_dir.join("container")
    }

    /// The simulator's store (tart and Lima VMs).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The store of the simulated `container` service (images, containers, faults).
    pub fn container_store(&self) -> &ContainerStore {
        &self.container
    }

    /// Its root, e.g. for a runtime's own state next to it.
    pub fn container_store_root(&self) -> PathBuf {
        self.container.root().to_owned()
    }

    /// Creates `image` in the container store unless its reference is there: built once
    /// across test processes (under a lock, in a directory of its own renamed into place).
    pub fn ensure_container_image(&self, image: &ContainerImage) -> Result<()> {
        self.container.ensure_image(image)
    }

    /// Injects `faults` into every container started from image `reference` from now on.
    pub fn set_container_faults(&self, reference: &str, faults: &ContainerFaults) -> Result<()> {
        self.container.set_faults(reference, faults)
    }

    /// Turns the simulated `container` service on or off: while it is off, every command but
    /// `system start` and `system status` fails as the real CLI does without its apiserver.
    pub fn set_container_service(&self, up: bool) -> Result<()> {
        self.container.set_service(up)
    }

    /// Every `container` call recorded so far, as argv lists.
    pub fn container_calls(&self) -> Vec<Vec<String>> {
        self.container.calls()
    }

    /// Creates image `name` unless it exists: a Linux guest with Node.js (the host's) and an
    /// offline npm mirror of the harness's locked packages (staged first, which fills the
    /// host's npm cache with exactly them).
    pub fn ensure_vanilla_image(&self, name: &str) -> Result<()> {
        self.store.client_key()?;
        let _lock = self.store.lock()?;
        if self.store.exists(name) {
            return Ok(());
        }
        self.store.create_image(name, Some(&npm_mirror()?))
    }

    /// Makes every guest `limactl create` makes carry the offline npm mirror (see
    /// [`SimTools::ensure_vanilla_image`]).
    pub fn use_npm_mirror(&self) -> Result<()> {
        lima::write_config(
            self.store.root(),
            &lima::SimConfig {
                npm_cache: Some(npm_mirror()?),
            },
        )
    }

    /// Fails with what to do unless this process can run simulated guests (root, sshd, bwrap,
    /// ip, setpriv).
    pub fn check_host() -> Result<()> {
        if !nix::unistd::geteuid().is_root() {
            bail!("simulated guests (network namespaces, sshd, overlay mounts) need root");
        }
        if !Path::new("/usr/sbin/sshd").is_file() {
            bail!("sshd is missing: `apt-get install openssh-server` (`cargo xtask test` does)");
        }
        for (tool, package) in [
            ("bwrap", "bubblewrap"),
            ("ip", "iproute2"),
            ("setpriv", "util-linux"),
        ] {
            let found = ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
                .iter()
                .any(|d| Path::new(d).join(tool).is_file());
            if !found {
                bail!("{tool} is missing: `apt-get install {package}` (`cargo xtask test` does)");
            }
        }
        Ok(())
    }

    /// Every CLI call recorded so far, as argv lists.
    pub fn calls(&self) -> Vec<Vec<String>> {
        std::fs::read_to_string(self.store.root().join("sim/calls.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| serde_json::from_value(v["args"].clone()).ok())
            .collect()
    }

    /// Every command line the guest `vm`'s sshd ran (kept until the VM is deleted).
    pub fn guest_commands(&self, vm: &str) -> Vec<String> {
        std::fs::read_to_string(
            self.store
                .root()
                .join("sim/commands")
                .join(format!("{vm}.log")),
        )
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
    }
}
