//! Applying a change set to the project: per path, only when the project still holds what the
//! baseline recorded; each file written beside its place and renamed over it; nothing ever
//! written outside the project.

use std::collections::{BTreeMap, BTreeSet, HashSet};
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
pub(crate) fn current(project: &Path, relative: &str) -> Result<Option<Node>> {
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

/// Whether a symlink at `relative` pointing at `target` resolves inside the project, whatever
/// the other links in it are. Checking the target's text alone is not enough: with `d -> .`,
/// `a -> d/..` is the project's parent. So the rule: a relative target that climbs (`..`)
/// only before its first name, no higher than the link's own directory is deep, and after
/// that only descends. It holds for every link by induction: the link's ancestors are real
/// directories (a path through a symlink is never written), so the climb ends at a real
/// directory of the project, and each name after it is an entry there: a directory, a file,
/// or a link that by the same rule resolves inside.
pub(crate) fn link_stays_inside(relative: &str, target: &Path) -> bool {
    let mut climb = relative.split('/').count() - 1;
    let mut descended = false;
    for component in target.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir if !descended && climb > 0 => climb -= 1,
            Component::Normal(_) => descended = true,
            _ => return false,
        }
    }
    true
}

/// What names a temporary file apply writes beside a target: `.NAME.changeset-PID`.
const TEMP_MARK: &str = ".changeset-";

/// The process id in `name` when it is a temporary file's name of apply's
/// (`.NAME.changeset-PID`, the PID in decimal digits only).
fn temp_pid(name: &str) -> Option<u32> {
    let (target, pid) = name.strip_prefix('.')?.rsplit_once(TEMP_MARK)?;
    if target.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Removes the temporary files that applies killed part-way left in `dir`: regular files
/// named `.NAME.changeset-PID` whose process is gone. Best effort (one left behind is only
/// clutter), and nothing at all without `/proc` to tell which processes live. An apply in
/// another PID namespace writing into the same directory at the same moment would look gone:
/// its rename would then fail, never leave a partial file.
fn remove_stale_temps(dir: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(temp_pid) else {
            continue;
        };
        // The entry's own type: a symlink is never followed, nor removed.
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && pid != me && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// The directories the change set removes from the project (deleted, or replaced by a file or
/// a symlink) that it may not: the project's directory no longer holds exactly what the
/// baseline recorded under it (the person added, changed or removed something there, or it
/// holds what copy-in left out), or its replacement is refused. Each is reported once and
/// left alone, with everything under it: removing it would destroy files the agent never saw.
fn blocked_dirs(
    project: &Path,
    changes: &[Change],
    report: &mut ApplyReport,
) -> Result<BTreeSet<String>> {
    // The baseline's nodes the new tree no longer has: all that was under a removed directory.
    let mut gone: BTreeMap<&str, &Node> = BTreeMap::new();
    let mut removed: Vec<(&str, Option<&Node>)> = Vec::new();
    for change in changes {
        match change {
            Change::Deleted { path, node } => {
                gone.insert(path, node);
                if matches!(node, Node::Dir { .. }) {
                    removed.push((path, None));
                }
            }
            Change::Renamed { from, old, .. } => {
                gone.insert(from, old);
            }
            Change::Modified {
                path,
                old: Node::Dir { .. },
                new,
            } if !matches!(new, Node::Dir { .. }) => removed.push((path, Some(new))),
            _ => {}
        }
    }
    removed.sort_unstable_by_key(|(path, _)| *path);
    let mut checked = BTreeSet::new();
    let mut blocked = BTreeSet::new();
    for (dir, replacement) in removed {
        // Unsafe paths are refused by the main pass; a directory under one already checked
        // was covered by that check.
        if check_relative(dir).is_err()
            || ancestors_are_dirs(project, dir).is_err()
            || under_any(&checked, dir).is_some()
        {
            continue;
        }
        checked.insert(dir.to_owned());
        if let Some(Node::Symlink { target }) = replacement
            && !link_stays_inside(dir, target)
        {
            report.refused.push((
                dir.to_owned(),
                format!(
                    "a symlink to {} leads out of the project (the directory is left as it is)",
                    target.display()
                ),
            ));
            blocked.insert(dir.to_owned());
            continue;
        }
        let prefix = format!("{dir}/");
        let expected: BTreeMap<&str, &Node> = gone
            .range(prefix.as_str()..)
            .take_while(|(path, _)| path.starts_with(&prefix))
            .map(|(path, node)| (*path, *node))
            .collect();
        if let Some(reason) = subtree_differs(project, dir, &expected)? {
            report.conflicts.push(Conflict {
                path: dir.to_owned(),
                reason: format!("{reason}; nothing under it was removed"),
            });
            blocked.insert(dir.to_owned());
        }
    }
    Ok(blocked)
}

/// The directory of `dirs` that is `path` or holds it, if any.
fn under_any<'a>(dirs: &'a BTreeSet<String>, path: &str) -> Option<&'a str> {
    let mut end = path.len();
    loop {
        if let Some(dir) = dirs.get(&path[..end]) {
            return Some(dir);
        }
        end = path[..end].rfind('/')?;
    }
}

