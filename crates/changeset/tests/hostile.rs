//! Attacks on apply and copy-in, and crashes: symlinks that escape through other symlinks,
//! directories replaced over the person's files, and a process killed while it writes.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::fs;
use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use changeset::{ChangeSet, Options, Skipped, Snapshot, copy_in};

fn write(root: &Path, relative: &str, content: &[u8]) {
    let path = root.join(relative);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn symlink(target: &str, root: &Path, relative: &str) {
    std::os::unix::fs::symlink(target, root.join(relative)).unwrap();
}

/// A project with `files`, copied into a sandbox's workdir: (project, sandbox, workdir,
/// baseline).
fn copied(files: &[(&str, &[u8])]) -> (tempfile::TempDir, tempfile::TempDir, PathBuf, Snapshot) {
    let project = tempfile::tempdir().unwrap();
    for (relative, content) in files {
        write(project.path(), relative, content);
    }
    let sandbox = tempfile::tempdir().unwrap();
    let workdir = sandbox.path().join("workdir");
    let (baseline, _) = copy_in(project.path(), &workdir, &Options::default(), |_| {}).unwrap();
    (project, sandbox, workdir, baseline)
}

fn changes(baseline: &Snapshot, workdir: &Path) -> ChangeSet {
    let now = Snapshot::scan(workdir, &Options::default()).unwrap();
    ChangeSet::between(baseline, &now)
}

/// `d -> .` and `a -> d/..` each look inside when read alone, but `a` is the project's parent.
#[test]
fn a_symlink_that_escapes_through_another_is_refused_at_apply() {
    let (project, _sandbox, w, baseline) = copied(&[("README.md", b"x\n")]);
    symlink(".", &w, "d");
    symlink("d/..", &w, "a");
    symlink("d/../x", &w, "b");
    let report = changes(&baseline, &w).apply(project.path()).unwrap();
    let refused: Vec<&str> = report.refused.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(refused, ["a", "b"], "{report:?}");
    assert!(
        report.refused[0].1.contains("d/.."),
        "the reason names the target: {report:?}"
    );
    assert!(fs::symlink_metadata(project.path().join("a")).is_err());
    assert!(fs::symlink_metadata(project.path().join("b")).is_err());
    // `d` itself stays inside whatever else exists.
    assert_eq!(report.applied, ["d"]);
}

#[test]
fn a_symlink_that_escapes_through_another_is_left_out_at_copy_in() {
    let project = tempfile::tempdir().unwrap();
    let p = project.path();
    write(p, "lib/x", b"lib\n");
    write(p, "src/main.rs", b"main\n");
    symlink(".", p, "d");
    symlink("d/..", p, "a");
    // Ordinary links: up from a subdirectory, and down into one.
    symlink("../lib/x", p, "src/x");
    symlink("src/main.rs", p, "main");
    let sandbox = tempfile::tempdir().unwrap();
    let w = sandbox.path().join("workdir");
    let (baseline, _) = copy_in(p, &w, &Options::default(), |_| {}).unwrap();
    assert_eq!(baseline.skipped.get("a"), Some(&Skipped::SymlinkOut));
    assert!(
        fs::symlink_metadata(w.join("a")).is_err(),
        "the escape was copied"
    );
    assert_eq!(fs::read_link(w.join("d")).unwrap(), Path::new("."));
    assert_eq!(fs::read(w.join("src/x")).unwrap(), b"lib\n");
    assert_eq!(fs::read(w.join("main")).unwrap(), b"main\n");
}

#[test]
fn ordinary_symlinks_are_applied() {
    let (project, _sandbox, w, baseline) =
        copied(&[("lib/x", b"lib\n"), ("src/main.rs", b"main\n")]);
    symlink("../lib/x", &w, "src/x");
    symlink("src/main.rs", &w, "main");
    symlink("./src/./main.rs", &w, "dotted");
    let report = changes(&baseline, &w).apply(project.path()).unwrap();
    assert!(report.refused.is_empty(), "{report:?}");
    assert_eq!(fs::read(project.path().join("src/x")).unwrap(), b"lib\n");
    assert_eq!(fs::read(project.path().join("main")).unwrap(), b"main\n");
    assert_eq!(fs::read(project.path().join("dotted")).unwrap(), b"main\n");
}

/// The agent turned a directory into a file while the person added a file in it: the
/// directory and the person's file stay.
#[test]
fn a_directory_replaced_by_a_file_keeps_the_persons_new_file() {
    let (project, _sandbox, w, baseline) = copied(&[("dir/a", b"a\n"), ("dir/sub/b", b"b\n")]);
    // `dir/a` moves out first: a rename out of the directory is left alone with it.
    fs::rename(w.join("dir/a"), w.join("moved-a")).unwrap();
    fs::remove_dir_all(w.join("dir")).unwrap();
    write(&w, "dir", b"now a file\n");
    write(project.path(), "dir/sub/mine.txt", b"the person's\n");
    let report = changes(&baseline, &w).apply(project.path()).unwrap();
    let conflicts: Vec<&str> = report.conflicts.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(conflicts, ["dir", "moved-a"], "{report:?}");
    assert!(
        report.conflicts[0].reason.contains("dir/sub/mine.txt"),
        "the reason names the person's file: {report:?}"
    );
    assert!(report.applied.is_empty(), "{report:?}");
    assert_eq!(
        fs::read(project.path().join("dir/sub/mine.txt")).unwrap(),
        b"the person's\n"
    );
    // Nothing under it was removed either, nor moved.
    assert_eq!(fs::read(project.path().join("dir/a")).unwrap(), b"a\n");
    assert!(fs::symlink_metadata(project.path().join("moved-a")).is_err());
    assert_eq!(fs::read(project.path().join("dir/sub/b")).unwrap(), b"b\n");
}

/// Same, with the person's edit of a file the baseline had, and a symlink as the replacement.
#[test]
fn a_directory_replaced_by_a_symlink_keeps_the_persons_edit() {
    let (project, _sandbox, w, baseline) = copied(&[("dir/a", b"a\n"), ("other/b", b"b\n")]);
    fs::remove_dir_all(w.join("dir")).unwrap();
    symlink("other", &w, "dir");
    write(project.path(), "dir/a", b"edited by the person\n");
    let report = changes(&baseline, &w).apply(project.path()).unwrap();
    let conflicts: Vec<&str> = report.conflicts.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(conflicts, ["dir"], "{report:?}");
    assert_eq!(
        fs::read(project.path().join("dir/a")).unwrap(),
        b"edited by the person\n"
    );
    assert!(
        fs::symlink_metadata(project.path().join("dir"))
            .unwrap()
            .is_dir()
    );
}

/// A deleted directory holding a file the copy left out (too large, excluded): never removed.
#[test]
fn a_deleted_directory_keeps_what_the_agent_never_saw() {
    let project = tempfile::tempdir().unwrap();
    write(project.path(), "dir/a", b"a\n");
    write(project.path(), "dir/big", &[1u8; 2048]);
    let options = Options {
        max_file_bytes: 1024,
        ..Options::default()
    };
    let sandbox = tempfile::tempdir().unwrap();
    let w = sandbox.path().join("workdir");
    let (baseline, _) = copy_in(project.path(), &w, &options, |_| {}).unwrap();
    fs::remove_dir_all(w.join("dir")).unwrap();
    let now = Snapshot::scan(&w, &options).unwrap();
    let report = ChangeSet::between(&baseline, &now)
        .apply(project.path())
        .unwrap();
    let conflicts: Vec<&str> = report.conflicts.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(conflicts, ["dir"], "{report:?}");
    assert!(report.applied.is_empty(), "{report:?}");
    assert_eq!(fs::read(project.path().join("dir/a")).unwrap(), b"a\n");
    assert_eq!(
        fs::read(project.path().join("dir/big")).unwrap().len(),
        2048
    );
}

#[test]
fn an_unchanged_directory_is_replaced_by_a_file_or_a_symlink() {
    let (project, _sandbox, w, baseline) = copied(&[
        ("dir/a", b"a\n"),
        ("dir/sub/b", b"b\n"),
        ("linked/c", b"c\n"),
        ("target/t", b"t\n"),
    ]);
    fs::remove_dir_all(w.join("dir")).unwrap();
    write(&w, "dir", b"now a file\n");
    fs::remove_dir_all(w.join("linked")).unwrap();
    symlink("target", &w, "linked");
    let report = changes(&baseline, &w).apply(project.path()).unwrap();
    assert!(report.conflicts.is_empty(), "{report:?}");
    assert!(report.refused.is_empty(), "{report:?}");
    assert_eq!(
        fs::read(project.path().join("dir")).unwrap(),
        b"now a file\n"
    );
    assert_eq!(
        fs::read_link(project.path().join("linked")).unwrap(),
        Path::new("target")
    );
    let after = Snapshot::scan(project.path(), &Options::default()).unwrap();
    let now = Snapshot::scan(&w, &Options::default()).unwrap();
    assert_eq!(after.nodes, now.nodes);
}

/// The environment variable that makes [`helper_apply`] do its work: `PROJECT\nWORKDIR`.
const HELPER: &str = "CHANGESET_CRASH_HELPER";

/// Run as a child process by `a_kill_while_writing_leaves_the_file_old_or_new`: computes the
/// change set of the workdir against the project, says READY, waits for a line on stdin,
/// applies it.
#[test]
#[ignore = "helper process of another test; does nothing on its own"]
fn helper_apply() {
    let Some(dirs) = std::env::var_os(HELPER) else {
        return;
    };
    let dirs = dirs.into_string().unwrap();
    let (project, workdir) = dirs.split_once('\n').unwrap();
    let baseline = Snapshot::scan(Path::new(project), &Options::default()).unwrap();
    let changes = changes(&baseline, Path::new(workdir));
    println!("READY");
    std::io::stdout().flush().unwrap();
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    changes.apply(Path::new(project)).unwrap();
    println!("DONE");
}

const OLD: &[u8] = b"the old content\n";

/// Kills an apply of a large file at points while it writes, and checks that the project's
/// file is each time either the old content or the new, never a mix; then that the next
/// apply into that directory cleans up what the killed one left.
#[test]
fn a_kill_while_writing_leaves_the_file_old_or_new() {
    let sandbox = tempfile::tempdir().unwrap();
    let workdir = sandbox.path().join("workdir");
    // 64 MiB that differ from block to block, so a partial file is never the new one.
    let new: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i / 4096).wrapping_mul(31) as u8 ^ (i as u8))
        .collect();
    write(&workdir, "big.bin", &new);
    let mut landed = 0;
    let mut last_project = None;
    for attempt in 0..40 {
        if landed >= 3 {
            break;
        }
        let project = tempfile::tempdir().unwrap();
        write(project.path(), "big.bin", OLD);
        let target = project.path().join("big.bin");
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "helper_apply", "--ignored", "--nocapture"])
            .env(
                HELPER,
                format!("{}\n{}", project.path().display(), workdir.display()),
            )
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("READY") => break,
                Some(Ok(_)) => continue,
                other => panic!("the helper never became ready: {other:?}"),
            }
        }
        let temp = project
            .path()
            .join(format!(".big.bin.changeset-{}", child.id()));
        writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
        // Kill as soon as anything is written: the temporary file beside the target, or the
        // target itself (a write in place).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let target_now = fs::symlink_metadata(&target).unwrap();
            if temp.exists() || target_now.len() != OLD.len() as u64 {
                break;
            }
            if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                break;
            }
        }
        // At different points of the write: at once, then a little later.
        std::thread::sleep(Duration::from_micros(attempt % 4 * 500));
        child.kill().unwrap();
        child.wait().unwrap();
        let now = fs::read(&target).unwrap();
        assert!(
            now == OLD || now == new,
            "attempt {attempt}: the file is neither old nor new ({} bytes)",
            now.len()
        );
        if temp.exists() {
            landed += 1;
            last_project = Some((project, temp));
        }
    }
    assert!(
        landed >= 3,
        "only {landed} kills landed while the file was written"
    );
    let (project, stale) = last_project.unwrap();
    // Lookalikes that are not a dead apply's: a live process's, a symlink, another name.
    let dead_pid = stale
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .rsplit_once('-')
        .unwrap()
        .1
        .to_owned();
    let keep = [
        ".big.bin.changeset-1".to_owned(),
        format!("big.bin.changeset-{dead_pid}"),
        format!(".big.bin.changeset-{dead_pid}x"),
    ];
    for name in &keep {
        write(project.path(), name, b"keep\n");
    }
    symlink(
        "big.bin",
        project.path(),
        &format!(".link.changeset-{dead_pid}"),
    );
    // The next apply into that directory removes the dead apply's temporary file.
    let mut baseline = Snapshot::scan(project.path(), &Options::default()).unwrap();
    baseline.nodes.retain(|path, _| path == "big.bin");
    let report = changes(&baseline, &workdir).apply(project.path()).unwrap();
    assert_eq!(report.applied, ["big.bin"], "{report:?}");
    assert!(fs::read(project.path().join("big.bin")).unwrap() == new);
    assert!(
        !stale.exists(),
        "the dead apply's temporary file is still there"
    );
    for name in &keep {
        assert!(project.path().join(name).exists(), "{name} was removed");
    }
    assert!(
        fs::symlink_metadata(project.path().join(format!(".link.changeset-{dead_pid}"))).is_ok(),
        "a symlink was removed"
    );
}
