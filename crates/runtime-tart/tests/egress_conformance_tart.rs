//! The egress conformance suite against simulated Tart VMs: each case in a private network
//! namespace (the VM's link to the host too), softnet blocking the VM's own connections, its
//! clients reaching the host's proxy through an SSH remote forward.
#![cfg(target_os = "linux")]

use std::net::SocketAddr;

use substrate_core::{BootSpec, BootedHarness, Substrate};
use substrate_ssh::guest::EgressOptions;

mod common;

async fn boot(spec: BootSpec, dns: SocketAddr) -> anyhow::Result<BootedHarness> {
    let tools = common::sim()?;
    let image = common::prepared(&tools).await?;
    let substrate = common::substrate(&tools, &image).egress_options(EgressOptions {
        name_servers: Some(vec![dns]),
        ..EgressOptions::default()
    });
    Ok(substrate.boot_harness(spec).await?)
}

substrate_testkit::egress_conformance_suite!(boot);
