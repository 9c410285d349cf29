//! Applying a change set to the project: per path, only when the project still holds what the
//! baseline recorded; each file written beside its place and renamed over it; nothing ever
//! written outside the project.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::snapshot::digest_file;
use crate::{Change, ChangeSet, Error, Node, Result, check_relative};

/// A change that was not applied because the project changed under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The path.
    pub path: String,
    /// What is there now.
    pub reason: String,
}

/// What [`ChangeSet::apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Paths changed in the project.
    pub applied: Vec<String>,
    /// Paths left alone because the project's copy changed since the baseline.
    pub conflicts: Vec<Conflict>,
    /// Changes refused as unsafe (a symlink out of the project, a path through a symlink).
    pub refused: Vec<(String, String)>,
}

/// The project's node at `relative`, read the way a snapshot reads it.
fn current(project: &Path, relative: &str) -> Result<Option<Node>> {
    let path = project.join(relative);
    let meta = match fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("inspect", &path, e)),
    };
    let kind = meta.file_type();
    let mode = meta.mode() & 0o777;
    Ok(Some(if kind.is_dir() {
        Node::Dir { mode }
    } else if kind.is_symlink() {
        Node::Symlink {
            target: fs::read_link(&path).map_err(|e| Error::io("read link", &path, e))?,
        }
    } else if kind.is_file() {
        Node::File {
            size: meta.len(),
            mode,
            digest: digest_file(&path)?,
        }
    } else {
        // A device or FIFO where the baseline had something else: never touched.
        Node::Symlink {
            target: PathBuf::from("<special file>"),
        }
    }))
}

/// Every ancestor of `relative` inside `project` is a real directory (not a symlink), or
/// does not exist yet.
fn ancestors_are_dirs(project: &Path, relative: &str) -> Result<()> {
    let mut path = project.to_path_buf();
    let parts: Vec<&str> = relative.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        path.push(part);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_dir() => {}
            Ok(_) => return Err(Error::UnsafePath(relative.to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("inspect", &path, e)),
        }
    }
    Ok(())
}

/// Creates the missing ancestors of `relative` as real directories.
fn make_parents(project: &Path, relative: &str) -> Result<()> {
    let mut path = project.to_path_buf();
    let parts: Vec<&str> = relative.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        path.push(part);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_dir() => {}
            Ok(_) => return Err(Error::UnsafePath(relative.to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir(&path).map_err(|e| Error::io("create", &path, e))?;
            }
            Err(e) => return Err(Error::io("inspect", &path, e)),
        }
    }
    Ok(())
}

/// Whether a symlink at `relative` pointing at `target` stays inside the project.
pub(crate) fn link_stays_inside(relative: &str, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = relative.split('/').count() as i64 - 1;
    for component in target.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::ParentDir => depth -= 1,
            Component::CurDir => {}
            _ => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// Writes the new tree's file `relative` over the project's, atomically, with its mode's
/// permission bits only (no setuid, setgid or sticky).
fn replace_file(project: &Path, new_root: &Path, relative: &str, mode: u32) -> Result<()> {
    let source = new_root.join(relative);
    let meta = fs::symlink_metadata(&source).map_err(|e| Error::io("inspect", &source, e))?;
    if !meta.file_type().is_file() {
        return Err(Error::UnsafePath(relative.to_owned()));
    }
    let target = project.join(relative);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = target.with_file_name(format!(".{name}.changeset-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut from = fs::File::open(&source)?;
        let mut to = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        std::io::copy(&mut from, &mut to)?;
        to.set_permissions(fs::Permissions::from_mode(mode & 0o777))?;
        to.flush()?;
        to.sync_all()?;
        fs::rename(&temp, &target)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&temp);
        Error::io("write", &target, e)
    })
}

