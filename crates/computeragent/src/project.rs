//! A project folder in `copy` mode: copied into the agent's workdir, and what the agent changed
//! brought back as a [`ChangeSet`] the caller reviews and applies (conflicts detected per
//! file, nothing written outside the project).
//!
//! The copy travels through the harness's file routes, so it works on every runtime. Symlinks
//! are not carried (the workdir's path jail would refuse them); they stay as they are in the
//! project.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use changeset::{ChangeSet, Node, Options, Skipped, Snapshot};
use substrate_core::protocol::EntryType;
use substrate_core::{Error, HarnessClient, Result};

/// A project copied for one agent.
#[derive(Debug)]
pub struct ProjectCopy {
    /// What is left out, at copy-in and when the changes are read back alike.
    options: Options,
    baseline: Snapshot,
    staging: ScratchDir,
}

fn change_error(e: changeset::Error) -> Error {
    Error::invalid("project", e.to_string())
}

fn scratch(purpose: &str) -> Result<PathBuf> {
    let token = substrate_core::Secret::random_token()?;
    let dir = std::env::temp_dir().join(format!(
        "computeragent-{purpose}-{}",
        token.expose().chars().take(12).collect::<String>()
    ));
    Ok(dir)
}

/// A fresh private directory under the temp dir, removed with everything in it when dropped.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates `computeragent-<purpose>-<random>` (mode 0700).
    pub fn new(purpose: &str) -> Result<Self> {
        let dir = scratch(purpose)?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        Ok(Self(dir))
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl ProjectCopy {
    /// Copies `project` aside (the baseline is what was copied).
    pub fn stage(project: &Path, options: &Options) -> Result<Self> {
        let project = project
            .canonicalize()
            .map_err(|e| Error::io(format!("open the project {}", project.display()), e))?;
        let staging = ScratchDir::new("project")?;
        let (mut baseline, _) =
            changeset::copy_in(&project, staging.path(), options, |_| {}).map_err(change_error)?;
        let links: Vec<String> = baseline
            .nodes
            .iter()
            .filter(|(_, n)| matches!(n, Node::Symlink { .. }))
            .map(|(p, _)| p.clone())
            .collect();
        for path in links {
            baseline.nodes.remove(&path);
            baseline.skipped.insert(path, Skipped::SymlinkOut);
        }
        Ok(Self {
            options: options.clone(),
            baseline,
            staging,
        })
    }

    /// The project's root.
    pub fn project(&self) -> &Path {
        &self.baseline.root
    }

    /// What was copied.
    pub fn baseline(&self) -> &Snapshot {
        &self.baseline
    }

    /// Puts the copy into session `session`'s workdir.
    pub async fn upload(&self, client: &HarnessClient, session: &str) -> Result<()> {
        for (path, node) in &self.baseline.nodes {
            match node {
                Node::Dir { .. } => client.mkdir(session, path, true).await?,
                Node::File { mode, .. } => {
                    let content = tokio::fs::read(self.staging.path().join(path))
                        .await
                        .map_err(|e| Error::io(format!("read the copy of {path}"), e))?;
                    client
                        .write_file(session, path, content, Some(mode & 0o777))
                        .await?;
                }
                Node::Symlink { .. } => {}
            }
        }
        Ok(())
    }

    /// Fetches session `session`'s workdir and returns what changed against the baseline,
    /// with the fetched tree (which the change set reads new content from) kept until the
    /// returned guard goes.
    pub async fn changes(
        &self,
        client: &HarnessClient,
        session: &str,
    ) -> Result<(ChangeSet, ScratchDir)> {
        let fetched = ScratchDir::new("result")?;
        let tree = client.tree(session, ".", 0).await?;
        for entry in tree.entries {
            let target = fetched.0.join(&entry.path);
            match entry.entry_type {
                EntryType::Dir => std::fs::create_dir_all(&target)
                    .map_err(|e| Error::io(format!("create {}", target.display()), e))?,
                EntryType::File => {
                    let content = client.read_file(session, &entry.path).await?;
                    if let Some(parent) = target.parent() {
                        std::fs::create_dir_all(parent)
                            .map_err(|e| Error::io(format!("create {}", parent.display()), e))?;
                    }
                    std::fs::write(&target, &content)
                        .map_err(|e| Error::io(format!("write {}", target.display()), e))?;
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(
                        &target,
                        std::fs::Permissions::from_mode(entry.mode & 0o777),
                    )
                    .map_err(|e| Error::io(format!("chmod {}", target.display()), e))?;
                }
                EntryType::Symlink => {}
            }
        }
        let now = Snapshot::scan(&fetched.0, &self.options).map_err(change_error)?;
        Ok((ChangeSet::between(&self.baseline, &now), fetched))
    }
}
