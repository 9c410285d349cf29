//! Rescans on real trees: unchanged files are trusted from their stat data and not read
//! (counted in the scan statistics), every kind of edit is still seen, even one that restores
//! the size and mtime, and files changed too recently to be trusted are read again.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use changeset::{ChangeSet, Options, Snapshot, copy_project};

fn write(root: &Path, relative: &str, content: &[u8]) {
    let path = root.join(relative);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// A tree of `n` files in a few directories.
fn tree(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..n {
        write(
            dir.path(),
            &format!("d{}/f{i}.txt", i % 5),
            format!("file {i:04}\n").as_bytes(),
        );
    }
    dir
}

/// Sleeps until what was written so far is older than what a scan started now trusts (a
/// snapshot trusts files stamped before the last even second, 50 ms back).
fn wait_until_trusted() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let next_even = (now.as_secs() / 2 + 1) * 2;
    let until = Duration::from_secs(next_even) + Duration::from_millis(100);
    std::thread::sleep(until - now);
}

fn summary(changes: &ChangeSet) -> Vec<String> {
    changes.summary().lines().map(str::to_owned).collect()
}

/// Rewrites `path` in place with `content`, then sets its mtime back to `mtime`.
fn rewrite_keeping_mtime(path: &Path, content: &[u8], mtime: SystemTime) {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    file.write_all(content).unwrap();
    file.set_times(fs::FileTimes::new().set_modified(mtime))
        .unwrap();
}

#[test]
fn a_rescan_reads_only_the_files_whose_stat_data_changed() {
    let dir = tree(50);
    let root = dir.path();
    wait_until_trusted();
    let base = Snapshot::scan(root, &Options::default()).unwrap();
    assert_eq!(base.scan_stats().hashed, 50);

    // Nothing changed: nothing is read.
    let same = Snapshot::rescan(root, &Options::default(), &base).unwrap();
    assert_eq!(same, base);
    assert_eq!(same.scan_stats().hashed, 0, "{:?}", same.scan_stats());
    assert_eq!(same.scan_stats().reused, 50);
    assert_eq!(same.scan_stats().racy, 0);

    // Two edits, one new file, one deleted: exactly the three files there are read.
    fs::OpenOptions::new()
        .append(true)
        .open(root.join("d1/f1.txt"))
        .unwrap()
        .write_all(b"more\n")
        .unwrap();
    write(root, "d2/f2.txt", b"rewritten\n");
    write(root, "d3/new.txt", b"new\n");
    fs::remove_file(root.join("d4/f4.txt")).unwrap();
    let after = Snapshot::rescan(root, &Options::default(), &base).unwrap();
    assert_eq!(after.scan_stats().hashed, 3, "{:?}", after.scan_stats());
    assert_eq!(after.scan_stats().reused, 47);
    assert_eq!(after.scan_stats().files, 50);
    assert_eq!(
        summary(&ChangeSet::between(&base, &after)),
        ["M d1/f1.txt", "M d2/f2.txt", "A d3/new.txt", "D d4/f4.txt"]
    );
    // The same as reading everything.
    assert_eq!(after, Snapshot::scan(root, &Options::default()).unwrap());

    // A rescan chains: against the last one, only what changed since is read.
    wait_until_trusted();
    let settled = Snapshot::rescan(root, &Options::default(), &after).unwrap();
    write(root, "d0/f0.txt", b"again\n");
    let last = Snapshot::rescan(root, &Options::default(), &settled).unwrap();
    assert_eq!(last.scan_stats().hashed, 1, "{:?}", last.scan_stats());
    assert_eq!(summary(&ChangeSet::between(&after, &last)), ["M d0/f0.txt"]);
}

