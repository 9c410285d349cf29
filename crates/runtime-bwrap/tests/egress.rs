//! The `allow` network policy, end to end: the real Claude Code CLI in the jail reaches the
//! (scripted) model only through the relay and the host's egress proxy, which lets listed
//! names through and denies — and reports — everything else.
#![cfg(target_os = "linux")]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::sync::{Arc, Mutex};

use serde_json::json;
use substrate_core::client::ChatSession;
use substrate_core::protocol::{CreateSession, EndReason};
use substrate_core::{
    AuditSink, BootSpec, BoundaryEvent, EgressDecision, NetworkPolicy, Substrate,
};
use substrate_testkit::conformance::scripted_engine_envs;
use substrate_testkit::model::{Reply, Script, ScriptedModel};

mod common;

/// Asks the relay for a CONNECT tunnel the way any proxy-aware client would, with bash alone.
const DENIED_PROBE: &str = "exec 3<>/dev/tcp/127.0.0.1/3128; \
    printf 'CONNECT denied.test:443 HTTP/1.1\\r\\nHost: denied.test:443\\r\\n\\r\\n' >&3; \
    head -1 <&3 | tr -d '\\r' > denied.txt; \
    (exec 4<>/dev/tcp/127.0.0.1/9) 2>/dev/null && echo reached > direct.txt || echo refused > direct.txt";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_is_reached_through_the_proxy_and_nothing_else_is() {
    let model = ScriptedModel::start(
        Script::new()
            .reply(Reply::tool_use("Bash", json!({ "command": DENIED_PROBE })))
            .reply(Reply::text("Checked.")),
    )
    .await
    .unwrap();
    let url = common::via_proxy(&model.base_url());
    let port = url.rsplit(':').next().unwrap().to_owned();
    let decisions: Arc<Mutex<Vec<EgressDecision>>> = Arc::default();
    let seen = decisions.clone();
    let audit = AuditSink::new(move |event| match event {
        BoundaryEvent::Egress(d) => seen.lock().unwrap().push(d),
        BoundaryEvent::ProcessExit(_) | BoundaryEvent::Teardown(_) => {}
        other => panic!("unexpected event {other:?}"),
    });
    // `model.test` is the scripted model on the host's loopback, answered by the proxy's
    // own resolver: the sandbox never resolves a name and has no route to the host.
    let substrate = common::substrate()
        .unwrap()
        .egress_host("model.test", "127.0.0.1".parse().unwrap());
    let spec = BootSpec::new("egress")
        .network(NetworkPolicy::Allow(vec!["model.test".into()]))
        .audit(audit);
    let harness = substrate.boot_harness(spec).await.unwrap();
    let client = harness.client().unwrap();
    let mut request = CreateSession::new("claude-agent-sdk");
    request.envs = scripted_engine_envs(&url);
    let mut chat = ChatSession::start(client.clone(), request).await.unwrap();
    let outcome = chat.ask("Probe the network").await.unwrap();
    assert_eq!(outcome.result_text(), Some("Checked."));

    let id = chat.session_id().to_owned();
    let denied = client.read_file(&id, "denied.txt").await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&denied).trim(),
        "HTTP/1.1 403 Forbidden"
    );
    let direct = client.read_file(&id, "direct.txt").await.unwrap();
    assert_eq!(String::from_utf8_lossy(&direct).trim(), "refused");
    assert_eq!(chat.finish().await.unwrap().reason, EndReason::Complete);
    harness.shutdown().await.unwrap();

    // Every model request went through the proxy; the denial was reported.
    assert!(model.model_requests().len() >= 2);
    let decisions = decisions.lock().unwrap();
    let allowed: Vec<_> = decisions.iter().filter(|d| d.allowed).collect();
    assert!(!allowed.is_empty(), "{decisions:?}");
    for d in &allowed {
        assert_eq!(d.host, "model.test");
        assert_eq!(d.rule.as_deref(), Some("model.test"));
        assert_eq!(
            d.address.as_deref(),
            Some(format!("127.0.0.1:{port}").as_str())
        );
        assert!(d.bytes_up > 0 && d.bytes_down > 0, "{d:?}");
    }
    let denied: Vec<_> = decisions.iter().filter(|d| !d.allowed).collect();
    assert_eq!(denied.len(), 1, "{decisions:?}");
    assert_eq!(
        (denied[0].host.as_str(), denied[0].port),
        ("denied.test", 443)
    );
    assert!(denied[0].reason.is_some());
}

#[tokio::test]
async fn a_malformed_allow_rule_is_refused_before_anything_starts() {
    let substrate = common::substrate().unwrap();
    let spec = BootSpec::new("egress")
        .network(NetworkPolicy::Allow(vec!["https://api.example.com".into()]));
    let err = substrate.boot_harness(spec).await.unwrap_err();
    assert!(
        err.to_string().contains("`https://api.example.com`"),
        "{err}"
    );
}
