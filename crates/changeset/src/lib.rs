//! What an agent changed in a copy of a project, and bringing it back safely.
//!
//! A project is copied into the sandbox ([`copy_in`]), with a [`Snapshot`] of it taken as the
//! baseline. When the agent is done, the sandbox's tree is snapshotted too; [`ChangeSet`]
//! lists what differs (added, modified, deleted, renamed, mode changes), renders it as a
//! unified diff (git's format, binaries summarized), and applies it to the project:
//!
//! - per file, only when the project's file is still what it was at copy-in (else a conflict
//!   is reported and the file is left alone);
//! - each file replaced atomically (written beside it, then renamed), so a crash leaves every
//!   file either old or new;
//! - never outside the project: paths are plain and relative, no ancestor may be a symlink,
//!   symlinks are created only when they stay inside, device files and FIFOs are never
//!   created, setuid/setgid/sticky bits are dropped.
#![deny(missing_docs)]

mod apply;
mod copy;
mod diff;
mod snapshot;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use apply::{ApplyReport, Conflict};
pub use copy::{CopyReport, copy_in};
pub use snapshot::{Node, Options, Skipped, Snapshot};

/// Errors of scanning, diffing and applying.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A filesystem operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The tree's root is not a directory.
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// A path that is not plain and relative.
    #[error("`{0}` is not a plain relative path inside the project")]
    UnsafePath(String),
}

impl Error {
    pub(crate) fn io(what: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            what,
            path: path.to_owned(),
            source,
        }
    }
}

/// This crate's result.
pub type Result<T> = std::result::Result<T, Error>;

/// One difference between the baseline and the new tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A node that is new.
    Added {
        /// Its path.
        path: String,
        /// What it is.
        node: Node,
    },
    /// A node that is gone.
    Deleted {
        /// Its path.
        path: String,
        /// What it was.
        node: Node,
    },
    /// A node whose content (or kind) changed; its mode may have changed too.
    Modified {
        /// Its path.
        path: String,
        /// What it was.
        old: Node,
        /// What it is.
        new: Node,
    },
    /// A file moved: gone from `from`, the same content new at `to`.
    Renamed {
        /// Where it was.
        from: String,
        /// Where it is.
        to: String,
        /// What it was.
        old: Node,
        /// What it is (its mode may differ).
        new: Node,
    },
    /// Only the permission bits changed.
    ModeChanged {
        /// Its path.
        path: String,
        /// The old bits.
        old: u32,
        /// The new bits.
        new: u32,
    },
}

impl Change {
    /// The path it changes (the new one for a rename).
    pub fn path(&self) -> &str {
        match self {
            Change::Added { path, .. }
            | Change::Deleted { path, .. }
            | Change::Modified { path, .. }
            | Change::ModeChanged { path, .. } => path,
            Change::Renamed { to, .. } => to,
        }
    }

    /// One line: `A path`, `M path`, `D path`, `R from -> to`, `T path 644 -> 755`.
    pub fn summary(&self) -> String {
        match self {
            Change::Added { path, node } => format!("A {path}{}", suffix(node)),
            Change::Deleted { path, node } => format!("D {path}{}", suffix(node)),
            Change::Modified { path, new, .. } => format!("M {path}{}", suffix(new)),
            Change::Renamed { from, to, .. } => format!("R {from} -> {to}"),
            Change::ModeChanged { path, old, new } => {
                format!("T {path} {old:o} -> {new:o}")
            }
        }
    }
}

fn suffix(node: &Node) -> &'static str {
    match node {
        Node::Dir { .. } => "/",
        Node::Symlink { .. } => " (symlink)",
        Node::File { .. } => "",
    }
}

/// What differs between a baseline snapshot and a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeSet {
    base_root: PathBuf,
    new_root: PathBuf,
    changes: Vec<Change>,
    /// Entries of the new tree that are never applied, and why.
    pub refused: BTreeMap<String, Skipped>,
}

impl ChangeSet {
    /// The changes from `base` to `new`. A deleted file and an added one with the same
    /// content are a rename.
    pub fn between(base: &Snapshot, new: &Snapshot) -> Self {
        let mut added = Vec::new();
        let mut deleted = Vec::new();
        let mut changes = Vec::new();
        for (path, old) in &base.nodes {
            match new.nodes.get(path) {
                None => deleted.push((path.clone(), old.clone())),
                Some(now) if !old.same_content(now) => changes.push(Change::Modified {
                    path: path.clone(),
                    old: old.clone(),
                    new: now.clone(),
                }),
                Some(now) => {
                    if let (Some(a), Some(b)) = (old.mode(), now.mode())
                        && a != b
                    {
                        changes.push(Change::ModeChanged {
                            path: path.clone(),
                            old: a,
                            new: b,
                        });
                    }
                }
            }
        }
        for (path, node) in &new.nodes {
            if !base.nodes.contains_key(path) {
                added.push((path.clone(), node.clone()));
            }
        }
        // Renames: a deleted file whose content reappears as an added file.
        let mut renamed_to = std::collections::BTreeSet::new();
        let mut still_deleted = Vec::new();
        for (from, old) in deleted {
            let target = matches!(old, Node::File { .. })
                .then(|| {
                    added
                        .iter()
                        .find(|(to, node)| !renamed_to.contains(to) && old.same_content(node))
                })
                .flatten();
            match target {
                Some((to, new)) => {
                    renamed_to.insert(to.clone());
                    changes.push(Change::Renamed {
                        from,
                        to: to.clone(),
                        old,
                        new: new.clone(),
                    });
                }
                None => still_deleted.push((from, old)),
            }
        }
        for (path, node) in added {
            if !renamed_to.contains(&path) {
                changes.push(Change::Added { path, node });
            }
        }
        for (path, node) in still_deleted {
            changes.push(Change::Deleted { path, node });
        }
        changes.sort_by(|a, b| a.path().cmp(b.path()));
        Self {
            base_root: base.root.clone(),
            new_root: new.root.clone(),
            changes,
            refused: new.skipped.clone(),
        }
    }

    /// The changes, by path.
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// One line per change, then one per refused entry.
    pub fn summary(&self) -> String {
        let mut out: Vec<String> = self.changes.iter().map(Change::summary).collect();
        for (path, why) in &self.refused {
            let why = match why {
                Skipped::Special => "a device file, FIFO or socket: never applied".to_owned(),
                Skipped::TooLarge(n) => format!("{n} bytes, over the size cap: not applied"),
                Skipped::Excluded => continue,
                Skipped::NotUtf8 => "a name that is not UTF-8: not applied".to_owned(),
                Skipped::SymlinkOut => "a symlink out of the project: not applied".to_owned(),
            };
            out.push(format!("! {path}: {why}"));
        }
        out.join("\n")
    }

    /// The baseline's root (the copy taken at copy-in).
    pub fn base_root(&self) -> &Path {
        &self.base_root
    }

    /// The new tree's root.
    pub fn new_root(&self) -> &Path {
        &self.new_root
    }
}

/// Checks that `relative` is plain: not empty, not absolute, no `.`/`..`, no NUL.
pub(crate) fn check_relative(relative: &str) -> Result<()> {
    let plain = !relative.is_empty()
        && !relative.starts_with('/')
        && !relative.contains('\0')
        && relative
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if plain {
        Ok(())
    } else {
        Err(Error::UnsafePath(relative.to_owned()))
    }
}
