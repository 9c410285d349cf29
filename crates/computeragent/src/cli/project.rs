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

/// The project copied aside, and its baseline.
#[derive(Debug)]
pub struct Staged {
    baseline: Snapshot,
    staging: PathBuf,
}

fn error(e: changeset::Error) -> computeragent::Error {
    computeragent::Error::invalid("project", e.to_string())
}

impl Staged {
    /// Copies `dir` aside (progress on stderr for large trees).
    pub fn stage(dir: &Path) -> computeragent::Result<Self> {
        let project = dir.canonicalize().map_err(|e| {
            computeragent::Error::io(format!("open the project {}", dir.display()), e)
        })?;
        let token = substrate_core::Secret::random_token()?;
        let staging = std::env::temp_dir().join(format!(
            "computeragent-project-{}",
            token.expose().chars().take(12).collect::<String>()
        ));
        let mut shown = false;
        let (baseline, report) = changeset::copy_in(&project, &staging, &Options::default(), |r| {
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
        .map_err(|e| {
            let _ = std::fs::remove_dir_all(&staging);
            error(e)
        })?;
        if shown {
            eprintln!();
        }
        tracing::debug!(files = report.files, bytes = report.bytes, "project copied");
        Ok(Self { baseline, staging })
    }

    /// The copy (the sandbox's workdir is seeded from it).
    pub fn staging(&self) -> &Path {
        &self.staging
    }

    /// Shows what changed in `workdir`, writes the patch, and applies on approval.
    pub fn review(&self, workdir: &Path, review: &Review) -> computeragent::Result<()> {
        let now = Snapshot::scan(workdir, &Options::default()).map_err(error)?;
        let changes = ChangeSet::between(&self.baseline, &now);
        let project = self.baseline.root.display().to_string();
        if changes.is_empty() {
            eprintln!("no changes to {project}");
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

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.staging);
    }
}
