//! Protocol v1 conformance of the real harness inside a real bwrap jail.
#![cfg(target_os = "linux")]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::collections::BTreeMap;

use substrate_core::Substrate;
use substrate_testkit::conformance::{Ctx, scripted_boot_spec};
use substrate_testkit::model::{Script, ScriptedModel};

mod common;

async fn boot() -> anyhow::Result<Ctx> {
    let model = ScriptedModel::start(Script::new()).await?;
    // The key is given at boot, as a real run gives the real one: the engine reaches the
    // scripted model through the relay and the host's credential broker, with no network.
    let substrate = common::substrate()?;
    let harness = substrate
        .boot_harness(scripted_boot_spec("conformance", &model.base_url()))
        .await?;
    Ctx::new(harness, model, BTreeMap::new())
}

substrate_testkit::conformance_suite!(boot);
