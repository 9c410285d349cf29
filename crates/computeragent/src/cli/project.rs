//! A session's project in `copy` mode on the host side: copied aside with its baseline before
//! the sandbox starts, and afterwards what changed shown, kept as a patch, and applied only on
//! approval (per-file conflict checks; nothing written outside the project).

use std::io::IsTerminal;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use changeset::{ApplyReport, ChangeSet, DiffFormat, Options, Snapshot};

/// How the changes are handled.
#[derive(Debug, Clone, Default)]
pub struct Review {
    /// Apply without asking.
    pub apply: bool,
    /// Never apply.
    pub no_apply: bool,
    /// Write the patch here.
    pub patch: Option<PathBuf>,
}

/// The project copied aside, its baseline, and the snapshot of the copy that makes the review
/// read only what the session changed.
#[derive(Debug)]
pub struct Staged {
    /// What is left out, at copy-in and in the review alike.
    options: Options,
    baseline: Snapshot,
    copy: Snapshot,
    staging: computeragent::project::ScratchDir,
}

fn error(e: changeset::Error) -> computeragent::Error {
    computeragent::Error::invalid("project", e.to_string())
}

impl Staged {
    /// Copies `dir` aside into a private directory (progress on stderr for large trees),
    /// leaving `excludes` out (names, or paths relative to the project).
    pub fn stage(dir: &Path, excludes: Vec<String>) -> computeragent::Result<Self> {
        let options = Options {
            excludes,
            ..Options::default()
        };
        let project = dir.canonicalize().map_err(|e| {
            computeragent::Error::io(format!("open the project {}", dir.display()), e)
        })?;
        let staging = computeragent::project::ScratchDir::new("project")?;
        let mut shown = false;
        let copied = changeset::copy_project(&project, staging.path(), &options, |r| {
            if r.files >= 10_000 && r.files % 10_000 < 256 {
                eprint!(
                    "\rcopying {}: {} files, {} MiB",
                    project.display(),
                    r.files,
                    r.bytes >> 20
                );
                shown = true;
            }
        })
        .map_err(error)?;
        if shown {
            eprintln!();
        }
        let left_out: Vec<String> = copied
            .baseline
            .skipped
            .iter()
            .filter_map(|(path, why)| match why {
                changeset::Skipped::Excluded => None,
                changeset::Skipped::TooLarge(n) => {
                    Some(format!("{path} ({n} bytes, over the size cap)"))
                }
                changeset::Skipped::SymlinkOut => {
                    Some(format!("{path} (a symlink out of the project)"))
                }
                changeset::Skipped::Special => {
                    Some(format!("{path} (a device file, FIFO or socket)"))
                }
                changeset::Skipped::NotUtf8 => Some(format!("{path} (a name that is not UTF-8)")),
            })
            .collect();
        if !left_out.is_empty() {
            eprintln!(
                "left out of the sandbox's copy of {}:\n  {}",
                project.display(),
                left_out.join("\n  ")
            );
        }
        tracing::debug!(
            files = copied.report.files,
            bytes = copied.report.bytes,
            "project copied"
        );
        Ok(Self {
            options,
            baseline: copied.baseline,
            copy: copied.workdir_snapshot,
            staging,
        })
    }

    /// The copy, handed over to the sandbox's workdir (a local runtime moves its files there,
    /// so they keep the inodes the review's rescan knows).
    pub fn staging(&self) -> &Path {
        self.staging.path()
    }

    /// Shows what changed in `workdir`, writes the patch, and applies on approval.
    pub fn review(&self, workdir: &Path, review: &Review) -> computeragent::Result<()> {
        let changes = self.changes_in(workdir)?;
        review_changes(&changes, &self.baseline.root, review).map(|_| ())
    }

