//! Boot failures, shutdown and crashed parents: every path leaves nothing behind.
#![cfg(target_os = "linux")]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use runtime_bwrap::BwrapSubstrate;
use substrate_core::{
    BootPhase, BootSpec, ErrorKind, PhaseDeadlines, ResourceLimits, Substrate, WorkdirPolicy,
};

mod common;

/// A substrate whose boot directories live in a fresh dir others can traverse.
fn isolated() -> (BwrapSubstrate, tempfile::TempDir) {
    let base = tempfile::Builder::new()
        .prefix("bwrap-lifecycle-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let substrate = common::substrate()
        .unwrap()
        .base_dir(base.path().join("boots"));
    (substrate, base)
}

fn leftovers(base: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(base.join("boots"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test]
async fn a_missing_bwrap_is_not_installed_with_the_fix() {
    let (substrate, base) = isolated();
    let substrate = substrate.bwrap("/nonexistent/bwrap");
    let err = substrate
        .boot_harness(BootSpec::new("t"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotInstalled, "{err}");
    assert!(
        err.to_string().contains("apt-get install bubblewrap"),
        "{err}"
    );
    assert!(leftovers(base.path()).is_empty());
}

#[tokio::test]
async fn a_too_old_bwrap_names_the_version_needed() {
    let (substrate, base) = isolated();
    let fake = script(base.path(), "bwrap", "echo 'bubblewrap 0.6.1'");
    let err = substrate
        .bwrap(fake)
        .boot_harness(BootSpec::new("t"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotInstalled, "{err}");
    let text = err.to_string();
    assert!(text.contains("0.6.1") && text.contains("0.8.0"), "{text}");
}

#[tokio::test]
async fn a_harness_that_exits_is_process_failed_and_everything_goes() {
    let (substrate, base) = isolated();
    let node = script(base.path(), "node", "echo 'engine exploded' >&2; exit 3");
    let spec = BootSpec::new("exits").limits(ResourceLimits::default().pids(64));
    let err = substrate.node(node).boot_harness(spec).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ProcessFailed, "{err}");
    assert!(err.to_string().contains("engine exploded"), "{err}");
    assert!(
        leftovers(base.path()).is_empty(),
        "{:?}",
        leftovers(base.path())
    );
    assert_no_cgroups_labelled("exits");
}

#[tokio::test]
async fn a_harness_that_never_answers_times_out_in_the_health_phase() {
    let (substrate, base) = isolated();
    let node = script(base.path(), "node", "exec sleep 600");
    let spec = BootSpec::new("t").deadlines(
        PhaseDeadlines::uniform(Duration::from_secs(30))
            .with(BootPhase::Health, Duration::from_secs(1)),
    );
    let started = Instant::now();
    let err = substrate.node(node).boot_harness(spec).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BootTimeout, "{err}");
    assert!(err.to_string().contains("health"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(leftovers(base.path()).is_empty());
}

#[tokio::test]
async fn shutdown_removes_everything_and_keep_keeps_the_workdir() {
    let (substrate, base) = isolated();
    let spec = BootSpec::new("shutdown").limits(ResourceLimits::default().memory(512 << 20));
    let harness = substrate.boot_harness(spec).await.unwrap();
    assert_eq!(leftovers(base.path()).len(), 1);
    harness.shutdown().await.unwrap();
    harness.shutdown().await.unwrap(); // idempotent
    assert!(leftovers(base.path()).is_empty());
    assert_no_cgroups_labelled("shutdown");

    let kept = substrate
        .boot_harness(BootSpec::new("kept").workdir(WorkdirPolicy::Keep))
        .await
        .unwrap();
    kept.shutdown().await.unwrap();
    let left = leftovers(base.path());
    assert_eq!(left.len(), 1);
    assert!(left[0].join("workdir").is_dir());
}

#[tokio::test]
async fn as_root_sources_behind_private_directories_are_bound_in_and_unbound_after() {
    if !nix_is_root() {
        panic!("this test proves the root path: run the suite as root (CI does)");
    }
    let (substrate, base) = isolated();
    // A node binary behind a directory only root can search, like a checkout under /root.
    let private = base.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let node = private.join("node");
    let real = which_node();
    std::fs::copy(&real, &node).unwrap();
    let harness = substrate
        .node(&node)
        .boot_harness(BootSpec::new("private"))
        .await
        .unwrap();
    harness.client().unwrap().health().await.unwrap();
    let boot = leftovers(base.path()).pop().unwrap();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        mountinfo.contains(&boot.to_string_lossy().into_owned()),
        "no bind mount was made"
    );
    harness.shutdown().await.unwrap();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(&boot.to_string_lossy().into_owned()),
        "a bind mount was left"
    );
    assert!(leftovers(base.path()).is_empty());
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

fn which_node() -> PathBuf {
    let out = std::process::Command::new("sh")
        .args(["-c", "command -v node"])
        .output()
        .unwrap();
    std::fs::canonicalize(String::from_utf8(out.stdout).unwrap().trim()).unwrap()
}

/// No cgroup of a boot labelled `label` is left in any hierarchy.
fn assert_no_cgroups_labelled(label: &str) {
    let mut found = Vec::new();
    let prefix = format!("substrate-{label}-");
    for root in [
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/cpu",
    ] {
        visit(Path::new(root), 0, &prefix, &mut found);
    }
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        visit(Path::new("/sys/fs/cgroup"), 0, &prefix, &mut found);
    }
    assert!(found.is_empty(), "cgroups left behind: {found:?}");
}

fn visit(dir: &Path, depth: usize, prefix: &str, found: &mut Vec<PathBuf>) {
    if depth > 4 {
        return;
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            found.push(path);
        } else {
            visit(&path, depth + 1, prefix, found);
        }
    }
}

/// Run as a child process by `killing_the_parent_kills_the_sandbox_and_the_reaper_cleans_up`:
/// boots a sandbox under `BWRAP_HELPER_BASE`, says READY, and waits to be killed.
#[test]
#[ignore = "helper process of another test; does nothing on its own"]
fn helper_boot_and_wait() {
    let Some(base) = std::env::var_os("BWRAP_HELPER_BASE") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let substrate = common::substrate().unwrap().base_dir(PathBuf::from(base));
        let spec = BootSpec::new("orphan").limits(ResourceLimits::default().pids(64));
        let harness = substrate.boot_harness(spec).await.unwrap();
        println!("READY");
        std::mem::forget(harness);
        tokio::time::sleep(Duration::from_secs(600)).await;
    });
}

