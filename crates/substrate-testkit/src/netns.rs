//! A private network namespace for tests that name private, metadata or public addresses:
//! whatever the code under test does, no packet can leave this machine from inside it.
//!
//! Namespaces belong to threads: call [`enter_private`] on the test's thread before it starts
//! a tokio runtime, so every worker thread is created inside.

use std::net::IpAddr;
use std::process::Command;

use anyhow::{Context, bail};
use nix::sched::{CloneFlags, unshare};

/// Moves the calling thread into a new network namespace whose only interface is loopback,
/// up, with `addresses` added to it (e.g. a documentation address such as `203.0.113.10` that
/// the egress vetting treats as public). There is no route anywhere else.
///
/// Needs root (CAP_SYS_ADMIN) and `ip` (iproute2); fails with what to do when either is
/// missing, never skips.
pub fn enter_private(addresses: &[IpAddr]) -> anyhow::Result<()> {
    unshare(CloneFlags::CLONE_NEWNET).context(
        "cannot create a private network namespace: this test needs root (CAP_SYS_ADMIN); \
         run it as root, as `cargo xtask test` in CI does",
    )?;
    ip(&["link", "set", "lo", "up"])?;
    for addr in addresses {
        let cidr = match addr {
            IpAddr::V4(_) => format!("{addr}/32"),
            IpAddr::V6(_) => format!("{addr}/128"),
        };
        ip(&["addr", "add", &cidr, "dev", "lo"])?;
    }
    // The proof that nothing leaves: no route but loopback's own.
    let routes = Command::new("ip")
        .args(["-4", "route", "show", "table", "main"])
        .output()
        .context("run `ip route`")?;
    if !routes.stdout.is_empty() {
        bail!(
            "the private namespace has routes: {}",
            String::from_utf8_lossy(&routes.stdout)
        );
    }
    Ok(())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("ip").args(args).status().context(
        "cannot run `ip`: install iproute2 (`apt-get install iproute2`; `cargo xtask test` does)",
    )?;
    if !status.success() {
        bail!("`ip {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
