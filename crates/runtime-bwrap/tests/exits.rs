//! Typed exits and limit hits, on the boot's audit stream and in the exec output: a fork bomb
//! reports the pids limit, a memory hog reports OOM, a command past its deadline reports
//! `deadline` and leaves no process behind.
#![cfg(target_os = "linux")]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use substrate_core::{
    AuditSink, BootSpec, BoundaryEvent, ExitReason, Limit, ResourceLimits, Substrate,
};

mod common;

fn recorded(label: &str) -> (BootSpec, Arc<Mutex<Vec<BoundaryEvent>>>) {
    let events: Arc<Mutex<Vec<BoundaryEvent>>> = Arc::default();
    let sink = events.clone();
    let spec = BootSpec::new(label).audit(AuditSink::new(move |e| sink.lock().unwrap().push(e)));
    (spec, events)
}

fn exits(events: &[BoundaryEvent]) -> Vec<ExitReason> {
    events
        .iter()
        .filter_map(|e| match e {
            BoundaryEvent::ProcessExit(x) => Some(x.reason),
            _ => None,
        })
        .collect()
}

fn limit_hits(events: &[BoundaryEvent], which: Limit) -> u64 {
    events
        .iter()
        .filter_map(|e| match e {
            BoundaryEvent::LimitHit(h) if h.limit == which => Some(h.count),
            _ => None,
        })
        .sum()
}

fn torn_down(events: &[BoundaryEvent]) -> bool {
    matches!(events.last(), Some(BoundaryEvent::Teardown(t)) if t.error.is_none())
}

#[tokio::test]
async fn a_fork_bomb_reports_the_pids_limit() {
    let (spec, events) = recorded("bomb");
    let spec = spec.limits(ResourceLimits::default().pids(32));
    let bomb = "for (1 .. 1000) { my $p = fork(); die \"fork refused\\n\" unless defined $p; \
                if ($p == 0) { sleep 60; exit 0 } }";
    let out = common::substrate()
        .unwrap()
        .exec(&spec, ["/usr/bin/perl", "-e", bomb])
        .await
        .unwrap();
    assert_eq!(out.reason, ExitReason::PidsLimit, "{out:?}");
    assert!(out.pids_limit_hits > 0, "{out:?}");
    let events = events.lock().unwrap();
    assert_eq!(exits(&events), [ExitReason::PidsLimit]);
    assert!(limit_hits(&events, Limit::Pids) > 0, "{events:?}");
    assert!(torn_down(&events), "{events:?}");
}

#[tokio::test]
async fn a_memory_hog_reports_out_of_memory() {
    let (spec, events) = recorded("hog");
    let spec = spec.limits(ResourceLimits::default().memory(64 << 20));
    let out = common::substrate()
        .unwrap()
        .exec(
            &spec,
            [
                "/usr/bin/perl",
                "-e",
                "my $x = 'a' x (512 * 1024 * 1024); print length $x",
            ],
        )
        .await
        .unwrap();
    assert_eq!(out.reason, ExitReason::OutOfMemory, "{out:?}");
    let events = events.lock().unwrap();
    assert_eq!(exits(&events), [ExitReason::OutOfMemory]);
    assert!(limit_hits(&events, Limit::Memory) >= 1, "{events:?}");
    assert!(torn_down(&events), "{events:?}");
}

/// Host processes whose command line is exactly `argv`.
fn processes_running(argv: &[&str]) -> Vec<i32> {
    let wanted: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted))
        .collect()
}

#[tokio::test]
async fn a_command_past_its_deadline_is_killed_with_everything_it_started() {
    let (spec, events) = recorded("deadline");
    // A child in the background and the command itself: both must go.
    let script = "sleep 1000.25 & exec sleep 1000.5";
    let started = Instant::now();
    let out = common::substrate()
        .unwrap()
        .exec_with_deadline(&spec, ["/bin/sh", "-c", script], Duration::from_secs(1))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(
        out.reason,
        ExitReason::Deadline(Duration::from_secs(1)),
        "{out:?}"
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert!(processes_running(&["sleep", "1000.25"]).is_empty());
    assert!(processes_running(&["sleep", "1000.5"]).is_empty());
    let events = events.lock().unwrap();
    assert_eq!(
        exits(&events),
        [ExitReason::Deadline(Duration::from_secs(1))]
    );
    assert!(torn_down(&events), "{events:?}");
}

#[tokio::test]
async fn codes_and_signals_are_told_apart() {
    let substrate = common::substrate().unwrap();
    let spec = BootSpec::new("codes");
    let out = substrate
        .exec(&spec, ["/bin/sh", "-c", "exit 3"])
        .await
        .unwrap();
    assert_eq!(out.reason, ExitReason::Exited(3));
    let out = substrate
        .exec(&spec, ["/bin/sh", "-c", "kill -TERM $$"])
        .await
        .unwrap();
    assert_eq!(out.reason, ExitReason::Signaled(15), "{out:?}");
    let out = substrate.exec(&spec, ["/bin/true"]).await.unwrap();
    assert!(out.reason.success());
}

#[tokio::test]
async fn a_harness_boot_reports_its_exit_and_teardown() {
    let (spec, events) = recorded("harness-events");
    let harness = common::substrate()
        .unwrap()
        .boot_harness(spec)
        .await
        .unwrap();
    harness.shutdown().await.unwrap();
    let events = events.lock().unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, BoundaryEvent::ProcessExit(x) if x.command == "harness")),
        "{events:?}"
    );
    assert!(torn_down(&events), "{events:?}");
    let teardowns = events
        .iter()
        .filter(|e| matches!(e, BoundaryEvent::Teardown(_)))
        .count();
    assert_eq!(teardowns, 1);
}
