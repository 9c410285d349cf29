//! The `computeragent` command as a person runs it: the offline demo turn in a real bwrap
//! sandbox, NDJSON events, `exec` with streamed output and exit status, `doctor`, `gc`, and
//! bad input answered with what to do.
#![cfg(target_os = "linux")]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::process::{Command, Output};

fn computeragent(args: &[&str]) -> Output {
    substrate_testkit::stage::ensure_staged().unwrap();
    Command::new(env!("CARGO_BIN_EXE_computeragent"))
        .args(args)
        .env(
            "COMPUTERAGENT_STAGE_DIR",
            substrate_testkit::stage::stage_dir(),
        )
        .env_remove("ANTHROPIC_API_KEY")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn run_without_a_key_is_the_labelled_offline_demo_in_a_real_sandbox() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = computeragent(&[
        "run",
        "Say it's a test",
        "--memory",
        "1G",
        "--out",
        out_dir.path().to_str().unwrap(),
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("SCRIPTED DEMO MODEL"), "{stderr}");
    assert!(stderr.contains("agent running on bwrap"), "{stderr}");
    assert!(stdout.contains("▸ Bash"), "{stdout}");
    // The tool ran inside the sandbox, as its user.
    assert!(stdout.contains("  ← agent"), "{stdout}");
    assert!(stdout.contains("(scripted demo model)"), "{stdout}");
    assert!(stdout.contains("✓ success"), "{stdout}");
    let answer = std::fs::read_to_string(out_dir.path().join("answer.md")).unwrap();
    assert!(answer.contains("You asked: Say it's a test"), "{answer}");
}

#[test]
fn run_json_prints_one_event_per_line_in_order() {
    let out = computeragent(&["run", "hello", "--json"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let ids: Vec<u64> = events.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(types.contains(&"ca_turn_started"), "{types:?}");
    assert!(types.contains(&"sdk_message"), "{types:?}");
    assert_eq!(types.last(), Some(&"ca_usage_snapshot"), "{types:?}");
}

#[test]
fn exec_streams_output_and_returns_the_status() {
    let out = computeragent(&[
        "exec",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; id -un; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(text(&out.stdout), "out\nagent\n");
    assert!(text(&out.stderr).contains("err"), "{}", text(&out.stderr));
    let out = computeragent(&["exec", "--timeout", "1", "--", "sleep", "30"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("deadline"),
        "{}",
        text(&out.stderr)
    );
    // No route out under the default policy.
    let out = computeragent(&[
        "exec",
        "--",
        "node",
        "-e",
        "require('net').connect(80, '1.1.1.1').on('error', e => { console.log(e.code); process.exit(9) })",
    ]);
    assert_eq!(out.status.code(), Some(9), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "ENETUNREACH");
}

#[test]
fn doctor_and_gc_report_this_host() {
    let out = computeragent(&["doctor"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for runtime in ["bwrap", "lima", "tart", "apple-container", "local"] {
        assert!(stdout.contains(&format!("runtime {runtime}")), "{stdout}");
    }
    assert!(stdout.contains("runs on: bwrap"), "{stdout}");
    let out = computeragent(&["gc"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("bwrap:"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn bad_input_says_what_to_do() {
    let out = computeragent(&["run", "x", "--net", "open"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("none, host or allow:"),
        "{}",
        text(&out.stderr)
    );
    let out = computeragent(&["run", "x", "--runtime", "docker"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("bwrap, tart, lima, apple-container, local"),
        "{}",
        text(&out.stderr)
    );
    let out = computeragent(&["run", "x", "--runtime", "tart"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("Tart runs on macOS"),
        "{}",
        text(&out.stderr)
    );
    let out = computeragent(&["run", "x", "--memory", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("512M"), "{}", text(&out.stderr));
    let out = computeragent(&["exec", "--runtime", "lima", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("bwrap sandboxes"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_project_in_copy_mode_changes_only_on_approval() {
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("README.md"), "the project\n").unwrap();
    let dir = project.path().to_str().unwrap();
    // Not on a terminal and without --apply: shown, not applied.
    let out = computeragent(&["run", "note it", "--project", dir]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("A answer.md"), "{stderr}");
    assert!(stderr.contains("not applied"), "{stderr}");
    assert!(!project.path().join("answer.md").exists());
    // With --apply and --patch: the file lands in the project, the patch is kept.
    let patch = project.path().join("../changes.patch");
    let out = computeragent(&[
        "run",
        "note it",
        "--project",
        dir,
        "--apply",
        "--patch",
        patch.to_str().unwrap(),
    ]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("applied 1 change(s)"), "{stderr}");
    let answer = std::fs::read_to_string(project.path().join("answer.md")).unwrap();
    assert!(answer.contains("You asked: note it"), "{answer}");
    // The project is no git repository: a plain patch, as `patch -p1` reads it.
    let diff = std::fs::read_to_string(&patch).unwrap();
    assert!(
        diff.contains("--- /dev/null\n+++ b/answer.md\n") && !diff.contains("diff --git"),
        "{diff}"
    );
    assert_eq!(
        std::fs::read_to_string(project.path().join("README.md")).unwrap(),
        "the project\n"
    );
    let _ = std::fs::remove_file(patch);
}

#[test]
fn the_user_config_sets_defaults_and_its_mistakes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    std::fs::write(share.join("note.txt"), "shared\n").unwrap();
    std::fs::write(
        &config,
        format!(
            "network = \"host\"\nmemory = \"64M\"\nenv_allow = [\"CA_TEST_GREETING\"]\nread_only = [{:?}]\n",
            share.display().to_string()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        substrate_testkit::stage::ensure_staged().unwrap();
        Command::new(env!("CARGO_BIN_EXE_computeragent"))
            .args(args)
            .env(
                "COMPUTERAGENT_STAGE_DIR",
                substrate_testkit::stage::stage_dir(),
            )
            .env("COMPUTERAGENT_CONFIG", &config)
            .env("CA_TEST_GREETING", "hello from the host")
            .output()
            .unwrap()
    };
    let share_note = format!("{}/note.txt", share.display());
    let out = run(&[
        "exec",
        "--",
        "sh",
        "-c",
        &format!(
            "echo $CA_TEST_GREETING; cat {share_note}; echo x >> {share_note} || echo read-only; \
             [ $(grep -c : /proc/net/dev) -gt 1 ] && echo host-network"
        ),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "hello from the host\nshared\nread-only\nhost-network\n"
    );
    // The config's memory limit holds (the default would let this through).
    let out = run(&[
        "exec",
        "--",
        "node",
        "-e",
        "Buffer.alloc(256 * 1024 * 1024).fill(1); console.log('allocated')",
    ]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("out of memory"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).contains("allocated"));
    let out = run(&["doctor"]);
    assert!(
        text(&out.stdout).contains(&format!("{} (read)", config.display())),
        "{}",
        text(&out.stdout)
    );
    // The config's runtime is what commands run on, and what doctor reports.
    std::fs::write(&config, "runtime = \"local\"\n").unwrap();
    let out = run(&["doctor"]);
    assert!(
        text(&out.stdout).contains("runs on: local (the user config's `runtime`)"),
        "{}",
        text(&out.stdout)
    );
    let out = run(&["exec", "--", "true"]);
    assert!(
        text(&out.stderr).contains("local runtime"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(&config, "memory = \"lots\"\n").unwrap();
    let out = run(&["doctor"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("`memory` in") && stderr.contains("config.toml"),
        "{stderr}"
    );
    std::fs::write(&config, "exclude = [\"../secrets\"]\n").unwrap();
    let out = run(&["doctor"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("`exclude` in") && stderr.contains("`..`"),
        "{stderr}"
    );
    std::fs::write(&config, "colour = \"blue\"\n").unwrap();
    let out = run(&["doctor"]);
    assert!(
        text(&out.stderr).contains("colour"),
        "{}",
        text(&out.stderr)
    );
}
