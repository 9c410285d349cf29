//! Protocol v1 conformance of the real harness in a simulated Apple container: the service
//! and image checks, `container run` with the env file, the published port and the broker on
//! the network's gateway all real.
#![cfg(target_os = "linux")]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::collections::BTreeMap;

use substrate_core::Substrate;
use substrate_testkit::conformance::Ctx;
use substrate_testkit::model::{Script, ScriptedModel};

mod common;

async fn boot() -> anyhow::Result<Ctx> {
    let tools = common::sim()?;
    let model = ScriptedModel::start(Script::new()).await?;
    let harness = common::substrate(&tools)
        .boot_harness(common::spec("conformance", &model.base_url()))
        .await?;
    Ctx::new(harness, model, BTreeMap::new())
}

substrate_testkit::conformance_suite!(boot);
