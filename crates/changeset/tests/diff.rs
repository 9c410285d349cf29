//! The change set's diff as patches that real tools apply: a git patch (`git apply`) recreates
//! every kind of change, binary files included; a plain one (`patch -p1`) carries the text
//! changes and names the rest; a file the person changed since copy-in is named, never shown
//! as reverted, and never fails the rest of the diff.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use changeset::{ChangeSet, DiffFormat, Options, Snapshot, copy_in};

fn write(root: &Path, relative: &str, content: &[u8], mode: u32) {
    let path = root.join(relative);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, content).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Bytes no compressor shrinks much, with NULs (so binary), `len` of them.
fn noise(seed: u32, len: usize) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|i| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            if i % 97 == 0 { 0 } else { (state >> 24) as u8 }
        })
        .collect()
}

/// Leaves `.git` out: it is the repository, not the project's content.
fn options() -> Options {
    Options {
        excludes: vec![".git".into()],
        ..Options::default()
    }
}

fn scan(root: &Path) -> Snapshot {
    Snapshot::scan(root, &options()).unwrap()
}

/// Runs `program args` in `dir`; its stderr when it fails.
fn run(dir: &Path, program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("`{program}` could not be run ({e}): is it installed?"));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(format!("{}{}", text(&out.stdout), text(&out.stderr)))
    }
}

