//! `cargo xtask test`: everything CI checks, on a fresh machine.
//!
//! Installs missing system packages when run as root (with a clear message otherwise), stages
//! the harness's node_modules, runs every test of the workspace, then the lints.

use std::process::Command;

use anyhow::{Context, bail};

use crate::workspace_root;

/// Debian packages the tests need, with the command each one provides.
const SYSTEM_PACKAGES: &[(&str, &str)] = &[
    ("git", "git"),
    ("ca-certificates", "update-ca-certificates"),
    ("bubblewrap", "bwrap"),
    ("e2fsprogs", "mkfs.ext4"),
    ("iproute2", "ip"),
    // The guest simulators' guests: a real sshd, host and client keys, password hashes.
    ("openssh-server", "sshd"),
    ("openssh-client", "ssh-keygen"),
    ("openssl", "openssl"),
    // The tart simulator's softnet (`--net-softnet-block`).
    ("nftables", "nft"),
    // The terminal tests drive `computeragent shell` as a person would.
    ("tmux", "tmux"),
    // The change set's plain patches are checked by applying them with `patch -p1`.
    ("patch", "patch"),
];

/// The facade's features that offer the macOS runtimes here, against the simulators.
const SIMULATED_RUNTIMES: &str = "tart-on-any-os,apple-container-on-any-os";

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let lint = !args.iter().any(|a| a == "--no-lint");
    if let Some(bad) = args.iter().find(|a| *a != "--no-lint") {
        bail!("unknown argument `{bad}` (usage: cargo xtask test [--no-lint])");
    }
    ensure_system_packages()?;
    check_node()?;
    crate::stage::run(&[])?;

    let root = workspace_root();
    // The guest simulator the VM runtimes' tests put first on their PATH.
    cargo(
        &["build", "-p", "substrate-testkit", "--bin", "guest-sim"],
        "the guest simulator",
    )?;
    if has_nextest() {
        cargo(
            &["nextest", "run", "--workspace", "--no-fail-fast"],
            "the tests",
        )?;
    } else {
        eprintln!("note: cargo-nextest not found; using cargo test");
        cargo(
            &["test", "--workspace", "--no-fail-fast", "--all-targets"],
            "the tests",
        )?;
    }
    // The CLI on the tart and container simulators: the facade built with those runtimes on
    // this OS.
    cargo(
        &[
            "test",
            "-p",
            "computeragent",
            "--features",
            SIMULATED_RUNTIMES,
            "--test",
            "terminal",
            "--",
            "tart",
            "container",
        ],
        "the CLI's tests on the tart and container simulators",
    )?;
    cargo(&["test", "--workspace", "--doc"], "the doc tests")?;
    crate::features::run()?;
    if lint {
        cargo(
            &["fmt", "--all", "--check"],
            "rustfmt (run `cargo fmt --all`)",
        )?;
        cargo(
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
            "clippy",
        )?;
        cargo(
            &[
                "clippy",
                "-p",
                "computeragent",
                "--features",
                SIMULATED_RUNTIMES,
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
            "clippy on the facade with the simulated runtimes",
        )?;
    }
    eprintln!("all checks passed in {}", root.display());
    Ok(())
}

fn cargo(args: &[&str], what: &str) -> anyhow::Result<()> {
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| String::from("cargo")))
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("run cargo for {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn has_nextest() -> bool {
    Command::new("cargo")
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn command_exists(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn ensure_system_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = SYSTEM_PACKAGES
        .iter()
        .filter(|(_, cmd)| !command_exists(cmd))
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() || !command_exists("apt-get") {
        bail!(
            "missing system packages: {}. Install them (e.g. `sudo apt-get install -y {}`) and run again",
            missing.join(", "),
            missing.join(" ")
        );
    }
    eprintln!("installing system packages: {}", missing.join(" "));
    let update = Command::new("apt-get").arg("update").status()?;
    if !update.success() {
        bail!("apt-get update failed ({update})");
    }
    let status = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?;
    if !status.success() {
        bail!("apt-get install {} failed ({status})", missing.join(" "));
    }
    Ok(())
}

fn check_node() -> anyhow::Result<()> {
    let out = Command::new("node").arg("--version").output();
    let version = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        _ => bail!(
            "Node.js 20 or newer is needed and `node` was not found. Install it (Debian/Ubuntu: \
             https://github.com/nodesource/distributions, or `apt-get install nodejs` where it is ≥ 20)"
        ),
    };
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 20 {
        bail!("Node.js 20 or newer is needed; found {version}");
    }
    Ok(())
}
