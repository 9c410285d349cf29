//! `cargo xtask stage [DIR]`: install the harness's run-time node_modules.

use std::path::PathBuf;

use anyhow::bail;

use crate::workspace_root;

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let dir = match args {
        [] => workspace_root().join("target/harness-stage"),
        [dir] if !dir.starts_with('-') => PathBuf::from(dir),
        _ => bail!("usage: cargo xtask stage [DIR]"),
    };
    eprintln!("staging the harness's node_modules in {} …", dir.display());
    let report = harness_bundle::stage(&dir)?;
    if report.skipped {
        eprintln!("already up to date: {}", report.node_modules.display());
    } else {
        eprintln!(
            "staged {} in {:.1?}",
            report.node_modules.display(),
            report.duration
        );
    }
    Ok(())
}