/// Fails the test, naming the tool, when `tool` is not installed.
fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{tool}` is not installed, and this test applies a patch with it: install it \
         (Debian: apt-get install {tool})"
    );
}

/// A project, the sandbox's copy of it (with the baseline), as copy-in leaves them.
fn copied(project: &Path) -> (tempfile::TempDir, Snapshot) {
    let sandbox = tempfile::tempdir().unwrap();
    let workdir = sandbox.path().join("workdir");
    let (baseline, _) = copy_in(project, &workdir, &options(), |_| {}).unwrap();
    (sandbox, baseline)
}

/// What still differs from the agent's tree in `project` after a patch.
fn left_to_do(workdir: &Path, project: &Path) -> Vec<String> {
    ChangeSet::between(&scan(project), &scan(workdir))
        .summary()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_git_patch_recreates_every_kind_of_change_binaries_included() {
    require("git");
    let project = tempfile::tempdir().unwrap();
    let p = project.path();
    run(p, "git", &["init", "-q"]).unwrap();
    write(p, "README.md", b"# Project\n\none\ntwo\nthree\n", 0o644);
    write(p, "keep.txt", b"untouched\n", 0o644);
    write(p, "gone.txt", b"delete me\n", 0o644);
    write(p, "gone.bin", &noise(1, 3000), 0o644);
    write(p, "image.bin", &noise(2, 20_000), 0o644);
    write(p, "no-eol.txt", b"a\nb", 0o644);
    write(p, "src/old_name.rs", b"pub fn moved() {}\n", 0o644);
    write(p, "tool.sh", b"#!/bin/sh\necho tool\n", 0o644);
    write(p, "script.sh", b"#!/bin/sh\necho hi\n", 0o755);
    write(p, "text-then-binary.dat", b"text for now\n", 0o644);
    write(p, "was-file", b"a file, then a link\n", 0o644);
    write(p, "dir-then-file/inside.txt", b"in a directory\n", 0o644);
    write(p, "file-then-dir", b"a file, then a directory\n", 0o644);
    symlink("README.md", p.join("link")).unwrap();
    symlink("keep.txt", p.join("old-link")).unwrap();
    let (sandbox, baseline) = copied(p);
    let w = &sandbox.path().join("workdir");

    // The agent's changes: every kind.
    write(
        w,
        "README.md",
        b"# Project\n\none\ntwo, edited\nthree\n",
        0o644,
    );
    fs::remove_file(w.join("gone.txt")).unwrap();
    fs::remove_file(w.join("gone.bin")).unwrap();
    let mut image = noise(2, 20_000);
    image[10_000..10_100].copy_from_slice(&noise(3, 100));
    write(w, "image.bin", &image, 0o644);
    write(w, "no-eol.txt", b"a\nc", 0o644);
    fs::rename(w.join("src/old_name.rs"), w.join("src/new_name.rs")).unwrap();
    fs::set_permissions(w.join("tool.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    write(w, "script.sh", b"#!/bin/sh\necho hello\n", 0o644);
    write(w, "text-then-binary.dat", &noise(4, 500), 0o644);
    fs::remove_file(w.join("was-file")).unwrap();
    symlink("keep.txt", w.join("was-file")).unwrap();
    fs::remove_dir_all(w.join("dir-then-file")).unwrap();
    write(w, "dir-then-file", b"a file now\n", 0o644);
    fs::remove_file(w.join("file-then-dir")).unwrap();
    write(w, "file-then-dir/inside.txt", b"a directory now\n", 0o644);
    fs::remove_file(w.join("link")).unwrap();
    symlink("keep.txt", w.join("link")).unwrap();
    fs::remove_file(w.join("old-link")).unwrap();
    write(w, "new.txt", b"brand new\n", 0o644);
    write(w, "new.bin", &noise(5, 52 * 3 + 7), 0o644);
    write(w, "empty.txt", b"", 0o644);
    write(w, "run.sh", b"#!/bin/sh\necho run\n", 0o755);
    write(w, "nested/deep/file.txt", b"deep\n", 0o644);
    symlink("src", w.join("new-link")).unwrap();

    let changes = ChangeSet::between(&baseline, &scan(w));
    assert_eq!(DiffFormat::patch_for(p), DiffFormat::Git);
    let patch = changes.render(DiffFormat::Git).unwrap();
    assert!(patch.stale.is_empty(), "{:?}", patch.stale);
    assert!(patch.left_out.is_empty(), "{:?}", patch.left_out);
    assert!(
        patch.text.contains("GIT binary patch\nliteral 20000\n"),
        "{}",
        patch.text
    );
    assert!(!patch.text.contains("Binary files"), "{}", patch.text);

    let file = sandbox.path().join("changes.patch");
    fs::write(&file, &patch.text).unwrap();
    run(p, "git", &["apply", file.to_str().unwrap()]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(left_to_do(w, p), Vec::<String>::new());
    assert_eq!(fs::read(p.join("image.bin")).unwrap(), image);
    assert_eq!(
        fs::metadata(p.join("tool.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
}

#[test]
fn the_review_summarizes_binaries_in_a_line() {
    let project = tempfile::tempdir().unwrap();
    let p = project.path();
    write(p, "image.bin", &noise(1, 5000), 0o644);
    write(p, "a.txt", b"one\n", 0o644);
    let (sandbox, baseline) = copied(p);
    let w = &sandbox.path().join("workdir");
    write(w, "image.bin", &noise(2, 5000), 0o644);
    write(w, "a.txt", b"two\n", 0o644);
    let changes = ChangeSet::between(&baseline, &scan(w));
    let review = changes.render(DiffFormat::Review).unwrap();
    assert!(
        review.text.contains(
            "diff --git a/image.bin b/image.bin\nBinary files a/image.bin and b/image.bin differ\n"
        ),
        "{}",
        review.text
    );
    assert!(!review.text.contains("GIT binary patch"), "{}", review.text);
    assert!(review.text.contains("-one\n+two\n"), "{}", review.text);
    assert_eq!(changes.diff().unwrap(), review.text);
}

#[test]
fn a_plain_patch_carries_the_text_and_names_what_it_cannot() {
    require("patch");
    let project = tempfile::tempdir().unwrap();
    let p = project.path();
    write(p, "README.md", b"# Project\n\none\ntwo\nthree\n", 0o644);
    write(p, "gone.txt", b"delete me\n", 0o644);
    write(p, "no-eol.txt", b"a\nb", 0o644);
    write(p, "src/old_name.rs", b"pub fn moved() {}\n", 0o644);
    write(p, "image.bin", &noise(1, 1000), 0o644);
    write(p, "tool.sh", b"#!/bin/sh\n", 0o644);
    write(p, "dir-then-file/inside.txt", b"in a directory\n", 0o644);
    let (sandbox, baseline) = copied(p);
    let w = &sandbox.path().join("workdir");
    write(
        w,
        "README.md",
        b"# Project\n\none\ntwo, edited\nthree\n",
        0o644,
    );
    fs::remove_file(w.join("gone.txt")).unwrap();
    write(w, "no-eol.txt", b"a\nc", 0o644);
    fs::rename(w.join("src/old_name.rs"), w.join("src/new_name.rs")).unwrap();
    write(w, "new.txt", b"brand new\n", 0o644);
    write(w, "nested/deep/file.txt", b"deep\n", 0o644);
    fs::remove_dir_all(w.join("dir-then-file")).unwrap();
    write(w, "dir-then-file", b"a file now\n", 0o644);
    // What a plain patch cannot carry.
    write(w, "image.bin", &noise(2, 1000), 0o644);
    write(w, "new.bin", &noise(3, 100), 0o644);
    write(w, "empty.txt", b"", 0o644);
    write(w, "run.sh", b"#!/bin/sh\n", 0o755);
    fs::set_permissions(w.join("tool.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    symlink("README.md", w.join("link")).unwrap();
    fs::create_dir(w.join("empty-dir")).unwrap();

    let changes = ChangeSet::between(&baseline, &scan(w));
    assert_eq!(DiffFormat::patch_for(p), DiffFormat::Plain);
    let patch = changes.render(DiffFormat::Plain).unwrap();
    assert!(!patch.text.contains("diff --git"), "{}", patch.text);
    let named: BTreeSet<&str> = patch.left_out.iter().map(|(p, _)| p.as_str()).collect();
    let cannot = [
        "dir-then-file",
        "empty-dir",
        "empty.txt",
        "image.bin",
        "link",
        "new.bin",
        "run.sh",
        "tool.sh",
    ];
    assert_eq!(named, BTreeSet::from(cannot), "{:?}", patch.left_out);
    for (path, why) in &patch.left_out {
        assert!(
            patch
                .text
                .contains(&format!("# {path}: not in this patch: {why}\n")),
            "{}",
            patch.text
        );
    }

    let file = sandbox.path().join("changes.patch");
    fs::write(&file, &patch.text).unwrap();
    run(
        p,
        "patch",
        &["-p1", "--batch", "-i", file.to_str().unwrap()],
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", patch.text));
    // All that differs now is what the patch named.
    let rest = left_to_do(w, p);
    for line in &rest {
        let path = line[2..].split(' ').next().unwrap().trim_end_matches('/');
        assert!(named.contains(path), "{line} not named: {rest:?}");
    }
    assert_eq!(
        fs::read(p.join("README.md")).unwrap(),
        b"# Project\n\none\ntwo, edited\nthree\n"
    );
    assert_eq!(fs::read(p.join("no-eol.txt")).unwrap(), b"a\nc");
    assert!(!p.join("gone.txt").exists() && !p.join("src/old_name.rs").exists());
    assert!(!p.join("dir-then-file/inside.txt").exists());
}

#[test]
fn a_file_the_person_changed_since_copy_in_is_named_not_diffed() {
    require("git");
    let project = tempfile::tempdir().unwrap();
    let p = project.path();
    for name in [
        "edited",
        "removed",
        "deleted-edited",
        "renamed-edited",
        "fine",
    ] {
        write(
            p,
            &format!("{name}.txt"),
            format!("{name}: one\n").as_bytes(),
            0o644,
        );
    }
    write(p, "chmod.sh", b"#!/bin/sh\n", 0o644);
    let (sandbox, baseline) = copied(p);
    let w = &sandbox.path().join("workdir");
    // The agent changes each of them.
    for name in ["edited", "removed", "fine"] {
        write(
            w,
            &format!("{name}.txt"),
            format!("{name}: agent\n").as_bytes(),
            0o644,
        );
    }
    fs::remove_file(w.join("deleted-edited.txt")).unwrap();
    fs::rename(w.join("renamed-edited.txt"), w.join("moved.txt")).unwrap();
    fs::set_permissions(w.join("chmod.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    // Meanwhile the person edits, removes and chmods the same files in the project.
    write(p, "edited.txt", b"edited: person\n", 0o644);
    fs::remove_file(p.join("removed.txt")).unwrap();
    write(p, "deleted-edited.txt", b"deleted-edited: person\n", 0o644);
    write(p, "renamed-edited.txt", b"renamed-edited: person\n", 0o644);
    fs::set_permissions(p.join("chmod.sh"), fs::Permissions::from_mode(0o600)).unwrap();

    let changes = ChangeSet::between(&baseline, &scan(w));
    let stale: BTreeSet<&str> = [
        "chmod.sh",
        "deleted-edited.txt",
        "edited.txt",
        "removed.txt",
        "renamed-edited.txt",
    ]
    .into();
    for format in [DiffFormat::Review, DiffFormat::Git, DiffFormat::Plain] {
        let diff = changes.render(format).unwrap();
        let named: BTreeSet<&str> = diff.stale.iter().map(String::as_str).collect();
        assert_eq!(named, stale, "{format:?}\n{}", diff.text);
        // The person's edits are not shown as reverted; the other change is shown.
        assert!(!diff.text.contains("person"), "{format:?}\n{}", diff.text);
        assert!(
            diff.text.contains("-fine: one\n+fine: agent\n"),
            "{}",
            diff.text
        );
        assert!(
            diff.text
                .contains("# edited.txt: changed in the project since copy-in"),
            "{}",
            diff.text
        );
    }

    // The git patch still applies, to the rest, in a copy of the project as it is now.
    let copy = tempfile::tempdir().unwrap();
    copy_in(p, &copy.path().join("p"), &options(), |_| {}).unwrap();
    let file = sandbox.path().join("changes.patch");
    fs::write(&file, changes.render(DiffFormat::Git).unwrap().text).unwrap();
    let here = copy.path().join("p");
    run(&here, "git", &["apply", file.to_str().unwrap()]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fs::read(here.join("fine.txt")).unwrap(), b"fine: agent\n");
    assert_eq!(
        fs::read(here.join("edited.txt")).unwrap(),
        b"edited: person\n"
    );

    // Exactly these are what apply reports as conflicts.
    let report = changes.apply(p).unwrap();
    let conflicts: BTreeSet<&str> = report.conflicts.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(conflicts, stale, "{:?}", report.conflicts);
    assert_eq!(fs::read(p.join("edited.txt")).unwrap(), b"edited: person\n");
}

#[test]
fn a_git_repository_gets_a_git_patch() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(DiffFormat::patch_for(dir.path()), DiffFormat::Plain);
    // A worktree's or a submodule's `.git` is a file.
    fs::write(dir.path().join(".git"), "gitdir: ../elsewhere\n").unwrap();
    assert_eq!(DiffFormat::patch_for(dir.path()), DiffFormat::Git);
    fs::remove_file(dir.path().join(".git")).unwrap();
    fs::create_dir(dir.path().join(".git")).unwrap();
    assert_eq!(DiffFormat::patch_for(dir.path()), DiffFormat::Git);
}
