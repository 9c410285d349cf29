//! `cargo xtask snapshots [--accept]`: the argv snapshot tests of every runtime.

use std::process::Command;

use anyhow::{Context, bail};

use crate::workspace_root;

/// (package, test target) of every argv snapshot suite.
const SUITES: &[(&str, &str)] = &[
    ("runtime-bwrap", "argv_snapshots"),
    ("runtime-tart", "argv_snapshots"),
    ("runtime-lima", "argv_snapshots"),
    ("runtime-applecontainer", "argv_snapshots"),
];

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let accept = args.iter().any(|a| a == "--accept");
    if let Some(bad) = args.iter().find(|a| *a != "--accept") {
        bail!("unknown argument `{bad}` (usage: cargo xtask snapshots [--accept])");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| String::from("cargo"));
    for (package, test) in SUITES {
        let status = Command::new(&cargo)
            .args(["test", "-p", package, "--test", test])
            // Changed snapshots fail unless accepted; accepted ones are written for review
            // in `git diff`.
            .env("INSTA_UPDATE", if accept { "always" } else { "no" })
            .current_dir(workspace_root())
            .status()
            .with_context(|| format!("run the {package} snapshot tests"))?;
        if !status.success() {
            bail!(
                "{package}: argv snapshots differ ({status}); review the change and run \
                 `cargo xtask snapshots --accept` if it is intended"
            );
        }
    }
    Ok(())
}
