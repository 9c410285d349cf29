//! Shared by the bwrap integration tests: a substrate over the staged modules, loudly failing
//! when bwrap is missing.
#![allow(dead_code)]

use runtime_bwrap::BwrapSubstrate;

/// The substrate every test boots. Fails (never skips) when bwrap or the staged modules are
/// missing: `cargo xtask test` installs bubblewrap.
pub fn substrate() -> anyhow::Result<BwrapSubstrate> {
    let modules = substrate_testkit::stage::ensure_staged().map_err(anyhow::Error::msg)?;
    if std::process::Command::new("bwrap")
        .arg("--version")
        .output()
        .is_err()
    {
        anyhow::bail!(
            "bwrap is not installed: these tests run real sandboxes. Install it \
             (`apt-get install bubblewrap`) or run `cargo xtask test`, which does"
        );
    }
    Ok(BwrapSubstrate::new(modules))
}

/// The scripted model's URL as the sandbox must use it under `allow`: by the name
/// `model.test`, which the egress proxy answers with the host's loopback.
pub fn via_proxy(model_base_url: &str) -> String {
    let port = model_base_url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap_or_default();
    format!("http://model.test:{port}")
}
