//! Protocol v1 conformance of the real harness inside a real bwrap jail.
#![cfg(target_os = "linux")]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use substrate_core::{BootSpec, NetworkPolicy, Substrate};
use substrate_testkit::conformance::{Ctx, scripted_engine_envs};
use substrate_testkit::model::{Script, ScriptedModel};

mod common;

async fn boot() -> anyhow::Result<Ctx> {
    let substrate = common::substrate()?;
    let model = ScriptedModel::start(Script::new()).await?;
    // The scripted model listens on the host's loopback: `host` networking reaches it.
    let spec = BootSpec::new("conformance").network(NetworkPolicy::Host);
    let harness = substrate.boot_harness(spec).await?;
    let envs = scripted_engine_envs(&model.base_url());
    Ctx::new(harness, model, envs)
}

substrate_testkit::conformance_suite!(boot);
