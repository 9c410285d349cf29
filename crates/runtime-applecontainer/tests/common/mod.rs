//! Shared by the container tests: the `container` simulator on a store shared by every test
//! process, and the harness image built once in it the way the Containerfile lays it out.
#![allow(dead_code)]

use std::path::PathBuf;

use runtime_applecontainer::{AppleContainerSubstrate, ImageRecipe};
use substrate_core::{BootSpec, Secret};
use substrate_testkit::guestsim::{ContainerImage, SimTools};

/// Where the simulator keeps its stores for this workspace's tests.
fn sim_root() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("guest-sim")
}

/// The simulated `container` on the shared store, with the harness image of this build in
/// it. Fails (never skips) without root or the tools: `cargo xtask test` runs as root and
/// installs them.
pub fn sim() -> anyhow::Result<SimTools> {
    SimTools::check_host()?;
    let root = sim_root();
    let tools = SimTools::install(&root.join("container-bin"), &root.join("container-home"))?;
    tools.ensure_container_image(&harness_image()?)?;
    Ok(tools)
}

/// A simulator with a store of its own (for tests that stop the service).
pub fn private_sim(name: &str) -> anyhow::Result<SimTools> {
    SimTools::check_host()?;
    let root = sim_root().join(format!("container-{name}-{}", std::process::id()));
    let tools = SimTools::install(&root.join("bin"), &root.join("home"))?;
    tools.ensure_container_image(&harness_image()?)?;
    Ok(tools)
}

/// The harness image of this build, as the Containerfile of [`ImageRecipe`] lays it out: the
/// harness and its staged modules root-owned under the harness directory, the user's home
/// and workdir root owned by the user, the recipe's variables and command.
pub fn harness_image() -> anyhow::Result<ContainerImage> {
    let recipe = ImageRecipe::for_this_build();
    let modules = substrate_testkit::stage::ensure_staged().map_err(anyhow::Error::msg)?;
    let context = sim_root().join(format!("container-context-{}", std::process::id()));
    recipe.write_context(&context)?;
    let dir = &recipe.harness_dir;
    Ok(ContainerImage {
        reference: recipe.tag.clone(),
        files: vec![
            (context.join("harness.mjs"), format!("{dir}/harness.mjs")),
            (context.join("package.json"), format!("{dir}/package.json")),
            (
                context.join("package-lock.json"),
                format!("{dir}/package-lock.json"),
            ),
            (modules, format!("{dir}/node_modules")),
        ],
        dirs: vec![
            (recipe.home.clone(), recipe.uid, recipe.uid, 0o755),
            (recipe.workdir_root(), recipe.uid, recipe.uid, 0o755),
        ],
        cmd: recipe.cmd(),
        user: (recipe.uid, recipe.uid),
        env: recipe.env(),
        workdir: recipe.home.clone(),
    })
}

/// A tiny image whose command is `cmd` (no harness in it): a harness that dies or hangs.
pub fn broken_image(tools: &SimTools, what: &str, cmd: &[&str]) -> anyhow::Result<String> {
    let recipe = ImageRecipe::for_this_build();
    let reference = format!("computeragent-broken:{what}");
    tools.ensure_container_image(&ContainerImage {
        reference: reference.clone(),
        files: Vec::new(),
        dirs: vec![(recipe.home.clone(), recipe.uid, recipe.uid, 0o755)],
        cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
        user: (recipe.uid, recipe.uid),
        env: recipe.env(),
        workdir: recipe.home.clone(),
    })?;
    Ok(reference)
}

/// A substrate over the simulator running the harness image of this build, with its state in
/// the store.
pub fn substrate(tools: &SimTools) -> AppleContainerSubstrate {
    substrate_of(tools, &ImageRecipe::for_this_build().tag)
}

/// The same, running `image`.
pub fn substrate_of(tools: &SimTools, image: &str) -> AppleContainerSubstrate {
    AppleContainerSubstrate::with_image(image)
        .container(tools.container())
        .state_dir(tools.container_store_root().join("state"))
        .assume_supported_host()
}

/// A prefix of a test's own, so its containers can be told from other tests'.
pub fn prefix(test: &str) -> String {
    format!(
        "catest-{test}-{}-",
        &Secret::random_token()
            .unwrap_or_else(|e| panic!("{e}"))
            .expose()[..6]
            .to_ascii_lowercase()
    )
    .replace('_', "-")
}

/// A boot spec for the scripted model at `model`, on the service's network (the only policy
/// a container has).
pub fn spec(label: &str, model: &str) -> BootSpec {
    substrate_testkit::conformance::scripted_boot_spec(label, model)
        .network(substrate_core::NetworkPolicy::Host)
}

/// A boot spec with no model.
pub fn bare(label: &str) -> BootSpec {
    BootSpec::new(label).network(substrate_core::NetworkPolicy::Host)
}
