//! Guest simulators: executables named `tart` and `limactl` (and, later, `container`) that
//! implement the subset of each CLI the runtimes use — same arguments, output formats and exit
//! codes — over real Linux guests: each VM is a network namespace with a real OpenSSH sshd
//! and a disk of its own (see [`vm`]). The runtimes under test cannot tell.
//!
//! One binary, `guest-sim`, serves every tool by the name it is called as; [`SimTools`]
//! puts links with the tools' names into a directory for a test to use.
//!
//! Needs root (namespaces, overlay mounts), `ip` (iproute2), `bwrap`, `sshd` and `ssh-keygen`
//! (openssh-server), `openssl`.

pub mod lima;
pub mod tart;
pub mod vm;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub use vm::{Faults, GUEST_PASSWORD, GUEST_USER, Store};

/// The tools the simulator plays.
const TOOLS: &[&str] = &["tart", "limactl"];

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

/// A directory of tool links (`tart` → `guest-sim`, …) and the simulator's store.
#[derive(Debug)]
pub struct SimTools {
    bin_dir: PathBuf,
    store: Store,
}

impl SimTools {
    /// Links every simulated tool into `bin_dir` (created) with its store under `home`.
    pub fn install(bin_dir: &Path, home: &Path) -> Result<Self> {
        let sim = sim_binary()?;
        std::fs::create_dir_all(bin_dir)?;
        std::fs::create_dir_all(home)?;
        for tool in TOOLS {
            // A fresh link renamed over the old one: concurrent test processes never see
            // the tool missing.
            let link = bin_dir.join(tool);
            let tmp = bin_dir.join(format!(".{tool}.{}", std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(&sim, &tmp)
                .with_context(|| format!("link {}", tmp.display()))?;
            std::fs::rename(&tmp, &link).with_context(|| format!("link {}", link.display()))?;
        }
        Ok(Self {
            bin_dir: bin_dir.to_owned(),
            store: Store::new(home),
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

    /// The simulator's store.
    pub fn store(&self) -> &Store {
        &self.store
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

    /// Fails with what to do unless this process can run simulated guests (root, sshd).
    pub fn check_host() -> Result<()> {
        if !nix::unistd::geteuid().is_root() {
            bail!("simulated guests (network namespaces, sshd, overlay mounts) need root");
        }
        if !Path::new("/usr/sbin/sshd").is_file() {
            bail!("sshd is missing: `apt-get install openssh-server` (`cargo xtask test` does)");
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
