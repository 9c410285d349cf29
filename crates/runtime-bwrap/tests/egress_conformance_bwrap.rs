//! The egress conformance suite against real bwrap sandboxes: each case in a private network
//! namespace, the sandbox's clients going through the in-sandbox relay to the host's proxy.
#![cfg(target_os = "linux")]

use std::net::SocketAddr;

use substrate_core::{BootSpec, BootedHarness, Substrate};

mod common;

async fn boot(spec: BootSpec, dns: SocketAddr) -> anyhow::Result<BootedHarness> {
    let substrate = common::substrate()?.egress_name_servers(vec![dns]);
    Ok(substrate.boot_harness(spec).await?)
}

substrate_testkit::egress_conformance_suite!(boot);
