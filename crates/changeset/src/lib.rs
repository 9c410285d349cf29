//! What an agent changed in a copy of a project, and bringing it back safely.
//!
//! A project is copied into the sandbox ([`copy_project`]), with a [`Snapshot`] of it taken as
//! the baseline, and one of the copy as written. When the agent is done, the sandbox's tree is
//! rescanned against the latter ([`Snapshot::rescan`]: like `git status`, only files whose
//! stat data changed are read); [`ChangeSet`] lists what differs (added, modified, deleted,
//! renamed, mode changes), renders it as a diff ([`DiffFormat`]: for review, or as a patch for
//! `git apply` with binary files or for `patch -p1`), and applies it to the project:
//!
//! - per file, only when the project's file is still what it was at copy-in (else a conflict
//!   is reported and the file is left alone);
//! - a directory removed (deleted, or replaced by a file or symlink) only when it holds
//!   exactly what it held at copy-in, never recursively;
//! - each file replaced atomically (written beside it, then renamed), so a crash leaves every
//!   file either old or new (and a temporary file beside it, removed by the next apply that
//!   writes into that directory);
//! - never outside the project: paths are plain and relative, no ancestor may be a symlink,
//!   symlinks are created only when they stay inside however other links resolve, device
//!   files and FIFOs are never created, setuid/setgid/sticky bits are dropped.
#![deny(missing_docs)]

mod apply;
mod copy;
mod diff;
mod snapshot;
mod walk;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use apply::{ApplyReport, Conflict};
pub use copy::{CopiedProject, CopyReport, copy_in, copy_project};
pub use diff::{Diff, DiffFormat};
pub use snapshot::{Node, Options, ScanStats, Skipped, Snapshot};

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
        // Both maps are sorted by path: one pass over the two, no lookups.
        let mut old_nodes = base.nodes.iter().peekable();
        let mut new_nodes = new.nodes.iter().peekable();
        loop {
            let order = match (old_nodes.peek(), new_nodes.peek()) {
                (Some((a, _)), Some((b, _))) => a.cmp(b),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => break,
            };
            match order {
                std::cmp::Ordering::Less => {
                    if let Some((path, old)) = old_nodes.next() {
                        deleted.push((path.clone(), old.clone()));
                    }
                }
                std::cmp::Ordering::Greater => {
                    if let Some((path, node)) = new_nodes.next() {
                        added.push((path.clone(), node.clone()));
                    }
                }
                std::cmp::Ordering::Equal => {
                    let (Some((path, old)), Some((_, now))) = (old_nodes.next(), new_nodes.next())
                    else {
                        break;
                    };
                    if !old.same_content(now) {
                        changes.push(Change::Modified {
                            path: path.clone(),
                            old: old.clone(),
                            new: now.clone(),
                        });
                    } else if let (Some(a), Some(b)) = (old.mode(), now.mode())
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
        // Renames: a deleted file whose content reappears as an added file (the first such,
        // by path, not already taken).
        let mut by_content: std::collections::HashMap<[u8; 32], std::collections::VecDeque<usize>> =
            std::collections::HashMap::new();
        for (i, (_, node)) in added.iter().enumerate() {
            if let Node::File { digest, .. } = node {
                by_content.entry(*digest).or_default().push_back(i);
            }
        }
        let mut renamed_to = vec![false; added.len()];
        let mut still_deleted = Vec::new();
        for (from, old) in deleted {
            let target = match &old {
                Node::File { digest, .. } => by_content.get_mut(digest).and_then(|q| q.pop_front()),
                _ => None,
            };
            match target.and_then(|i| Some((i, added.get(i)?))) {
                Some((i, (to, new))) => {
                    renamed_to[i] = true;
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
        for ((path, node), renamed) in added.into_iter().zip(renamed_to) {
            if !renamed {
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
