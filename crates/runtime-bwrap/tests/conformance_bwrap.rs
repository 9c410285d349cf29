//! Protocol v1 conformance of the real harness inside a real bwrap jail.
#![cfg(target_os = "linux")]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use substrate_core::{BootSpec, NetworkPolicy, Substrate};
use substrate_testkit::conformance::{Ctx, scripted_engine_envs};
use substrate_testkit::model::{Script, ScriptedModel};

mod common;

async fn boot() -> anyhow::Result<Ctx> {
    let model = ScriptedModel::start(Script::new()).await?;
    // The engine reaches the scripted model as a real run reaches the real API: through the
    // relay and the host's egress proxy, which alone knows that `model.test` is loopback.
    let substrate = common::substrate()?.egress_host("model.test", "127.0.0.1".parse()?);
    let spec =
        BootSpec::new("conformance").network(NetworkPolicy::Allow(vec!["model.test".into()]));
    let harness = substrate.boot_harness(spec).await?;
    let envs = scripted_engine_envs(&common::via_proxy(&model.base_url()));
    Ctx::new(harness, model, envs)
}

substrate_testkit::conformance_suite!(boot);
