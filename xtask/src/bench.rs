//! `cargo xtask bench`: runs the benchmark program in a release build.

use std::process::Command;

use anyhow::{Context, bail};

use crate::workspace_root;

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let example = match args {
        [] => "bench",
        [which] if which == "bwrap" => "bench-bwrap",
        [which] if which == "egress" => "bench-egress",
        [which] if which == "vm" => "bench-vm",
        [which] if which == "server" => "bench-server",
        [which] if which == "project" => "bench-project",
        _ => bail!("usage: cargo xtask bench [bwrap|egress|vm|server|project]"),
    };
    if example == "bench-vm" {
        // The guest simulator the VM benchmark drives, next to the example.
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| String::from("cargo")))
            .args([
                "build",
                "--release",
                "-p",
                "substrate-testkit",
                "--bin",
                "guest-sim",
            ])
            .current_dir(workspace_root())
            .status()
            .context("build the guest simulator")?;
        if !status.success() {
            bail!("building the guest simulator failed ({status})");
        }
    }
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| String::from("cargo")))
        .args([
            "run",
            "--release",
            "-p",
            "substrate-examples",
            "--example",
            example,
        ])
        .current_dir(workspace_root())
        .status()
        .context("run the benchmarks")?;
    if !status.success() {
        bail!("the benchmarks failed ({status})");
    }
    Ok(())
}