/// Why the project's directory `dir` does not hold exactly `expected` (the baseline's nodes
/// under it, by path), or `None` when it does: the same entries, files with the same content.
fn subtree_differs(
    project: &Path,
    dir: &str,
    expected: &BTreeMap<&str, &Node>,
) -> Result<Option<String>> {
    match current(project, dir)? {
        Some(Node::Dir { .. }) => {}
        None => return Ok(Some("it is gone from the project".into())),
        Some(node) => {
            return Ok(Some(format!("the project has a {} there now", node.kind())));
        }
    }
    let mut seen = 0;
    let mut pending = vec![dir.to_owned()];
    while let Some(at) = pending.pop() {
        let path = project.join(&at);
        for entry in fs::read_dir(&path).map_err(|e| Error::io("read", &path, e))? {
            let entry = entry.map_err(|e| Error::io("read", &path, e))?;
            let name = entry.file_name();
            let relative = format!("{at}/{}", name.to_string_lossy());
            let base = name.to_str().and(expected.get(relative.as_str()));
            let Some(base) = base else {
                return Ok(Some(format!(
                    "the project has `{relative}`, which the agent's copy never had"
                )));
            };
            match current(project, &relative)? {
                Some(now) if now.same_content(base) => {
                    seen += 1;
                    if matches!(now, Node::Dir { .. }) {
                        pending.push(relative);
                    }
                }
                _ => {
                    return Ok(Some(format!(
                        "the project's `{relative}` changed since copy-in"
                    )));
                }
            }
        }
    }
    if seen != expected.len() {
        let missing = expected
            .keys()
            .find(|p| fs::symlink_metadata(project.join(p)).is_err())
            .map_or_else(|| "part of it".to_owned(), |p| format!("`{p}`"));
        return Ok(Some(format!("{missing} is gone from the project")));
    }
    Ok(None)
}