    /// Keeps what changed in `workdir` as a patch in `dir`, for a session ended from outside
    /// before anyone could review it: git's format, binary files included, so nothing is
    /// lost (`git apply` reads it in any directory). The file, or `None` when nothing changed.
    pub fn keep_as_patch(
        &self,
        workdir: &Path,
        dir: &Path,
    ) -> computeragent::Result<Option<PathBuf>> {
        let changes = self.changes_in(workdir)?;
        if changes.is_empty() {
            return Ok(None);
        }
        let patch = changes.render(DiffFormat::Git).map_err(error)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| computeragent::Error::io(format!("create {}", dir.display()), e))?;
        let name = self
            .baseline
            .root
            .file_name()
            .map_or_else(|| "project".into(), |n| n.to_string_lossy().into_owned());
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let file = dir.join(format!("{name}-{seconds}-{}.patch", std::process::id()));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&file)
            .and_then(|mut f| std::io::Write::write_all(&mut f, patch.text.as_bytes()))
            .map_err(|e| computeragent::Error::io(format!("write {}", file.display()), e))?;
        Ok(Some(file))
    }

    /// What the session changed in `workdir`. Only what changed since the copy is read (like
    /// `git status`); a workdir fetched from a VM has other inodes and is read whole.
    fn changes_in(&self, workdir: &Path) -> computeragent::Result<ChangeSet> {
        let mut now = Snapshot::rescan(workdir, &self.options, &self.copy).map_err(error)?;
        let forgotten = forget_script_output(workdir, &self.baseline, &mut now);
        if forgotten > 0 {
            eprintln!(
                "left out {forgotten} file(s) the runtime script made (unchanged by the agent since)"
            );
        }
        Ok(ChangeSet::between(&self.baseline, &now))
    }
}

/// Where the work of sessions ended before their review is kept:
/// `$XDG_STATE_HOME/computeragent/unreviewed`, or `~/.local/state/computeragent/unreviewed`.
pub fn unreviewed_dir() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir)
        .join("computeragent/unreviewed")
}

/// Shows `changes` to the project at `root`, writes the patch, and applies them on approval
/// (`review`): what `shell`, `claude` and `run` do at the end. The apply's report when they
/// were applied.
pub fn review_changes(
    changes: &ChangeSet,
    root: &Path,
    review: &Review,
) -> computeragent::Result<Option<ApplyReport>> {
    let project = root.display().to_string();
    if changes.is_empty() {
        // Only entries that are never applied (over the size cap, special files, links
        // out): named, so nothing the agent made vanishes without a word.
        let refused = changes.summary();
        if refused.is_empty() {
            eprintln!("no changes to {project}");
        } else {
            eprintln!("no changes to apply to {project}; left out:\n{refused}");
        }
        return Ok(None);
    }
    eprintln!("changes to {project}:\n{}", changes.summary());
    // A patch that cannot be written is said, and the review goes on: the session's work
    // may still be applied. The error is returned at the end.
    let mut unwritten = None;
    let mut told_stale = false;
    if let Some(file) = &review.patch {
        match write_patch(changes, root, file) {
            Ok(stale) => {
                tell_stale(&stale);
                told_stale = true;
            }
            Err(e) => {
                eprintln!("{e}");
                unwritten = Some(e);
            }
        }
    }
    let apply = if review.no_apply {
        false
    } else if review.apply {
        true
    } else if std::io::stdin().is_terminal() {
        match changes.render(DiffFormat::Review) {
            Ok(diff) => {
                eprint!("{}", capped(&diff.text, review.patch.as_deref()));
                if !told_stale {
                    tell_stale(&diff.stale);
                }
            }
            Err(e) => {
                eprintln!("the diff cannot be shown ({e}): the list above is what changed")
            }
        }
        eprint!("apply these changes to {project}? [y/N] ");
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        matches!(answer.trim(), "y" | "Y" | "yes")
    } else {
        eprintln!("not on a terminal, so nobody was asked (pass --apply to apply them)");
        false
    };
    if !apply {
        eprintln!("not applied");
        return unwritten.map_or(Ok(None), Err);
    }
    let report = changes.apply(root).map_err(error)?;
    eprintln!("applied {} change(s) to {project}", report.applied.len());
    for conflict in &report.conflicts {
        eprintln!(
            "conflict: {}: {} (left as it is)",
            conflict.path, conflict.reason
        );
    }
    for (path, why) in &report.refused {
        eprintln!("refused: {path}: {why}");
    }
    unwritten.map_or(Ok(Some(report)), Err)
}

/// At most this many lines of the diff are printed for review (a session can rewrite a whole
/// tree); `--patch FILE` has it all.
const SHOWN_LINES: usize = 2_000;
/// And at most this many bytes: one line of a minified file can be megabytes.
const SHOWN_BYTES: usize = 256 << 10;

