//! On a host with Lima: a real instance from `$LIMA_TEMPLATE` (a template with Node.js 20+),
//! built into a base, cloned, booted, checked, deleted. Ignored by default; when asked to
//! run, a missing `limactl` or template fails loudly.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use runtime_lima::{LimaBase, LimaSubstrate};
use substrate_core::{BootSpec, NetworkPolicy, Substrate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Lima (limactl) and LIMA_TEMPLATE"]
async fn a_real_lima_instance_boots_the_harness() {
    let template = std::env::var("LIMA_TEMPLATE")
        .expect("set LIMA_TEMPLATE to a template with Node.js 20+, e.g. template://debian-12");
    let base = format!("computeragent-test-base-{}", std::process::id());
    let lima = LimaSubstrate::new(LimaBase::Clone(base.clone()));
    lima.build_base(&template, &base, None, BootSpec::new("real-base"))
        .await
        .expect("build the base (is limactl installed?)");
    let harness = lima
        .boot_harness(BootSpec::new("real").network(NetworkPolicy::Host))
        .await
        .unwrap();
    let health = harness.client().unwrap().health().await.unwrap();
    assert!(health.engines.contains_key("claude-agent-sdk"));
    harness.shutdown().await.unwrap();
    let _ = std::process::Command::new("limactl")
        .args(["delete", "--force", &base])
        .status();
}