#[test]
fn killing_the_parent_kills_the_sandbox_and_the_reaper_cleans_up() {
    let (substrate, base) = isolated();
    let boots = base.path().join("boots");
    let mut helper = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_boot_and_wait",
            "--ignored",
            "--nocapture",
        ])
        .env("BWRAP_HELPER_BASE", &boots)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(helper.stdout.take().unwrap()).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("READY") => break,
            Some(Ok(_)) => continue,
            other => panic!("the helper never became ready: {other:?}"),
        }
    }
    let dirs = leftovers(base.path());
    assert_eq!(dirs.len(), 1);
    let sandbox: i32 = std::fs::read_to_string(dirs[0].join("sandbox"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(Path::new(&format!("/proc/{sandbox}")).exists());

    helper.kill().unwrap();
    helper.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{sandbox}")).exists() {
        assert!(Instant::now() < deadline, "the sandbox outlived its parent");
        std::thread::sleep(Duration::from_millis(20));
    }

    // The crashed parent left its directory and cgroup; the reaper removes both.
    assert_eq!(leftovers(base.path()).len(), 1);
    let cgroups = std::fs::read_to_string(dirs[0].join("cgroups")).unwrap();
    let reaped = substrate.reap_orphans().unwrap();
    assert_eq!(reaped.dirs, dirs);
    assert!(leftovers(base.path()).is_empty());
    for cg in cgroups.lines() {
        assert!(!Path::new(cg).exists(), "cgroup {cg} left behind");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_sizes_resizes_interrupts_and_brings_its_files_back_then_leaves_nothing() {
    let (substrate, base) = isolated();
    let scratch = tempfile::tempdir().unwrap();
    substrate_testkit::terminal::check_terminal(
        &substrate,
        &BootSpec::new("terminal"),
        scratch.path(),
    )
    .await
    .unwrap();
    assert_eq!(leftovers(base.path()), Vec::<PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_inside_a_running_sandbox_is_as_confined_as_the_sandbox_and_leaves_it_running() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (substrate, base) = isolated();
    let harness = substrate
        .boot_harness(BootSpec::new("sbx_enter-me"))
        .await
        .unwrap();
    // Unknown and ambiguous ids are named.
    let unknown = substrate
        .enter_terminal("sbx_nobody", substrate_core::TerminalRequest::new(["true"]))
        .await
        .unwrap_err();
    assert!(
        unknown.to_string().contains("no live bwrap sandbox"),
        "{unknown}"
    );
    let probe = "id -u; id -G; hostname; \
                 grep -E '^(Seccomp|NoNewPrivs|CapEff|CapPrm):' /proc/self/status; \
                 cat /proc/[0-9]*/comm 2>/dev/null | sort -u | tr '\\n' ' '; echo; \
                 echo entered > /workdir/from-the-shell; ls / | tr '\\n' ' '; echo; \
                 echo end-of-probe";
    let mut terminal = substrate
        .enter_terminal(
            "sbx_enter-me",
            substrate_core::TerminalRequest::new(["sh", "-c", probe]),
        )
        .await
        .unwrap();
    let mut output = terminal.take_output().unwrap();
    let _input = terminal.take_input().unwrap();
    let end = tokio::time::timeout(Duration::from_secs(20), terminal.wait())
        .await
        .unwrap()
        .unwrap();
    let mut text = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), output.read_to_string(&mut text)).await;
    assert_eq!(end.code, Some(0), "{text}");
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(&lines[..3], ["1000", "1000", "sandbox"], "{text}");
    for expected in [
        "Seccomp:\t2",
        "NoNewPrivs:\t1",
        "CapEff:\t0000000000000000",
        "CapPrm:\t0000000000000000",
    ] {
        assert!(text.contains(expected), "{expected}:\n{text}");
    }
    // The sandbox's own processes (its harness) are there; the host's are not.
    assert!(text.contains("node"), "{text}");
    assert!(
        !text.contains("cargo") && !text.contains("systemd"),
        "{text}"
    );
    assert!(text.contains("end-of-probe"), "{text}");
    // The workdir is the sandbox's: what the shell wrote is in the boot's workdir on the host.
    let boots = leftovers(base.path());
    assert_eq!(boots.len(), 1, "{boots:?}");
    assert_eq!(
        std::fs::read_to_string(boots[0].join("workdir/from-the-shell")).unwrap(),
        "entered\n"
    );
    // Closing ends the program, not the sandbox.
    let mut again = substrate
        .enter_terminal(
            "sbx_enter-me",
            substrate_core::TerminalRequest::new(["sh", "-c", "echo ready; sleep 1000"]),
        )
        .await
        .unwrap();
    let mut out = again.take_output().unwrap();
    let mut input = again.take_input().unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), out.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("ready"));
    input.write_all(b"").await.unwrap();
    again.close().await.unwrap();
    // The program is gone from the sandbox; the sandbox's own processes are not.
    let pid: i32 = std::fs::read_to_string(boots[0].join("sandbox"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let in_sandbox: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().parse::<i32>().is_ok())
            .filter(|e| {
                std::fs::read_link(e.path().join("ns/pid")).ok()
                    == std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
            })
            .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
            .map(|c| c.trim().to_owned())
            .collect();
        if !in_sandbox.iter().any(|c| c == "sleep") {
            assert!(in_sandbox.iter().any(|c| c == "node"), "{in_sandbox:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the program outlived close: {in_sandbox:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    harness.client().unwrap().health().await.unwrap();
    // The same through the booted harness.
    substrate_testkit::terminal::check_booted_terminal(&harness)
        .await
        .unwrap();
    harness.shutdown().await.unwrap();
    assert_eq!(leftovers(base.path()), Vec::<PathBuf>::new());
}

/// Runs `sh -c program` on a terminal with `request`'s seed; returns its output and the
/// workdir on the host (kept until the terminal is closed, which the caller does).
async fn run_seeded(
    substrate: &BwrapSubstrate,
    request: substrate_core::TerminalRequest,
) -> (String, PathBuf, substrate_core::Terminal) {
    use tokio::io::AsyncReadExt;
    let mut terminal = substrate
        .open_terminal(&BootSpec::new("seeded"), request)
        .await
        .unwrap();
    let mut output = terminal.take_output().unwrap();
    let _input = terminal.take_input().unwrap();
    let end = tokio::time::timeout(Duration::from_secs(20), terminal.wait())
        .await
        .unwrap()
        .unwrap();
    let mut text = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), output.read_to_string(&mut text)).await;
    assert_eq!(end.code, Some(0), "{text}");
    let workdir = terminal
        .workdir_on_host(Path::new("/nonexistent"))
        .await
        .unwrap();
    (text, workdir, terminal)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_over_seed_is_moved_into_the_workdir_and_a_copied_one_stays() {
    use std::os::unix::fs::MetadataExt;
    let (substrate, base) = isolated();
    let scratch = tempfile::tempdir().unwrap();
    let make_seed = |name: &str| {
        let seed = scratch.path().join(name);
        std::fs::create_dir_all(seed.join("src")).unwrap();
        std::fs::write(seed.join("src/lib.rs"), "fn seeded() {}\n").unwrap();
        std::fs::write(seed.join("top.txt"), "top\n").unwrap();
        std::os::unix::fs::symlink("top.txt", seed.join("link")).unwrap();
        nix::unistd::mkfifo(&seed.join("src/pipe"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        seed
    };
    let program = "cat src/lib.rs; readlink link; test -e src/pipe && echo has-pipe; \
                   echo \"owner $(id -u) $(stat -c %u src/lib.rs) $(stat -c %u src)\"";

    // Handed over: the same inodes end up in the workdir, owned by the sandbox's user, the
    // FIFO left out as a copy would, and the seed emptied.
    let seed = make_seed("moved");
    let inode = std::fs::metadata(seed.join("src/lib.rs")).unwrap().ino();
    let (text, workdir, terminal) = run_seeded(
        &substrate,
        substrate_core::TerminalRequest::new(["sh", "-c", program]).seed_moved(&seed),
    )
    .await;
    assert!(text.contains("fn seeded() {}"), "{text}");
    assert!(text.contains("top.txt"), "{text}");
    assert!(
        !text.contains("has-pipe"),
        "a FIFO reached the sandbox: {text}"
    );
    let owner = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("owner "))
        .unwrap_or_else(|| panic!("no owner line: {text}"))
        .split_whitespace()
        .collect::<Vec<_>>();
    assert!(
        owner.len() == 3 && owner[0] == owner[1] && owner[0] == owner[2],
        "the seed is not the sandbox user's: {owner:?}"
    );
    assert_eq!(
        std::fs::metadata(workdir.join("src/lib.rs")).unwrap().ino(),
        inode,
        "the file was copied, not moved"
    );
    assert_eq!(std::fs::read_dir(&seed).unwrap().count(), 0);
    terminal.close().await.unwrap();

    // Copied: the seed stays as it was, and the workdir holds copies.
    let seed = make_seed("copied");
    let inode = std::fs::metadata(seed.join("src/lib.rs")).unwrap().ino();
    let (text, workdir, terminal) = run_seeded(
        &substrate,
        substrate_core::TerminalRequest::new(["sh", "-c", program]).seed(&seed),
    )
    .await;
    assert!(text.contains("fn seeded() {}"), "{text}");
    assert!(
        !text.contains("has-pipe"),
        "a FIFO reached the sandbox: {text}"
    );
    assert_ne!(
        std::fs::metadata(workdir.join("src/lib.rs")).unwrap().ino(),
        inode
    );
    assert!(seed.join("src/lib.rs").exists() && seed.join("src/pipe").exists());
    terminal.close().await.unwrap();
    assert_eq!(leftovers(base.path()), Vec::<PathBuf>::new());
}
