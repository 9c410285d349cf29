//! On a Mac with macOS 26 and Apple's `container` (service started, harness image built with
//! `cargo xtask image`): a real container boots the harness, runs the scripted agent turn
//! through the broker on the network's gateway, and is gone after shutdown. Ignored by
//! default; when asked to run, a missing tool, service or image fails loudly.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use runtime_applecontainer::AppleContainerSubstrate;
use substrate_core::Substrate;
use substrate_core::client::ChatSession;
use substrate_core::protocol::CreateSession;
use substrate_testkit::conformance::scripted_boot_spec;
use substrate_testkit::model::{Reply, Script, ScriptedModel};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs container on macOS 26"]
async fn a_real_container_boots_the_harness_and_runs_a_turn() {
    // The broker relay listens on the network's gateway; the scripted model on loopback is
    // reached through it, as the real API would be.
    let model = ScriptedModel::start(Script::new().reply(Reply::text("Hello from a container.")))
        .await
        .unwrap();
    let substrate = AppleContainerSubstrate::new();
    let harness = substrate
        .boot_harness(scripted_boot_spec("real", &model.base_url()))
        .await
        .expect("boot (is the service started and the image built with `cargo xtask image`?)");
    let mut chat = ChatSession::start(
        harness.client().unwrap(),
        CreateSession::new("claude-agent-sdk"),
    )
    .await
    .unwrap();
    let outcome = chat.ask("Say hello").await.unwrap();
    assert_eq!(outcome.result_text(), Some("Hello from a container."));
    chat.finish().await.unwrap();
    harness.shutdown().await.unwrap();
    let reaped = substrate.reap_leftovers().await.unwrap();
    assert!(reaped.containers.is_empty(), "{reaped:?}");
}
