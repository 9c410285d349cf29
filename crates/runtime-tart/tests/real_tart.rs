//! On a Mac with Tart: a real VM cloned from `$TART_IMAGE` (a Linux image with Node.js 20+),
//! prepared, booted, checked, deleted. Ignored by default; when asked to run, a missing
//! `tart` or image fails loudly.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use runtime_tart::TartSubstrate;
use substrate_core::{BootSpec, Substrate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tart on macOS"]
async fn a_real_tart_vm_boots_the_harness() {
    let image = std::env::var("TART_IMAGE")
        .expect("set TART_IMAGE to a local Linux image with Node.js 20+");
    let prepared = format!("computeragent-test-prepared-{}", std::process::id());
    TartSubstrate::new(&image)
        .prepare(&image, &prepared, BootSpec::new("real-prepare"))
        .await
        .expect("prepare the image (is tart installed?)");
    let tart = TartSubstrate::new(&prepared);
    let harness = tart.boot_harness(BootSpec::new("real")).await.unwrap();
    let health = harness.client().unwrap().health().await.unwrap();
    assert!(health.engines.contains_key("claude-agent-sdk"));
    harness.shutdown().await.unwrap();
    let _ = std::process::Command::new("tart")
        .args(["delete", &prepared])
        .status();
}
