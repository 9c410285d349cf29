//! `cargo xtask bench`: runs the benchmark program in a release build.

use std::process::Command;

use anyhow::{Context, bail};

use crate::workspace_root;

pub fn run(args: &[String]) -> anyhow::Result<()> {
    if let Some(bad) = args.first() {
        bail!("unknown argument `{bad}` (usage: cargo xtask bench)");
    }
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| String::from("cargo")))
        .args([
            "run",
            "--release",
            "-p",
            "substrate-examples",
            "--example",
            "bench",
        ])
        .current_dir(workspace_root())
        .status()
        .context("run the benchmarks")?;
    if !status.success() {
        bail!("the benchmarks failed ({status})");
    }
    Ok(())
}