/// The diff as printed for review: its first lines within the caps, then a line saying how
/// much was left out and where to see it all.
fn capped(diff: &str, patch: Option<&Path>) -> String {
    let mut end = 0;
    for (shown, line) in diff.split_inclusive('\n').enumerate() {
        if shown == SHOWN_LINES || end + line.len() > SHOWN_BYTES {
            break;
        }
        end += line.len();
    }
    let (head, rest) = diff.split_at(end);
    if rest.is_empty() {
        return head.to_owned();
    }
    let lines = rest.lines().count();
    let whole = match patch {
        Some(file) => format!("all of it is in {}", file.display()),
        None => "pass --patch FILE to write all of it".to_owned(),
    };
    format!("{head}... {lines} more line(s) of the diff not shown ({whole})\n")
}

/// Writes the changes to `file` as a patch: git's format with binary files when `project` is
/// a git repository, else a plain one `patch -p1` reads, whose omissions are named. Returns
/// the paths the person changed since copy-in, whose changes it could not hold.
fn write_patch(
    changes: &ChangeSet,
    project: &Path,
    file: &Path,
) -> computeragent::Result<Vec<String>> {
    let format = DiffFormat::patch_for(project);
    let patch = changes.render(format).map_err(|e| {
        computeragent::Error::invalid(
            "--patch",
            format!("the patch for {} cannot be made: {e}", file.display()),
        )
    })?;
    std::fs::write(file, &patch.text).map_err(|e| {
        computeragent::Error::io(format!("write the patch to {}", file.display()), e)
    })?;
    let how = match format {
        DiffFormat::Git => "git format: git apply reads it",
        _ => "a plain diff, as the project is not a git repository: patch -p1 reads it",
    };
    eprintln!("wrote the patch to {} ({how})", file.display());
    if !patch.left_out.is_empty() {
        eprintln!(
            "not in the patch, which cannot carry them (apply the changes here to keep them):"
        );
        for (path, why) in &patch.left_out {
            eprintln!("  {path}: {why}");
        }
    }
    Ok(patch.stale)
}

/// Names the paths the person changed in the project since copy-in that the session changed
/// too: their changes are not shown, and applying them reports conflicts.
fn tell_stale(stale: &[String]) {
    if !stale.is_empty() {
        eprintln!(
            "changed in the project since the copy was made, so the session's changes to them \
             are not shown (applying leaves them as they are, as conflicts):\n  {}",
            stale.join("\n  ")
        );
    }
}

/// Where the runtime script's wrapper lists what the script made (`sha256sum` lines).
const SCRIPT_OUTPUT: &str = ".computeragent/script-output";

/// Takes what the project's runtime script made out of `now`, the workdir's snapshot: each
/// listed file whose content is still what the script left (so the agent did not touch it)
/// counts as unchanged, and directories that held only such files go too. Reads the list
/// without following symlinks and never touches the workdir. Returns how many files.
fn forget_script_output(workdir: &Path, baseline: &Snapshot, now: &mut Snapshot) -> usize {
    now.nodes.remove(SCRIPT_OUTPUT);
    let plain_dir = std::fs::symlink_metadata(workdir.join(".computeragent"))
        .is_ok_and(|m| m.file_type().is_dir());
    let list = if plain_dir {
        use rustix::fs::{Mode, OFlags};
        use std::io::Read;
        let mut text = String::new();
        rustix::fs::open(
            workdir.join(SCRIPT_OUTPUT),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map(std::fs::File::from)
        .map_err(std::io::Error::from)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map(|_| text)
        .unwrap_or_default()
    } else {
        String::new()
    };
    let mut forgotten = 0;
    let mut parents = std::collections::BTreeSet::new();
    for line in list.lines() {
        let Some((digest, path)) = line.split_once("  ") else {
            continue;
        };
        let Some(path) = path.strip_prefix("./") else {
            continue;
        };
        let Some(digest) = parse_digest(digest) else {
            continue;
        };
        let untouched = matches!(
            now.nodes.get(path),
            Some(changeset::Node::File { digest: d, .. }) if *d == digest
        );
        if !untouched {
            continue;
        }
        match baseline.nodes.get(path) {
            Some(before) => {
                now.nodes.insert(path.to_owned(), before.clone());
            }
            None => {
                now.nodes.remove(path);
            }
        }
        forgotten += 1;
        let mut parent = Path::new(path).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            parents.insert(dir.to_string_lossy().into_owned());
            parent = dir.parent();
        }
    }
    // Deepest first: a directory the script made that now holds nothing goes.
    for dir in parents.iter().rev() {
        let new_here = !baseline.nodes.contains_key(dir);
        let prefix = format!("{dir}/");
        let empty = !now.nodes.keys().any(|k| k.starts_with(&prefix));
        if new_here && empty {
            now.nodes.remove(dir);
        }
    }
    forgotten
}