impl ChangeSet {
    /// Applies every change to `project` (the baseline's root): each only when the project's
    /// node is still the baseline's; the others are reported as conflicts and left alone.
    pub fn apply(&self, project: &Path) -> Result<ApplyReport> {
        let mut report = ApplyReport::default();
        // Deletions of directories go last, deepest first, once their files are gone.
        let mut dirs_to_remove = Vec::new();
        for change in self.changes() {
            let path = change.path().to_owned();
            let paths: Vec<&str> = match change {
                Change::Renamed { from, to, .. } => vec![from, to],
                _ => vec![&path],
            };
            if let Some(bad) = paths.iter().find(|p| check_relative(p).is_err()) {
                report
                    .refused
                    .push(((*bad).to_owned(), "not a plain relative path".into()));
                continue;
            }
            if let Some(bad) = paths
                .iter()
                .find(|p| ancestors_are_dirs(project, p).is_err())
            {
                report.refused.push((
                    (*bad).to_owned(),
                    "a directory on its way is a symlink or a file in the project".into(),
                ));
                continue;
            }
            let conflict = |path: &str, expected: Option<&Node>| -> Result<Option<Conflict>> {
                let now = current(project, path)?;
                let same = match (expected, &now) {
                    (None, None) => true,
                    (Some(a), Some(b)) => a.same_content(b),
                    _ => false,
                };
                Ok((!same).then(|| Conflict {
                    path: path.to_owned(),
                    reason: match now {
                        None => "it is gone from the project".into(),
                        Some(node) if expected.is_none() => {
                            format!("the project has a {} there now", node.kind())
                        }
                        Some(_) => "the project's copy changed since the agent got it".into(),
                    },
                }))
            };
            match change {
                Change::Added { path, node } => {
                    if let Some(c) = conflict(path, None)? {
                        report.conflicts.push(c);
                        continue;
                    }
                    make_parents(project, path)?;
                    match node {
                        Node::Dir { mode } => {
                            let target = project.join(path);
                            fs::create_dir(&target).map_err(|e| Error::io("create", &target, e))?;
                            fs::set_permissions(&target, fs::Permissions::from_mode(mode & 0o777))
                                .map_err(|e| Error::io("chmod", &target, e))?;
                        }
                        Node::File { mode, .. } => {
                            replace_file(project, self.new_root(), path, *mode)?;
                        }
                        Node::Symlink { target } => {
                            if !link_stays_inside(path, target) {
                                report.refused.push((
                                    path.clone(),
                                    format!(
                                        "a symlink to {} leads out of the project",
                                        target.display()
                                    ),
                                ));
                                continue;
                            }
                            let link = project.join(path);
                            std::os::unix::fs::symlink(target, &link)
                                .map_err(|e| Error::io("create", &link, e))?;
                        }
                    }
                    report.applied.push(path.clone());
                }
                Change::Modified { path, old, new } => {
                    if let Some(c) = conflict(path, Some(old))? {
                        report.conflicts.push(c);
                        continue;
                    }
                    match new {
                        Node::File { mode, .. } => {
                            if matches!(old, Node::Dir { .. }) {
                                let dir = project.join(path);
                                fs::remove_dir_all(&dir)
                                    .map_err(|e| Error::io("remove", &dir, e))?;
                            }
                            replace_file(project, self.new_root(), path, *mode)?;
                        }
                        Node::Symlink { target } => {
                            if !link_stays_inside(path, target) {
                                report.refused.push((
                                    path.clone(),
                                    format!(
                                        "a symlink to {} leads out of the project",
                                        target.display()
                                    ),
                                ));
                                continue;
                            }
                            let link = project.join(path);
                            let temp = link.with_file_name(format!(
                                ".{}.changeset-link",
                                link.file_name()
                                    .map(|n| n.to_string_lossy())
                                    .unwrap_or_default()
                            ));
                            let _ = fs::remove_file(&temp);
                            std::os::unix::fs::symlink(target, &temp)
                                .and_then(|()| fs::rename(&temp, &link))
                                .map_err(|e| Error::io("replace", &link, e))?;
                        }
                        Node::Dir { mode } => {
                            let target = project.join(path);
                            fs::remove_file(&target)
                                .map_err(|e| Error::io("remove", &target, e))?;
                            fs::create_dir(&target).map_err(|e| Error::io("create", &target, e))?;
                            fs::set_permissions(&target, fs::Permissions::from_mode(mode & 0o777))
                                .map_err(|e| Error::io("chmod", &target, e))?;
                        }
                    }
                    report.applied.push(path.clone());
                }
                Change::Deleted { path, node } => {
                    if let Some(c) = conflict(path, Some(node))? {
                        report.conflicts.push(c);
                        continue;
                    }
                    let target = project.join(path);
                    if matches!(node, Node::Dir { .. }) {
                        dirs_to_remove.push(path.clone());
                        continue;
                    }
                    fs::remove_file(&target).map_err(|e| Error::io("remove", &target, e))?;
                    report.applied.push(path.clone());
                }
                Change::Renamed { from, to, old, new } => {
                    if let Some(c) = conflict(from, Some(old))? {
                        report.conflicts.push(c);
                        continue;
                    }
                    if let Some(c) = conflict(to, None)? {
                        report.conflicts.push(c);
                        continue;
                    }
                    make_parents(project, to)?;
                    let mode = new.mode().unwrap_or(0o644);
                    replace_file(project, self.new_root(), to, mode)?;
                    let gone = project.join(from);
                    fs::remove_file(&gone).map_err(|e| Error::io("remove", &gone, e))?;
                    report.applied.push(format!("{from} -> {to}"));
                }
                Change::ModeChanged { path, old, new } => {
                    let now = current(project, path)?;
                    if now.as_ref().and_then(Node::mode) != Some(*old) {
                        report.conflicts.push(Conflict {
                            path: path.clone(),
                            reason: "the project's copy changed since the agent got it".into(),
                        });
                        continue;
                    }
                    let target = project.join(path);
                    fs::set_permissions(&target, fs::Permissions::from_mode(new & 0o777))
                        .map_err(|e| Error::io("chmod", &target, e))?;
                    report.applied.push(path.clone());
                }
            }
        }
        dirs_to_remove.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
        for path in dirs_to_remove {
            let target = project.join(&path);
            match fs::remove_dir(&target) {
                Ok(()) => report.applied.push(path),
                Err(_) => report.conflicts.push(Conflict {
                    path,
                    reason: "the directory is not empty in the project".into(),
                }),
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_that_leave_the_project_are_recognised() {
        assert!(link_stays_inside("a/link", Path::new("../b")));
        assert!(link_stays_inside("link", Path::new("b/c")));
        assert!(!link_stays_inside("link", Path::new("../outside")));
        assert!(!link_stays_inside("a/link", Path::new("../../outside")));
        assert!(!link_stays_inside("a/link", Path::new("/etc/passwd")));
        assert!(!link_stays_inside("a/link", Path::new("b/../../../x")));
    }

    #[test]
    fn only_plain_relative_paths_pass() {
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "./a", "a\0b"] {
            assert!(check_relative(bad).is_err(), "{bad:?}");
        }
        check_relative("a/b.txt").unwrap();
    }
}