/// Writes the new tree's file `relative` beside its place in the project (named
/// `.NAME.changeset-PID`), with its mode's permission bits only (no setuid, setgid or
/// sticky), flushed to disk; returns the temporary file's path. Stale temporary files of
/// killed applies in that directory are removed first, once per directory (`swept`).
fn write_beside(
    project: &Path,
    new_root: &Path,
    relative: &str,
    mode: u32,
    swept: &mut HashSet<PathBuf>,
) -> Result<PathBuf> {
    let source = new_root.join(relative);
    let meta = fs::symlink_metadata(&source).map_err(|e| Error::io("inspect", &source, e))?;
    if !meta.file_type().is_file() {
        return Err(Error::UnsafePath(relative.to_owned()));
    }
    let target = project.join(relative);
    if let Some(dir) = target.parent()
        && !swept.contains(dir)
    {
        remove_stale_temps(dir);
        swept.insert(dir.to_owned());
    }
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = target.with_file_name(format!(".{name}{TEMP_MARK}{}", std::process::id()));
    // One of an earlier process that had this one's PID (a crash, then a reboot).
    if fs::symlink_metadata(&temp).is_ok_and(|m| m.file_type().is_file()) {
        fs::remove_file(&temp).map_err(|e| Error::io("remove", &temp, e))?;
    }
    let write = || -> std::io::Result<()> {
        let mut from = fs::File::open(&source)?;
        let mut to = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        std::io::copy(&mut from, &mut to)?;
        to.set_permissions(fs::Permissions::from_mode(mode & 0o777))?;
        to.flush()?;
        to.sync_all()
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&temp);
        Error::io("write", &target, e)
    })?;
    Ok(temp)
}

/// Renames `temp` over `target`; on failure removes `temp`.
fn rename_over(temp: &Path, target: &Path) -> Result<()> {
    fs::rename(temp, target).map_err(|e| {
        let _ = fs::remove_file(temp);
        Error::io("replace", target, e)
    })
}

/// Writes the new tree's file `relative` over the project's, atomically (see
/// [`write_beside`]).
fn replace_file(
    project: &Path,
    new_root: &Path,
    relative: &str,
    mode: u32,
    swept: &mut HashSet<PathBuf>,
) -> Result<()> {
    let temp = write_beside(project, new_root, relative, mode, swept)?;
    rename_over(&temp, &project.join(relative))
}

/// Creates a symlink to `target` beside `link` (named `.NAME.changeset-link`); returns its
/// path.
fn link_beside(link: &Path, target: &Path) -> Result<PathBuf> {
    let name = link
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = link.with_file_name(format!(".{name}.changeset-link"));
    // Left by a crash: only a symlink of that name is ours to remove.
    if fs::symlink_metadata(&temp).is_ok_and(|m| m.file_type().is_symlink()) {
        fs::remove_file(&temp).map_err(|e| Error::io("remove", &temp, e))?;
    }
    std::os::unix::fs::symlink(target, &temp).map_err(|e| Error::io("create", &temp, e))?;
    Ok(temp)
}

fn refuse_link(report: &mut ApplyReport, path: &str, target: &Path) {
    report.refused.push((
        path.to_owned(),
        format!(
            "a symlink to {} leads (or, through other links, could lead) out of the project",
            target.display()
        ),
    ));
}

