//! A session's project in `copy` mode on the host side: copied aside with its baseline before
//! the sandbox starts, and afterwards what changed shown, kept as a patch, and applied only on
//! approval (per-file conflict checks; nothing written outside the project).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use changeset::{ChangeSet, Options, Snapshot};

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
        // Only what changed since the copy is read (like `git status`); a workdir fetched
        // from a VM has other inodes and is read whole.
        let mut now = Snapshot::rescan(workdir, &self.options, &self.copy).map_err(error)?;
        let forgotten = forget_script_output(workdir, &self.baseline, &mut now);
        if forgotten > 0 {
            eprintln!(
                "left out {forgotten} file(s) the runtime script made (unchanged by the agent since)"
            );
        }
        let changes = ChangeSet::between(&self.baseline, &now);
        let project = self.baseline.root.display().to_string();
        if changes.is_empty() {
            // Only entries that are never applied (over the size cap, special files, links
            // out): named, so nothing the agent made vanishes without a word.
            let refused = changes.summary();
            if refused.is_empty() {
                eprintln!("no changes to {project}");
            } else {
                eprintln!("no changes to apply to {project}; left out:\n{refused}");
            }
            return Ok(());
        }
        eprintln!("changes to {project}:\n{}", changes.summary());
        let diff = changes.diff().map_err(error)?;
        if let Some(patch) = &review.patch {
            std::fs::write(patch, &diff)
                .map_err(|e| computeragent::Error::io(format!("write {}", patch.display()), e))?;
            eprintln!("wrote the patch to {}", patch.display());
        }
        let apply = if review.no_apply {
            false
        } else if review.apply {
            true
        } else if std::io::stdin().is_terminal() {
            eprintln!("{diff}");
            eprint!("apply these changes to {project}? [y/N] ");
            let mut answer = String::new();
            let _ = std::io::stdin().read_line(&mut answer);
            matches!(answer.trim(), "y" | "Y" | "yes")
        } else {
            false
        };
        if !apply {
            eprintln!("not applied");
            return Ok(());
        }
        let report = changes.apply(&self.baseline.root).map_err(error)?;
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
        Ok(())
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
