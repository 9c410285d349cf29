//! Protocol v1 conformance of the real harness in a simulated Lima instance: clone, start,
//! SSH through the instance's host port, harness start and port-forward all real.
#![cfg(target_os = "linux")]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::collections::BTreeMap;

use substrate_core::Substrate;
use substrate_testkit::conformance::Ctx;
use substrate_testkit::model::{Script, ScriptedModel};

mod common;

async fn boot() -> anyhow::Result<Ctx> {
    let tools = common::sim()?;
    let base = common::base(&tools).await?;
    let model = ScriptedModel::start(Script::new()).await?;
    let harness = common::substrate(&tools, base)
        .boot_harness(common::spec("conformance", &model.base_url()))
        .await?;
    Ctx::new(harness, model, BTreeMap::new())
}

substrate_testkit::conformance_suite!(boot);
