//! Shared by the lima tests: the `limactl` guest simulator on a store shared by every test
//! process, and a base instance built once (by the runtime's own `build_base`) and cloned.
#![allow(dead_code)]

use std::path::PathBuf;

use anyhow::Context;
use runtime_lima::{LimaBase, LimaSubstrate};
use substrate_core::{BootSpec, NetworkPolicy};
use substrate_ssh::SshAuth;
use substrate_testkit::guestsim::{GUEST_USER, SimTools};

/// The per-user setup script the base is built with: it leaves a mark the tests look for.
pub const SETUP: &[u8] = b"echo setting up; echo built-by-setup > \"$HOME/.setup-mark\"\n";

/// The simulated `limactl`. Fails (never skips) without root or openssh-server.
pub fn sim() -> anyhow::Result<SimTools> {
    SimTools::check_host()?;
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("guest-sim");
    let tools = SimTools::install(&root.join("bin"), &root.join("lima-home"))?;
    tools.use_npm_mirror()?;
    Ok(tools)
}

/// A substrate over the simulator (whose images log in as `admin` with Lima's key).
pub fn substrate(tools: &SimTools, base: LimaBase) -> LimaSubstrate {
    let key = tools.store().root().join("_config/user");
    LimaSubstrate::new(base)
        .limactl(tools.limactl())
        .lima_home(tools.store().root())
        .state_dir(tools.store().root().join("state"))
        .login(
            GUEST_USER,
            vec![SshAuth::KeyFile {
                path: key,
                passphrase: None,
            }],
        )
}

/// A spec the lima runtime accepts: its instances always have the user-mode network.
pub fn spec(label: &str, model_base_url: &str) -> BootSpec {
    substrate_testkit::conformance::scripted_boot_spec(label, model_base_url)
        .network(NetworkPolicy::Host)
}

/// The base instance of this build, built once under a lock other test processes wait on.
pub async fn base(tools: &SimTools) -> anyhow::Result<LimaBase> {
    let hash = substrate_ssh::guest::harness_dir()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let name = format!("base-{}", &hash[..12]);
    let store = tools.store().clone();
    let lock = tokio::task::spawn_blocking(move || store.lock_named("build.lock")).await??;
    if !tools.store().exists(&name) {
        for old in tools.store().names() {
            if old.starts_with("base-") {
                let _lock = tools.store().lock()?;
                tools.store().delete(&old)?;
            }
        }
        substrate(tools, LimaBase::Clone(name.clone()))
            .build_base(
                "template://debian-12",
                &name,
                Some(SETUP),
                BootSpec::new("build"),
            )
            .await
            .context("build the base instance")?;
    }
    drop(lock);
    Ok(LimaBase::Clone(name))
}
