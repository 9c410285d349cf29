//! Protocol v1 conformance of the real harness under node, booted by the `local` substrate.

use substrate_core::{BootSpec, NetworkPolicy, Substrate};
use substrate_testkit::conformance::{Ctx, scripted_engine_envs};
use substrate_testkit::local::LocalSubstrate;
use substrate_testkit::model::{Script, ScriptedModel};

async fn boot() -> anyhow::Result<Ctx> {
    let modules = substrate_testkit::stage::ensure_staged().map_err(anyhow::Error::msg)?;
    let model = ScriptedModel::start(Script::new()).await?;
    let spec = BootSpec::new("conformance").network(NetworkPolicy::Host);
    let harness = LocalSubstrate::new(modules).boot_harness(spec).await?;
    let envs = scripted_engine_envs(&model.base_url());
    Ctx::new(harness, model, envs)
}

substrate_testkit::conformance_suite!(boot);