impl ChangeSet {
    /// Applies every change to `project` (the baseline's root): each only when the project's
    /// node is still the baseline's; the others are reported as conflicts and left alone. A
    /// directory is removed (deleted, or replaced by a file or symlink) only when it holds
    /// exactly what the baseline recorded under it, and never recursively: each entry under
    /// it is deleted by its own change, checked like any other.
    pub fn apply(&self, project: &Path) -> Result<ApplyReport> {
        let mut report = ApplyReport::default();
        let mut swept = HashSet::new();
        let blocked = blocked_dirs(project, self.changes(), &mut report)?;
        // Directories to remove (and what replaces them), once their entries are gone:
        // after everything else, deepest first.
        let mut dirs_to_remove: Vec<(&str, Option<&Node>)> = Vec::new();
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
            // Under a directory left alone: reported with it, except a file moved out of it.
            let from = match change {
                Change::Renamed { from, .. } => from,
                _ => &path,
            };
            if let Some(dir) = under_any(&blocked, from) {
                if let Change::Renamed { from, to, .. } = change {
                    report.conflicts.push(Conflict {
                        path: to.clone(),
                        reason: format!("it moves `{from}` out of `{dir}`, which was left alone"),
                    });
                }
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
                    if let Node::Symlink { target } = node
                        && !link_stays_inside(path, target)
                    {
                        refuse_link(&mut report, path, target);
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
                            replace_file(project, self.new_root(), path, *mode, &mut swept)?;
                        }
                        Node::Symlink { target } => {
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
                    if let Node::Symlink { target } = new
                        && !link_stays_inside(path, target)
                    {
                        refuse_link(&mut report, path, target);
                        continue;
                    }
                    match (old, new) {
                        // Checked by `blocked_dirs`; replaced once emptied by the deletions.
                        (Node::Dir { .. }, Node::File { .. } | Node::Symlink { .. }) => {
                            dirs_to_remove.push((path, Some(new)));
                            continue;
                        }
                        (_, Node::File { mode, .. }) => {
                            replace_file(project, self.new_root(), path, *mode, &mut swept)?;
                        }
                        (_, Node::Symlink { target }) => {
                            let link = project.join(path);
                            let temp = link_beside(&link, target)?;
                            rename_over(&temp, &link)?;
                        }
                        (_, Node::Dir { mode }) => {
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
                    if matches!(node, Node::Dir { .. }) {
                        dirs_to_remove.push((path, None));
                        continue;
                    }
                    let target = project.join(path);
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
                    replace_file(project, self.new_root(), to, mode, &mut swept)?;
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
        dirs_to_remove.sort_by_key(|(p, _)| std::cmp::Reverse(p.matches('/').count()));
        for (path, replacement) in dirs_to_remove {
            let dir = project.join(path);
            // The replacement is made beside first, so the path is missing only for a moment.
            let temp = match replacement {
                Some(Node::File { mode, .. }) => Some(write_beside(
                    project,
                    self.new_root(),
                    path,
                    *mode,
                    &mut swept,
                )?),
                Some(Node::Symlink { target }) => Some(link_beside(&dir, target)?),
                Some(Node::Dir { .. }) | None => None,
            };
            // Never recursive: what is left in it is not the agent's to remove.
            if fs::remove_dir(&dir).is_err() {
                if let Some(temp) = temp {
                    let _ = fs::remove_file(temp);
                }
                report.conflicts.push(Conflict {
                    path: path.to_owned(),
                    reason: "the directory is not empty in the project".into(),
                });
                continue;
            }
            if let Some(temp) = temp {
                rename_over(&temp, &dir)?;
            }
            report.applied.push(path.to_owned());
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
        assert!(link_stays_inside("a/b/link", Path::new("../../c/d")));
        assert!(link_stays_inside("link", Path::new("b/c")));
        assert!(link_stays_inside("link", Path::new("./b/./c/")));
        assert!(link_stays_inside("link", Path::new(".")));
        assert!(!link_stays_inside("link", Path::new("../outside")));
        assert!(!link_stays_inside("link", Path::new("..")));
        assert!(!link_stays_inside("a/link", Path::new("../../outside")));
        assert!(!link_stays_inside("a/link", Path::new("/etc/passwd")));
        assert!(!link_stays_inside("a/link", Path::new("b/../../../x")));
        // Through another link, `d/..` can be the project's parent.
        assert!(!link_stays_inside("a", Path::new("d/..")));
        assert!(!link_stays_inside("x/a", Path::new("../d/../y")));
    }

    #[test]
    fn only_plain_relative_paths_pass() {
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "./a", "a\0b"] {
            assert!(check_relative(bad).is_err(), "{bad:?}");
        }
        check_relative("a/b.txt").unwrap();
    }

    #[test]
    fn only_apply_temporary_names_are_recognised() {
        assert_eq!(temp_pid(".a.txt.changeset-123"), Some(123));
        assert_eq!(temp_pid(".a.changeset-b.changeset-7"), Some(7));
        for other in [
            "a.txt.changeset-123",
            "..changeset-123",
            ".a.changeset-",
            ".a.changeset-12x",
            ".a.changeset-+12",
            ".a.changeset-link",
            ".a.txt",
        ] {
            assert_eq!(temp_pid(other), None, "{other}");
        }
    }
}