/// A SHA-256 digest from 64 hex digits.
fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(digest)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // test code

    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git is installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn a_long_diff_is_capped_with_a_line_saying_how_to_see_it_all() {
        let diff: String = (0..SHOWN_LINES + 10).map(|i| format!("+{i}\n")).collect();
        let shown = capped(&diff, None);
        assert_eq!(shown.lines().count(), SHOWN_LINES + 1);
        assert!(
            shown.ends_with(
                "... 10 more line(s) of the diff not shown (pass --patch FILE to write all of it)\n"
            ),
            "{}",
            &shown[shown.len() - 200..]
        );
        let shown = capped(&diff, Some(Path::new("/tmp/x.patch")));
        assert!(
            shown.ends_with("(all of it is in /tmp/x.patch)\n"),
            "{shown}"
        );
        // One huge line is capped too.
        let long = format!("+{}\n+end\n", "x".repeat(SHOWN_BYTES));
        assert_eq!(
            capped(&long, None),
            "... 2 more line(s) of the diff not shown (pass --patch FILE to write all of it)\n"
        );
        assert_eq!(capped("+a\n+b\n", None), "+a\n+b\n");
    }

    #[test]
    fn a_file_the_person_changed_since_copy_in_leaves_the_rest_to_the_patch() {
        let project = tempfile::tempdir().unwrap();
        let p = project.path();
        git(p, &["init", "-q"]);
        std::fs::write(p.join("agent.txt"), "one\n").unwrap();
        std::fs::write(p.join("both.txt"), "one\n").unwrap();
        std::fs::write(p.join("gone.txt"), "one\n").unwrap();
        std::fs::write(p.join("image.bin"), [0u8, 1, 2, 3]).unwrap();
        let staged = Staged::stage(p, vec![".git".into()]).unwrap();
        let w = staged.staging().to_owned();
        std::fs::write(w.join("agent.txt"), "agent\n").unwrap();
        std::fs::write(w.join("both.txt"), "agent\n").unwrap();
        std::fs::write(w.join("gone.txt"), "agent\n").unwrap();
        std::fs::write(w.join("image.bin"), [9u8, 0, 9, 0, 9]).unwrap();
        // The person, meanwhile.
        std::fs::write(p.join("both.txt"), "person\n").unwrap();
        std::fs::remove_file(p.join("gone.txt")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("changes.patch");
        let review = Review {
            no_apply: true,
            patch: Some(file.clone()),
            ..Review::default()
        };
        staged.review(&w, &review).unwrap();
        let patch = std::fs::read_to_string(&file).unwrap();
        assert!(patch.contains("GIT binary patch"), "{patch}");
        assert!(
            patch.contains("# both.txt: changed in the project"),
            "{patch}"
        );
        assert!(
            patch.contains("# gone.txt: changed in the project"),
            "{patch}"
        );
        git(p, &["apply", file.to_str().unwrap()]);
        assert_eq!(std::fs::read(p.join("agent.txt")).unwrap(), b"agent\n");
        assert_eq!(
            std::fs::read(p.join("image.bin")).unwrap(),
            [9u8, 0, 9, 0, 9]
        );
        assert_eq!(std::fs::read(p.join("both.txt")).unwrap(), b"person\n");
        assert!(!p.join("gone.txt").exists());
    }

    #[test]
    fn a_patch_that_cannot_be_written_does_not_stop_the_apply() {
        let project = tempfile::tempdir().unwrap();
        let p = project.path();
        std::fs::write(p.join("a.txt"), "one\n").unwrap();
        let staged = Staged::stage(p, Vec::new()).unwrap();
        let w = staged.staging().to_owned();
        std::fs::write(w.join("a.txt"), "two\n").unwrap();
        let review = Review {
            apply: true,
            patch: Some(p.join("no-such-dir/changes.patch")),
            ..Review::default()
        };
        let error = staged.review(&w, &review).unwrap_err().to_string();
        assert!(error.contains("no-such-dir/changes.patch"), "{error}");
        assert_eq!(std::fs::read(p.join("a.txt")).unwrap(), b"two\n");
    }
}
