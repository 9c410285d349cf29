//! The facade's feature sets pull only their own platforms' dependencies: a macOS build with
//! the VM runtimes has no Linux sandboxing crate, a Linux build with bwrap alone has no VM or
//! SSH crate. Checked with `cargo tree` for each target (resolution only; no toolchain for the
//! target is needed).

use std::process::Command;

use anyhow::{Context, bail};

use crate::workspace_root;

/// (features, target, crates that must not appear).
const SETS: &[(&str, &str, &[&str])] = &[
    (
        "tart,apple-container,lima,cli",
        "aarch64-apple-darwin",
        &["runtime-bwrap", "seccompiler"],
    ),
    (
        "bwrap",
        "x86_64-unknown-linux-gnu",
        &[
            "runtime-tart",
            "runtime-applecontainer",
            "runtime-lima",
            "russh",
        ],
    ),
    (
        "lima",
        "x86_64-unknown-linux-gnu",
        &[
            "runtime-bwrap",
            "runtime-tart",
            "runtime-applecontainer",
            "seccompiler",
        ],
    ),
];

pub fn run() -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| String::from("cargo"));
    for (features, target, forbidden) in SETS {
        let out = Command::new(&cargo)
            .args([
                "tree",
                "-p",
                "computeragent",
                "--no-default-features",
                "--features",
                features,
                "--target",
                target,
                "-e",
                "normal",
                "--prefix",
                "none",
            ])
            .current_dir(workspace_root())
            .output()
            .context("run cargo tree")?;
        if !out.status.success() {
            bail!(
                "cargo tree for features {features} on {target} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let tree = String::from_utf8_lossy(&out.stdout);
        let names: Vec<&str> = tree
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        for crate_name in *forbidden {
            if names.contains(crate_name) {
                bail!(
                    "computeragent with features `{features}` on {target} pulls `{crate_name}`, \
                     which that platform's build must not have"
                );
            }
        }
        eprintln!(
            "features `{features}` on {target}: none of {}",
            forbidden.join(", ")
        );
    }
    Ok(())
}