#[test]
fn an_edit_that_restores_the_size_and_mtime_is_still_seen() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "same-inode.txt", b"one\n");
    write(root, "new-inode.txt", b"one\n");
    write(root, "untouched.txt", b"one\n");
    wait_until_trusted();
    let base = Snapshot::scan(root, &Options::default()).unwrap();
    let before_in_place = fs::symlink_metadata(root.join("same-inode.txt")).unwrap();
    let before_replaced = fs::symlink_metadata(root.join("new-inode.txt")).unwrap();

    // In place (same inode): only the ctime tells.
    let path = root.join("same-inode.txt");
    rewrite_keeping_mtime(&path, b"two\n", before_in_place.modified().unwrap());
    let now = fs::symlink_metadata(&path).unwrap();
    assert_eq!(now.len(), before_in_place.len());
    assert_eq!(now.modified().unwrap(), before_in_place.modified().unwrap());
    assert_eq!(now.ino(), before_in_place.ino());

    // Replaced by another file (written beside it and renamed over it): a new inode.
    let beside = root.join(".new-inode.txt.tmp");
    fs::write(&beside, b"two\n").unwrap();
    fs::File::options()
        .write(true)
        .open(&beside)
        .unwrap()
        .set_times(fs::FileTimes::new().set_modified(before_replaced.modified().unwrap()))
        .unwrap();
    fs::rename(&beside, root.join("new-inode.txt")).unwrap();
    let now = fs::symlink_metadata(root.join("new-inode.txt")).unwrap();
    assert_eq!(now.len(), before_replaced.len());
    assert_eq!(now.modified().unwrap(), before_replaced.modified().unwrap());

    let after = Snapshot::rescan(root, &Options::default(), &base).unwrap();
    assert_eq!(
        summary(&ChangeSet::between(&base, &after)),
        ["M new-inode.txt", "M same-inode.txt"]
    );
    assert_eq!(after.scan_stats().hashed, 2, "{:?}", after.scan_stats());
    assert_eq!(after.scan_stats().reused, 1);
}

#[test]
fn a_deleted_and_recreated_file_of_the_same_size_is_seen() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "a.txt", b"first\n");
    wait_until_trusted();
    let base = Snapshot::scan(root, &Options::default()).unwrap();
    let before = fs::symlink_metadata(root.join("a.txt")).unwrap();
    fs::remove_file(root.join("a.txt")).unwrap();
    write(root, "a.txt", b"other\n");
    fs::File::options()
        .write(true)
        .open(root.join("a.txt"))
        .unwrap()
        .set_times(fs::FileTimes::new().set_modified(before.modified().unwrap()))
        .unwrap();
    assert_eq!(
        fs::symlink_metadata(root.join("a.txt")).unwrap().len(),
        before.len()
    );
    let after = Snapshot::rescan(root, &Options::default(), &base).unwrap();
    assert_eq!(summary(&ChangeSet::between(&base, &after)), ["M a.txt"]);
    assert_eq!(after.scan_stats().hashed, 1);
}

#[test]
fn a_file_changed_right_after_the_snapshot_is_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "edited.txt", b"one\n");
    write(root, "untouched.txt", b"one\n");
    // Written just now: within the snapshot's own time, so racily clean.
    let base = Snapshot::scan(root, &Options::default()).unwrap();
    let before = fs::symlink_metadata(root.join("edited.txt")).unwrap();
    rewrite_keeping_mtime(
        &root.join("edited.txt"),
        b"two\n",
        before.modified().unwrap(),
    );
    let after = Snapshot::rescan(root, &Options::default(), &base).unwrap();
    assert_eq!(
        summary(&ChangeSet::between(&base, &after)),
        ["M edited.txt"]
    );
    // The untouched file's stat data is unchanged, but it was recorded too recently to be
    // trusted: it is read again, and counted as racily clean.
    assert_eq!(after.scan_stats().hashed, 2, "{:?}", after.scan_stats());
    assert_eq!(after.scan_stats().racy, 1, "{:?}", after.scan_stats());
    assert_eq!(after.scan_stats().reused, 0);
}

