//! Copy-in, the change set and apply on real trees: every kind of change (symlinks, a file
//! turned into a directory and back, setuid, setgid and sticky bits dropped), conflicts that
//! leave the project's file untouched, hostile trees refused, and a failure part-way that
//! leaves each file old or new.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use changeset::{ChangeSet, Options, Skipped, Snapshot, copy_in};

fn write(root: &Path, relative: &str, content: &[u8]) {
    let path = root.join(relative);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// A project, its copy (the sandbox's workdir) and the baseline.
fn setup() -> (tempfile::TempDir, tempfile::TempDir, Snapshot) {
    let project = tempfile::tempdir().unwrap();
    let p = project.path();
    write(p, "README.md", b"# Project\n\nline two\nline three\n");
    write(p, "src/lib.rs", b"fn main() {}\n");
    write(p, "src/old_name.rs", b"pub fn moved() {}\n");
    write(p, "gone.txt", b"delete me\n");
    write(p, "script.sh", b"#!/bin/sh\necho hi\n");
    write(p, "image.bin", &[0u8, 1, 2, 3, 255]);
    fs::create_dir(p.join("empty-old")).unwrap();
    std::os::unix::fs::symlink("src/lib.rs", p.join("link-in")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", p.join("link-out")).unwrap();
    let sandbox = tempfile::tempdir().unwrap();
    let workdir = sandbox.path().join("workdir");
    let (baseline, report) = copy_in(p, &workdir, &Options::default(), |_| {}).unwrap();
    assert_eq!(report.files, 6);
    (project, sandbox, baseline)
}

#[test]
fn copy_in_copies_the_project_but_not_what_leaves_it() {
    let (project, sandbox, baseline) = setup();
    let workdir = sandbox.path().join("workdir");
    assert_eq!(
        fs::read(workdir.join("README.md")).unwrap(),
        fs::read(project.path().join("README.md")).unwrap()
    );
    assert_eq!(
        fs::read_link(workdir.join("link-in")).unwrap(),
        Path::new("src/lib.rs")
    );
    assert!(
        fs::symlink_metadata(workdir.join("link-out")).is_err(),
        "a link out was copied"
    );
    assert_eq!(baseline.skipped.get("link-out"), Some(&Skipped::SymlinkOut));
    // Nothing changed yet: the copy equals the baseline.
    let now = Snapshot::scan(&workdir, &Options::default()).unwrap();
    let changes = ChangeSet::between(&baseline, &now);
    assert!(changes.is_empty(), "{}", changes.summary());
}

#[test]
fn every_kind_of_change_is_listed_diffed_and_applied() {
    let (project, sandbox, baseline) = setup();
    let w = sandbox.path().join("workdir");
    write(
        &w,
        "README.md",
        b"# Project\n\nline two, edited\nline three\n",
    );
    write(&w, "src/new.rs", b"pub fn added() {}\n");
    fs::rename(w.join("src/old_name.rs"), w.join("src/new_name.rs")).unwrap();
    fs::remove_file(w.join("gone.txt")).unwrap();
    fs::set_permissions(w.join("script.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(w.join("image.bin"), [9u8, 0, 9]).unwrap();
    fs::create_dir(w.join("empty-new")).unwrap();
    fs::remove_dir(w.join("empty-old")).unwrap();
    std::os::unix::fs::symlink("../README.md", w.join("src/readme-link")).unwrap();
    let now = Snapshot::scan(&w, &Options::default()).unwrap();
    let changes = ChangeSet::between(&baseline, &now);
    let lines: std::collections::BTreeSet<String> =
        changes.summary().lines().map(str::to_owned).collect();
    for expected in [
        "M README.md",
        "A src/new.rs",
        "R src/old_name.rs -> src/new_name.rs",
        "D gone.txt",
        "T script.sh 644 -> 755",
        "M image.bin",
        "A empty-new/",
        "D empty-old/",
        "A src/readme-link (symlink)",
    ] {
        assert!(
            lines.contains(expected),
            "{expected} missing from\n{}",
            changes.summary()
        );
    }
    assert_eq!(lines.len(), 9, "{}", changes.summary());

    let diff = changes.diff().unwrap();
    assert!(
        diff.contains("diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n"),
        "{diff}"
    );
    assert!(diff.contains("-line two\n+line two, edited\n"), "{diff}");
    assert!(
        diff.contains("new file mode 100644\n--- /dev/null\n+++ b/src/new.rs\n"),
        "{diff}"
    );
    assert!(
        diff.contains("deleted file mode 100644\n--- a/gone.txt\n+++ /dev/null\n"),
        "{diff}"
    );
    assert!(
        diff.contains("rename from src/old_name.rs\nrename to src/new_name.rs\n"),
        "{diff}"
    );
    assert!(
        diff.contains("old mode 100644\nnew mode 100755\n"),
        "{diff}"
    );
    assert!(
        diff.contains("Binary files a/image.bin and b/image.bin differ"),
        "{diff}"
    );
    assert!(diff.contains("new file mode 120000"), "{diff}");

    // The diff is a patch git applies to a pristine copy of the project.
    let pristine = tempfile::tempdir().unwrap();
    let (_, _) = copy_in(project.path(), pristine.path(), &Options::default(), |_| {}).unwrap();
    let patch = pristine.path().join("changes.patch");
    // Binary hunks cannot be applied from a text diff: exclude them from git's check.
    fs::write(&patch, &diff).unwrap();
    let git = std::process::Command::new("git")
        .args(["apply", "--check", "--exclude=image.bin", "changes.patch"])
        .current_dir(pristine.path())
        .output()
        .unwrap();
    assert!(
        git.status.success(),
        "{}",
        String::from_utf8_lossy(&git.stderr)
    );

    let report = changes.apply(project.path()).unwrap();
    assert!(report.conflicts.is_empty(), "{:?}", report.conflicts);
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    // The project now is the sandbox's tree (the link out of the project was never copied).
    let mut after = Snapshot::scan(project.path(), &Options::default()).unwrap();
    after.nodes.remove("link-out");
    assert!(
        ChangeSet::between(&now, &after).is_empty(),
        "{}",
        ChangeSet::between(&now, &after).summary()
    );
    assert_eq!(mode(&project.path().join("script.sh")), 0o755);
    // No temporary file is left beside any target.
    let leftovers: Vec<_> = walk(project.path())
        .into_iter()
        .filter(|p| p.contains(".changeset-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in fs::read_dir(root).unwrap().flatten() {
        let path = entry.path();
        out.push(path.to_string_lossy().into_owned());
        if entry.file_type().unwrap().is_dir() {
            out.extend(walk(&path));
        }
    }
    out
}

#[test]
fn a_file_changed_on_the_host_since_copy_in_is_a_conflict_and_stays() {
    let (project, sandbox, baseline) = setup();
    let w = sandbox.path().join("workdir");
    write(&w, "README.md", b"the agent's version\n");
    write(&w, "src/lib.rs", b"fn main() { agent(); }\n");
    write(&w, "brand-new.txt", b"agent\n");
    // Meanwhile, the person edited README.md and created brand-new.txt.
    write(project.path(), "README.md", b"the person's version\n");
    write(project.path(), "brand-new.txt", b"person\n");
    let now = Snapshot::scan(&w, &Options::default()).unwrap();
    let report = ChangeSet::between(&baseline, &now)
        .apply(project.path())
        .unwrap();
    let conflicts: Vec<&str> = report.conflicts.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(conflicts, ["README.md", "brand-new.txt"], "{report:?}");
    assert_eq!(
        fs::read(project.path().join("README.md")).unwrap(),
        b"the person's version\n"
    );
    assert_eq!(
        fs::read(project.path().join("brand-new.txt")).unwrap(),
        b"person\n"
    );
    // The change without a conflict went in.
    assert_eq!(
        fs::read(project.path().join("src/lib.rs")).unwrap(),
        b"fn main() { agent(); }\n"
    );
    assert_eq!(report.applied, ["src/lib.rs"]);
}

#[test]
fn hostile_trees_are_refused_and_nothing_is_written_outside() {
    let (project, sandbox, baseline) = setup();
    let w = sandbox.path().join("workdir");
    let outside = tempfile::tempdir().unwrap();
    // A symlink out of the project, a FIFO, and setuid bits.
    std::os::unix::fs::symlink(outside.path(), w.join("escape")).unwrap();
    std::os::unix::fs::symlink("../../etc/shadow", w.join("src/shadow")).unwrap();
    nix_mkfifo(&w.join("pipe"));
    write(&w, "tool", b"#!/bin/sh\n");
    fs::set_permissions(w.join("tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    // The person replaced a directory of the project by a symlink out, after copy-in: a file
    // the agent added under it must not land outside.
    write(&w, "src/added.rs", b"x\n");
    fs::rename(project.path().join("src"), project.path().join("src-moved")).unwrap();
    std::os::unix::fs::symlink(outside.path(), project.path().join("src")).unwrap();

    let now = Snapshot::scan(&w, &Options::default()).unwrap();
    let changes = ChangeSet::between(&baseline, &now);
    assert_eq!(changes.refused.get("pipe"), Some(&Skipped::Special));
    assert!(
        changes
            .summary()
            .contains("! pipe: a device file, FIFO or socket"),
        "{}",
        changes.summary()
    );
    let report = changes.apply(project.path()).unwrap();
    let refused: Vec<&str> = report.refused.iter().map(|(p, _)| p.as_str()).collect();
    assert!(refused.contains(&"escape"), "{report:?}");
    assert!(refused.contains(&"src/added.rs"), "{report:?}");
    assert!(refused.contains(&"src/shadow"), "{report:?}");
    assert!(
        fs::read_dir(outside.path()).unwrap().next().is_none(),
        "something was written outside"
    );
    assert!(fs::symlink_metadata(project.path().join("pipe")).is_err());
    assert!(fs::symlink_metadata(project.path().join("escape")).is_err());
    // The tool came in without its setuid bit.
    assert_eq!(mode(&project.path().join("tool")), 0o755);
}

fn nix_mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_failure_part_way_leaves_each_file_old_or_new() {
    let (project, sandbox, baseline) = setup();
    let w = sandbox.path().join("workdir");
    write(&w, "README.md", b"new readme\n");
    write(&w, "src/lib.rs", b"new lib\n");
    let now = Snapshot::scan(&w, &Options::default()).unwrap();
    let changes = ChangeSet::between(&baseline, &now);
    // The sandbox's copy of the second file vanishes mid-apply (as a crash would cut it).
    fs::remove_file(w.join("src/lib.rs")).unwrap();
    let err = changes.apply(project.path()).unwrap_err();
    assert!(err.to_string().contains("src/lib.rs"), "{err}");
    assert_eq!(
        fs::read(project.path().join("README.md")).unwrap(),
        b"new readme\n"
    );
    assert_eq!(
        fs::read(project.path().join("src/lib.rs")).unwrap(),
        b"fn main() {}\n"
    );
    let leftovers: Vec<_> = walk(project.path())
        .into_iter()
        .filter(|p| p.contains(".changeset-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Applying again finishes what is left: the first file is now a conflict-free no-op.
    write(&w, "src/lib.rs", b"new lib\n");
    let again = changes.apply(project.path()).unwrap();
    assert_eq!(again.applied, ["src/lib.rs"]);
    assert_eq!(again.conflicts.len(), 1, "{again:?}");
}

#[test]
fn excludes_and_the_size_cap_leave_entries_out() {
    let project = tempfile::tempdir().unwrap();
    write(project.path(), "node_modules/x/index.js", b"x");
    write(project.path(), "build/cache/blob", b"x");
    write(project.path(), "build/keep.txt", b"keep");
    write(project.path(), "big.bin", &vec![7u8; 2048]);
    let options = Options {
        excludes: vec!["node_modules".into(), "build/cache".into()],
        max_file_bytes: 1024,
    };
    let dest = tempfile::tempdir().unwrap();
    let (baseline, report) =
        copy_in(project.path(), &dest.path().join("w"), &options, |_| {}).unwrap();
    assert_eq!(report.files, 1);
    assert!(baseline.nodes.contains_key("build/keep.txt"));
    assert_eq!(
        baseline.skipped.get("node_modules"),
        Some(&Skipped::Excluded)
    );
    assert_eq!(
        baseline.skipped.get("build/cache"),
        Some(&Skipped::Excluded)
    );
    assert_eq!(
        baseline.skipped.get("big.bin"),
        Some(&Skipped::TooLarge(2048))
    );
    assert!(!dest.path().join("w/node_modules").exists());
}

#[test]
fn setgid_and_sticky_bits_are_dropped_on_apply() {
    let (project, sandbox, baseline) = setup();
    let w = sandbox.path().join("workdir");
    write(&w, "group-tool", b"#!/bin/sh\n");
    fs::set_permissions(w.join("group-tool"), fs::Permissions::from_mode(0o2755)).unwrap();
    // An existing file modified into a setgid one, and a directory setgid and sticky.
    write(&w, "script.sh", b"#!/bin/sh\necho changed\n");
    fs::set_permissions(w.join("script.sh"), fs::Permissions::from_mode(0o2775)).unwrap();
    fs::create_dir(w.join("shared")).unwrap();
    fs::set_permissions(w.join("shared"), fs::Permissions::from_mode(0o3775)).unwrap();
    let now = Snapshot::scan(&w, &Options::default()).unwrap();
    let report = ChangeSet::between(&baseline, &now)
        .apply(project.path())
        .unwrap();
    assert!(report.conflicts.is_empty(), "{report:?}");
    assert_eq!(mode(&project.path().join("group-tool")), 0o755);
    assert_eq!(mode(&project.path().join("script.sh")), 0o775);
    assert_eq!(mode(&project.path().join("shared")), 0o775);
}

fn mknod_null(path: &Path) {
    let status = std::process::Command::new("mknod")
        .arg(path)
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(status.success(), "mknod {} failed", path.display());
}

#[test]
fn device_files_and_fifos_are_left_out_of_the_copy_and_reported() {
    let project = tempfile::tempdir().unwrap();
    let p = project.path();
    write(p, "src/lib.rs", b"lib\n");
    mknod_null(&p.join("src/null"));
    nix_mkfifo(&p.join("pipe"));
    let sandbox = tempfile::tempdir().unwrap();
    let w = sandbox.path().join("workdir");
    let (baseline, report) = copy_in(p, &w, &Options::default(), |_| {}).unwrap();
    assert_eq!(report.files, 1);
    assert_eq!(baseline.skipped.get("src/null"), Some(&Skipped::Special));
    assert_eq!(baseline.skipped.get("pipe"), Some(&Skipped::Special));
    assert!(!baseline.nodes.contains_key("src/null"));
    assert!(!baseline.nodes.contains_key("pipe"));
    assert!(fs::symlink_metadata(w.join("src/null")).is_err());
    assert!(fs::symlink_metadata(w.join("pipe")).is_err());
    // The agent's own device file is refused too, and the project's are left as they are.
    mknod_null(&w.join("dev"));
    let now = Snapshot::scan(&w, &Options::default()).unwrap();
    let changes = ChangeSet::between(&baseline, &now);
    assert!(changes.is_empty(), "{}", changes.summary());
    assert!(
        changes
            .summary()
            .contains("! dev: a device file, FIFO or socket: never applied"),
        "{}",
        changes.summary()
    );
    changes.apply(p).unwrap();
    assert!(fs::symlink_metadata(p.join("dev")).is_err());
    use std::os::unix::fs::FileTypeExt;
    assert!(
        fs::symlink_metadata(p.join("src/null"))
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert!(
        fs::symlink_metadata(p.join("pipe"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

#[test]
fn a_retargeted_and_a_deleted_symlink_are_applied() {
    let project = tempfile::tempdir().unwrap();
    let p = project.path();
    write(p, "a.txt", b"a\n");
    write(p, "b.txt", b"b\n");
    std::os::unix::fs::symlink("a.txt", p.join("moving")).unwrap();
    std::os::unix::fs::symlink("a.txt", p.join("going")).unwrap();
    let sandbox = tempfile::tempdir().unwrap();
    let w = sandbox.path().join("workdir");
    let (baseline, _) = copy_in(p, &w, &Options::default(), |_| {}).unwrap();
    fs::remove_file(w.join("moving")).unwrap();
    std::os::unix::fs::symlink("b.txt", w.join("moving")).unwrap();
    fs::remove_file(w.join("going")).unwrap();
    let now = Snapshot::scan(&w, &Options::default()).unwrap();
    let changes = ChangeSet::between(&baseline, &now);
    assert_eq!(changes.summary(), "D going (symlink)\nM moving (symlink)");
    let report = changes.apply(p).unwrap();
    assert_eq!(report.applied, ["going", "moving"], "{report:?}");
    assert_eq!(fs::read_link(p.join("moving")).unwrap(), Path::new("b.txt"));
    assert!(fs::symlink_metadata(p.join("going")).is_err());
    // What they pointed at stays.
    assert_eq!(fs::read(p.join("a.txt")).unwrap(), b"a\n");
    let leftovers: Vec<_> = walk(p)
        .into_iter()
        .filter(|p| p.contains(".changeset-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_file_becomes_a_directory_and_a_directory_a_file() {
    let (project, sandbox, baseline) = setup();
    let w = sandbox.path().join("workdir");
    fs::remove_file(w.join("gone.txt")).unwrap();
    write(&w, "gone.txt/inside.txt", b"now a directory\n");
    fs::remove_dir_all(w.join("src")).unwrap();
    write(&w, "src", b"now a file\n");
    let now = Snapshot::scan(&w, &Options::default()).unwrap();
    let report = ChangeSet::between(&baseline, &now)
        .apply(project.path())
        .unwrap();
    assert!(report.conflicts.is_empty(), "{report:?}");
    assert!(report.refused.is_empty(), "{report:?}");
    let p = project.path();
    assert!(fs::symlink_metadata(p.join("gone.txt")).unwrap().is_dir());
    assert_eq!(
        fs::read(p.join("gone.txt/inside.txt")).unwrap(),
        b"now a directory\n"
    );
    assert_eq!(fs::read(p.join("src")).unwrap(), b"now a file\n");
    let mut after = Snapshot::scan(p, &Options::default()).unwrap();
    after.nodes.remove("link-out");
    assert_eq!(after.nodes, now.nodes);
}

#[test]
fn a_conflict_on_a_delete_or_a_mode_change_leaves_the_file_untouched() {
    let (project, sandbox, baseline) = setup();
    let w = sandbox.path().join("workdir");
    fs::remove_file(w.join("gone.txt")).unwrap();
    fs::set_permissions(w.join("script.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    // Meanwhile the person edited the file the agent deleted, and made private the one the
    // agent made executable.
    write(project.path(), "gone.txt", b"the person still needs this\n");
    fs::set_permissions(
        project.path().join("script.sh"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let now = Snapshot::scan(&w, &Options::default()).unwrap();
    let report = ChangeSet::between(&baseline, &now)
        .apply(project.path())
        .unwrap();
    let conflicts: Vec<&str> = report.conflicts.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(conflicts, ["gone.txt", "script.sh"], "{report:?}");
    assert!(report.applied.is_empty(), "{report:?}");
    assert_eq!(
        fs::read(project.path().join("gone.txt")).unwrap(),
        b"the person still needs this\n"
    );
    assert_eq!(
        fs::read(project.path().join("script.sh")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    assert_eq!(mode(&project.path().join("script.sh")), 0o600);
}
