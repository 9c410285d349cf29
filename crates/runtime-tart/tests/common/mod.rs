//! Shared by the tart tests: the guest simulator on a store shared by every test process, and
//! a prepared image built once (by the runtime's own `prepare`) and reused.
#![allow(dead_code)]

use std::path::PathBuf;

use anyhow::Context;
use runtime_tart::TartSubstrate;
use substrate_core::BootSpec;
use substrate_testkit::guestsim::SimTools;

/// The vanilla image: a Linux guest with Node.js and an offline npm mirror.
pub const VANILLA: &str = "vanilla";

/// Where the simulator keeps its store for this workspace's tests.
fn sim_root() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("guest-sim")
}

/// The simulated `tart`, with the vanilla image created. Fails (never skips) without root or
/// openssh-server: `cargo xtask test` runs as root and installs it.
pub fn sim() -> anyhow::Result<SimTools> {
    SimTools::check_host()?;
    let root = sim_root();
    let tools = SimTools::install(&root.join("bin"), &root.join("tart-home"))?;
    tools.ensure_vanilla_image(VANILLA)?;
    Ok(tools)
}

/// A substrate over the simulator, with its state (known hosts, sockets) in the store.
pub fn substrate(tools: &SimTools, image: &str) -> TartSubstrate {
    TartSubstrate::new(image)
        .tart(tools.tart())
        .tart_home(tools.store().root())
        .state_dir(tools.store().root().join("state"))
}

/// The name of the prepared image of this build.
pub fn prepared_name() -> String {
    format!("prepared-{}", &harness_bundle_hash()[..12])
}

fn harness_bundle_hash() -> String {
    // The guest directory name carries the bundle hash.
    substrate_ssh::guest::harness_dir()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The prepared image, built once per store with `TartSubstrate::prepare` under a lock other
/// test processes wait on.
pub async fn prepared(tools: &SimTools) -> anyhow::Result<String> {
    let name = prepared_name();
    let store = tools.store().clone();
    let lock = tokio::task::spawn_blocking(move || store.lock_named("prepare.lock")).await??;
    if !tools.store().exists(&name) {
        // Images of earlier builds are half a gigabyte each: only this build's stays.
        for old in tools.store().names() {
            if old.starts_with("prepared-") {
                let _lock = tools.store().lock()?;
                tools.store().delete(&old)?;
            }
        }
        substrate(tools, VANILLA)
            .prepare(VANILLA, &name, BootSpec::new("prepare"))
            .await
            .context("prepare the image")?;
    }
    drop(lock);
    Ok(name)
}
