//! The apple-container runtime's boot path on the `container` simulator, end to end: the real
//! Claude Code CLI in the container, the key kept on the host, secrets in no argv and no file
//! left behind, and each failure giving a clear error and leaving nothing behind.
#![cfg(target_os = "linux")]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use substrate_core::client::ChatSession;
use substrate_core::protocol::{CreateSession, EndReason};
use substrate_core::{
    BootPhase, ErrorKind, NetworkPolicy, PhaseDeadlines, ResourceLimits, Secret, Substrate,
};
use substrate_testkit::guestsim::SimTools;
use substrate_testkit::model::{Reply, Script, ScriptedModel};

mod common;

/// The containers (any state) whose id starts with `prefix`.
fn containers(tools: &SimTools, prefix: &str) -> Vec<String> {
    let out = std::process::Command::new(tools.container())
        .args(["list", "--all", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    runtime_applecontainer::argv::parse_containers(&out.stdout)
        .unwrap()
        .into_iter()
        .map(|c| c.configuration.id)
        .filter(|id| id.starts_with(prefix))
        .collect()
}

/// Nothing of a boot with `prefix` is left: no container, no process, no host state.
fn assert_nothing_left(tools: &SimTools, prefix: &str) {
    let left = containers(tools, prefix);
    assert!(left.is_empty(), "containers left: {left:?}");
    let procs: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(prefix))
        .collect();
    assert!(procs.is_empty(), "processes left: {procs:?}");
    let state: Vec<String> = std::fs::read_dir(tools.container_store_root().join("state"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    assert!(state.is_empty(), "host state left: {state:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_works_in_the_container_and_the_key_stays_on_the_host() {
    let tools = common::sim().unwrap();
    let canary = format!("sk-ant-canary-{}", Secret::random_token().unwrap().expose());
    let model = ScriptedModel::start(
        Script::new()
            .reply(Reply::tool_use(
                "Bash",
                json!({"command": "hostname > host.txt; id -un > user.txt; \
                    for p in /proc/[0-9]*; do cat $p/environ $p/cmdline 2>/dev/null; echo; done > dump.bin; \
                    find \"$HOME\" -type f -size -20M -exec cat {} + >> dump.bin 2>/dev/null; \
                    touch /opt/computeragent/tampered 2>/dev/null && echo writable > opt.txt; \
                    printf 'made in the container\\n' > hello.md"}),
            ))
            .reply(Reply::text("Done.")),
    )
    .await
    .unwrap();
    let prefix = common::prefix("e2e");
    let substrate = common::substrate(&tools).prefix(prefix.clone());
    let spec = common::spec("e2e", &model.base_url())
        .env("ANTHROPIC_API_KEY", canary.clone())
        .limits(ResourceLimits::default().memory(1 << 30).cpu_millis(1500));
    let harness = substrate.boot_harness(spec).await.unwrap();
    let name = containers(&tools, &prefix)
        .pop()
        .expect("the boot's container");
    let lease = tools
        .container_store()
        .state(&name)
        .and_then(|s| s.lease)
        .expect("the container has a network lease");
    // The env file is gone as soon as `container run` returned.
    let run_dir = tools.container_store_root().join("state").join(&name);
    assert!(run_dir.is_dir(), "{}", run_dir.display());
    assert!(
        !run_dir.join("harness.env").exists(),
        "the env file is still there"
    );

    let client = harness.client().unwrap();
    let mut chat = ChatSession::start(client.clone(), CreateSession::new("claude-agent-sdk"))
        .await
        .unwrap();
    let outcome = chat.ask("Look around").await.unwrap();
    assert_eq!(outcome.result_text(), Some("Done."));
    let id = chat.session_id().to_owned();
    let read = |path: &'static str| {
        let client = client.clone();
        let id = id.clone();
        async move { client.read_file(&id, path).await.unwrap().to_vec() }
    };
    assert_eq!(read("hello.md").await, b"made in the container\n");
    assert_eq!(
        String::from_utf8(read("user.txt").await).unwrap().trim(),
        "node"
    );
    assert_eq!(
        String::from_utf8(read("host.txt").await).unwrap().trim(),
        name
    );
    let dump = String::from_utf8_lossy(&read("dump.bin").await).into_owned();
    assert!(dump.contains("ANTHROPIC_BASE_URL=http://"), "no broker URL");
    assert!(!dump.contains(&canary), "the key is inside the container");
    let tree = client.tree(&id, ".", 1).await.unwrap();
    assert!(
        !tree.entries.iter().any(|e| e.path == "opt.txt"),
        "the agent could change the harness"
    );
    assert_eq!(chat.finish().await.unwrap().reason, EndReason::Complete);
    // The model got the real key, through the broker on the network's gateway.
    let requests = model.model_requests();
    assert!(!requests.is_empty());
    for r in requests {
        let key = r
            .headers
            .iter()
            .find(|(k, _)| k == "x-api-key")
            .map(|(_, v)| v.clone());
        assert_eq!(key.as_deref(), Some(canary.as_str()), "{:?}", r.path);
    }
    harness.shutdown().await.unwrap();
    harness.shutdown().await.unwrap();
    // No argv of any `container` call carries the key or the token; the limits went in.
    let calls = tools.container_calls();
    let run = calls
        .iter()
        .find(|c| c.first().map(String::as_str) == Some("run") && c.contains(&name))
        .expect("the run call");
    assert!(
        run.windows(2).any(|w| w == ["--memory", "1024M"]),
        "{run:?}"
    );
    assert!(run.windows(2).any(|w| w == ["--cpus", "2"]), "{run:?}");
    assert!(
        run.iter()
            .any(|a| a.starts_with("127.0.0.1:") && a.ends_with(":7780/tcp")),
        "{run:?}"
    );
    for call in &calls {
        let line = call.join(" ");
        assert!(!line.contains(&canary), "{call:?}");
        assert!(!line.contains(harness.token().expose()), "{call:?}");
    }
    // Its network namespace and address lease went with it.
    let netns = substrate_testkit::guestsim::container::netns_name(lease);
    assert!(
        !Path::new("/run/netns").join(&netns).exists(),
        "{netns} left"
    );
    assert!(
        !substrate_testkit::guestsim::container::leases()
            .iter()
            .any(|(n, _)| *n == lease),
        "lease {lease} left"
    );
    assert_nothing_left(&tools, &prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_service_is_a_clear_error_naming_the_start_command() {
    let tools = common::private_sim("service").unwrap();
    tools.set_container_service(false).unwrap();
    let prefix = common::prefix("service");
    let err = common::substrate(&tools)
        .prefix(prefix.clone())
        .boot_harness(common::bare("service"))
        .await
        .unwrap_err();
    tools.set_container_service(true).unwrap();
    assert_eq!(err.phase(), Some(BootPhase::Preflight), "{err}");
    assert_eq!(err.kind(), ErrorKind::NotInstalled, "{err}");
    let text = err.to_string();
    assert!(text.contains("system start"), "{text}");
    assert!(text.contains("not running"), "{text}");
    assert_nothing_left(&tools, &prefix);
    let _ = std::fs::remove_dir_all(tools.container_store_root());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_names_how_to_build_or_pull_it() {
    let tools = common::sim().unwrap();
    let prefix = common::prefix("noimage");
    let err = runtime_applecontainer::AppleContainerSubstrate::with_image(
        "computeragent-harness:not-built",
    )
    .container(tools.container())
    .state_dir(tools.container_store_root().join("state"))
    .assume_supported_host()
    .prefix(prefix.clone())
    .boot_harness(common::bare("noimage"))
    .await
    .unwrap_err();
    assert_eq!(err.phase(), Some(BootPhase::Preflight), "{err}");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let text = err.to_string();
    assert!(text.contains("computeragent-harness:not-built"), "{text}");
    assert!(text.contains("cargo xtask image"), "{text}");
    assert!(text.contains("image pull"), "{text}");
    assert_nothing_left(&tools, &prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_harness_that_exits_during_boot_is_reported_with_its_output() {
    let tools = common::sim().unwrap();
    let image = common::broken_image(
        &tools,
        "exits",
        &[
            "node",
            "-e",
            "console.error('harness: simulated crash'); process.exit(3)",
        ],
    )
    .unwrap();
    let prefix = common::prefix("exits");
    let err = common::substrate_of(&tools, &image)
        .prefix(prefix.clone())
        .boot_harness(common::bare("exits"))
        .await
        .unwrap_err();
    assert_eq!(err.phase(), Some(BootPhase::Health), "{err}");
    assert_eq!(err.kind(), ErrorKind::ProcessFailed, "{err}");
    assert!(err.to_string().contains("simulated crash"), "{err}");
    assert_nothing_left(&tools, &prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_harness_that_never_answers_times_out_with_its_output() {
    let tools = common::sim().unwrap();
    let image = common::broken_image(
        &tools,
        "hangs",
        &[
            "node",
            "-e",
            "console.error('harness: stuck before listening'); setInterval(() => {}, 1000)",
        ],
    )
    .unwrap();
    let prefix = common::prefix("hangs");
    let spec = common::bare("hangs")
        .deadlines(PhaseDeadlines::default().with(BootPhase::Health, Duration::from_secs(3)));
    let err = common::substrate_of(&tools, &image)
        .prefix(prefix.clone())
        .boot_harness(spec)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BootTimeout, "{err}");
    assert_eq!(err.phase(), Some(BootPhase::Health), "{err}");
    assert!(err.to_string().contains("stuck before listening"), "{err}");
    assert_nothing_left(&tools, &prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_host_port_is_a_clear_error() {
    let tools = common::sim().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let prefix = common::prefix("port");
    let err = common::substrate(&tools)
        .prefix(prefix.clone())
        .host_port(port)
        .boot_harness(common::bare("port"))
        .await
        .unwrap_err();
    assert_eq!(err.phase(), Some(BootPhase::Start), "{err}");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("127.0.0.1:{port} is taken")),
        "{text}"
    );
    assert_nothing_left(&tools, &prefix);
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_a_container_cannot_enforce_are_refused_and_other_hosts_are_unsupported() {
    let tools = common::sim().unwrap();
    for policy in [
        NetworkPolicy::None,
        NetworkPolicy::Allow(vec!["example.com".into()]),
    ] {
        let err = common::substrate(&tools)
            .boot_harness(substrate_core::BootSpec::new("policy").network(policy))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    }
    // Without the simulator's say-so, Linux is not a host Apple's `container` runs on.
    let err = runtime_applecontainer::AppleContainerSubstrate::new()
        .container(tools.container())
        .boot_harness(common::bare("linux"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("bwrap"), "{err}");
    // And it asked the CLI nothing.
    assert!(
        !tools
            .container_calls()
            .iter()
            .any(|c| c.iter().any(|a| a.contains("linux"))),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_a_crashed_run_are_reaped() {
    let tools = common::sim().unwrap();
    let prefix = common::prefix("reap");
    // A container named as a run with a pid that no longer exists would name it.
    let dead = format!("{prefix}4194000-crashed-abcd1234");
    let image = common::broken_image(&tools, "idle", &["sleep", "600"]).unwrap();
    let out = std::process::Command::new(tools.container())
        .args(["run", "--detach", "--name", &dead, &image])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let live = format!("{prefix}{}-alive-abcd1234", std::process::id());
    let out = std::process::Command::new(tools.container())
        .args(["run", "--detach", "--name", &live, &image])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let reaped = common::substrate_of(&tools, &image)
        .prefix(prefix.clone())
        .reap_leftovers()
        .await
        .unwrap();
    assert_eq!(reaped.containers, vec![dead.clone()]);
    assert_eq!(containers(&tools, &prefix), vec![live.clone()]);
    let _ = std::process::Command::new(tools.container())
        .args(["delete", "--force", &live])
        .output();
    assert_nothing_left(&tools, &prefix);
}

/// The simulator's `container exec`, which terminals in a container rest on: the command runs
/// inside the running container (its root, hostname, PID namespace, user, the given
/// environment and working directory), with the caller's stdio, and its exit status is the
/// command's; a stopped or unknown container is an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_a_command_inside_a_running_container() {
    let tools = common::sim().unwrap();
    let image = common::broken_image(&tools, "sleeper", &["sleep", "100000"]).unwrap();
    let id = format!("exec-test-{}", std::process::id());
    let container = |args: &[&str]| {
        std::process::Command::new(tools.container())
            .args(args)
            .output()
            .unwrap()
    };
    let out = container(&["run", "--detach", "--name", &id, &image]);
    assert!(out.status.success(), "{out:?}");
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("env");
    std::fs::write(&env_file, "GREETING=from the env file\n").unwrap();
    let out = container(&[
        "exec",
        "--env-file",
        env_file.to_str().unwrap(),
        "--env",
        "SECOND=2",
        "--workdir",
        "/tmp",
        &id,
        "sh",
        "-c",
        "echo \"$GREETING $SECOND\"; id -u; pwd; hostname; \
         ls /proc | grep -c '^[0-9]'; cat /proc/[0-9]*/cmdline | tr '\\0' ' '; echo",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<&str> = stdout.lines().collect();
    let recipe = runtime_applecontainer::ImageRecipe::for_this_build();
    assert_eq!(lines[0], "from the env file 2", "{stdout}");
    assert_eq!(lines[1], recipe.uid.to_string(), "{stdout}");
    assert_eq!(lines[2], "/tmp", "{stdout}");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_ne!(lines[3], host.trim(), "{stdout}");
    // Its PID namespace is the container's: a handful of processes, the container's among
    // them, not the host's hundreds.
    let processes: usize = lines[4].parse().unwrap();
    assert!(processes < 10, "{stdout}");
    assert!(lines[5].contains("sleep 100000"), "{stdout}");
    let out = container(&["exec", &id, "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    let out = container(&["stop", &id]);
    assert!(out.status.success(), "{out:?}");
    let out = container(&["exec", &id, "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not running"),
        "{out:?}"
    );
    let _ = container(&["delete", "--force", &id]);
    let out = container(&["exec", "nobody-here", "true"]);
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_sizes_resizes_interrupts_and_brings_its_files_back_then_leaves_nothing() {
    let tools = common::sim().unwrap();
    let prefix = common::prefix("terminal");
    let substrate = common::substrate(&tools).prefix(prefix.clone());
    let scratch = tempfile::tempdir().unwrap();
    substrate_testkit::terminal::check_terminal(
        &substrate,
        &common::bare("terminal"),
        scratch.path(),
    )
    .await
    .unwrap();
    assert_nothing_left(&tools, &prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_beside_the_harness_ends_without_ending_the_container() {
    let tools = common::sim().unwrap();
    let prefix = common::prefix("booted-terminal");
    let substrate = common::substrate(&tools).prefix(prefix.clone());
    let harness = substrate
        .boot_harness(common::bare("booted-terminal"))
        .await
        .unwrap();
    substrate_testkit::terminal::check_booted_terminal(&harness)
        .await
        .unwrap();
    harness.shutdown().await.unwrap();
    assert_nothing_left(&tools, &prefix);
}