#[test]
fn a_rescan_of_the_copy_reads_only_what_the_agent_changed() {
    // Enough files that the copy outlasts a tick of the kernel's clock: the files copied
    // before the last tick are trusted by the first rescan, with no wait.
    let project = tree(2000);
    write(project.path(), "link-target.txt", b"x\n");
    std::os::unix::fs::symlink("link-target.txt", project.path().join("link")).unwrap();
    let sandbox = tempfile::tempdir().unwrap();
    let workdir = sandbox.path().join("workdir");
    let copied = copy_project(project.path(), &workdir, &Options::default(), |_| {}).unwrap();
    assert_eq!(copied.report.files, 2001);
    assert_eq!(copied.baseline.root, project.path());
    assert_eq!(copied.workdir_snapshot.root, workdir);
    assert_eq!(copied.workdir_snapshot.nodes, copied.baseline.nodes);
    // Nothing but the copy is in the workdir (the clock marker is gone).
    assert_eq!(
        Snapshot::scan(&workdir, &Options::default()).unwrap().nodes,
        copied.baseline.nodes
    );

    // The agent edits one file, adds one, deletes one.
    write(&workdir, "d1/f1.txt", b"edited by the agent\n");
    write(&workdir, "d2/added.txt", b"added\n");
    fs::remove_file(workdir.join("d3/f3.txt")).unwrap();
    let after = Snapshot::rescan(&workdir, &Options::default(), &copied.workdir_snapshot).unwrap();
    let changes = ChangeSet::between(&copied.baseline, &after);
    assert_eq!(
        summary(&changes),
        ["M d1/f1.txt", "A d2/added.txt", "D d3/f3.txt"]
    );
    assert_eq!(
        after,
        Snapshot::scan(&workdir, &Options::default()).unwrap()
    );
    // Only the two changed files are read, plus any the copy wrote in the same clock tick
    // as it finished (racily clean).
    let stats = after.scan_stats();
    assert_eq!(stats.files, 2001);
    assert_eq!(stats.hashed, 2 + stats.racy, "{stats:?}");
    assert_eq!(stats.reused + stats.hashed, 2001, "{stats:?}");
    assert!(stats.reused > 0, "{stats:?}");

    // The baseline carries the project's own stat data: a rescan of the project against it
    // reuses (settled files) and sees nothing changed there.
    let project_now =
        Snapshot::rescan(project.path(), &Options::default(), &copied.baseline).unwrap();
    assert!(ChangeSet::between(&copied.baseline, &project_now).is_empty());

    // A previous snapshot of another tree is no help but does no harm.
    let wrong = Snapshot::rescan(&workdir, &Options::default(), &copied.baseline).unwrap();
    assert_eq!(wrong.scan_stats().reused, 0);
    assert_eq!(wrong.nodes, after.nodes);
}

#[test]
fn trust_carries_over_from_rescan_to_rescan() {
    let project = tree(30);
    let sandbox = tempfile::tempdir().unwrap();
    let workdir = sandbox.path().join("workdir");
    let copied = copy_project(project.path(), &workdir, &Options::default(), |_| {}).unwrap();
    wait_until_trusted();
    // Whatever the copy left racily clean is read here once, then settled.
    let first = Snapshot::rescan(&workdir, &Options::default(), &copied.workdir_snapshot).unwrap();
    assert!(ChangeSet::between(&copied.baseline, &first).is_empty());
    write(&workdir, "d0/f0.txt", b"edited\n");
    let second = Snapshot::rescan(&workdir, &Options::default(), &first).unwrap();
    assert_eq!(second.scan_stats().hashed, 1, "{:?}", second.scan_stats());
    assert_eq!(second.scan_stats().reused, 29);
    // Right away again: the file just edited is racily clean in `second` and read again;
    // the others, settled since `first`, stay trusted though `second` is recent.
    let third = Snapshot::rescan(&workdir, &Options::default(), &second).unwrap();
    assert_eq!(third.scan_stats().hashed, 1, "{:?}", third.scan_stats());
    assert_eq!(third.scan_stats().racy, 1);
    assert_eq!(third.scan_stats().reused, 29);
    assert_eq!(
        summary(&ChangeSet::between(&copied.baseline, &third)),
        ["M d0/f0.txt"]
    );
}
