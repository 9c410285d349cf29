//! The change set as a unified diff in git's format (`git apply` and `patch -p1` read it):
//! text with three lines of context, binaries summarized, symlinks as their targets, modes
//! and renames in git's extended headers. Directories have no lines of their own.

use std::fmt::Write as _;
use std::path::Path;

use crate::{Change, ChangeSet, Node, Result};

/// A file's content for the diff, or `None` when it is binary.
fn text_of(root: &Path, relative: &str, node: &Node) -> Result<Option<String>> {
    match node {
        Node::Symlink { target } => Ok(Some(target.to_string_lossy().into_owned())),
        Node::Dir { .. } => Ok(Some(String::new())),
        Node::File { .. } => {
            let path = root.join(relative);
            let bytes = std::fs::read(&path).map_err(|e| crate::Error::io("read", &path, e))?;
            let head = &bytes[..bytes.len().min(8000)];
            if head.contains(&0) {
                return Ok(None);
            }
            Ok(String::from_utf8(bytes).ok())
        }
    }
}

/// Git's mode word for a node.
fn git_mode(node: &Node) -> String {
    match node {
        Node::Symlink { .. } => "120000".into(),
        Node::Dir { .. } => "040000".into(),
        Node::File { mode, .. } => {
            if mode & 0o111 != 0 {
                "100755".into()
            } else {
                "100644".into()
            }
        }
    }
}

fn hunks(out: &mut String, old: &str, new: &str, a: &str, b: &str) {
    let diff = similar::TextDiff::from_lines(old, new);
    let unified = diff
        .unified_diff()
        .context_radius(3)
        .header(a, b)
        .to_string();
    out.push_str(&unified);
    if !unified.is_empty() && !unified.ends_with('\n') {
        out.push('\n');
    }
}

impl ChangeSet {
    /// The unified diff of every change. Old content comes from the baseline's root (the
    /// project), new content from the new tree.
    pub fn diff(&self) -> Result<String> {
        let mut out = String::new();
        for change in self.changes() {
            match change {
                Change::Added { path, node } => {
                    if matches!(node, Node::Dir { .. }) {
                        continue;
                    }
                    let _ = writeln!(out, "diff --git a/{path} b/{path}");
                    let _ = writeln!(out, "new file mode {}", git_mode(node));
                    match text_of(self.new_root(), path, node)? {
                        Some(text) => hunks(&mut out, "", &text, "/dev/null", &format!("b/{path}")),
                        None => {
                            let _ = writeln!(out, "Binary files /dev/null and b/{path} differ");
                        }
                    }
                }
                Change::Deleted { path, node } => {
                    if matches!(node, Node::Dir { .. }) {
                        continue;
                    }
                    let _ = writeln!(out, "diff --git a/{path} b/{path}");
                    let _ = writeln!(out, "deleted file mode {}", git_mode(node));
                    match text_of(self.base_root(), path, node)? {
                        Some(text) => hunks(&mut out, &text, "", &format!("a/{path}"), "/dev/null"),
                        None => {
                            let _ = writeln!(out, "Binary files a/{path} and /dev/null differ");
                        }
                    }
                }
                Change::Modified { path, old, new } => {
                    let _ = writeln!(out, "diff --git a/{path} b/{path}");
                    if git_mode(old) != git_mode(new) {
                        let _ = writeln!(out, "old mode {}", git_mode(old));
                        let _ = writeln!(out, "new mode {}", git_mode(new));
                    }
                    let before = text_of(self.base_root(), path, old)?;
                    let after = text_of(self.new_root(), path, new)?;
                    match (before, after) {
                        (Some(a), Some(b)) => {
                            hunks(&mut out, &a, &b, &format!("a/{path}"), &format!("b/{path}"));
                        }
                        _ => {
                            let _ = writeln!(out, "Binary files a/{path} and b/{path} differ");
                        }
                    }
                }
                Change::Renamed { from, to, old, new } => {
                    let _ = writeln!(out, "diff --git a/{from} b/{to}");
                    if git_mode(old) != git_mode(new) {
                        let _ = writeln!(out, "old mode {}", git_mode(old));
                        let _ = writeln!(out, "new mode {}", git_mode(new));
                    }
                    let _ = writeln!(out, "similarity index 100%");
                    let _ = writeln!(out, "rename from {from}");
                    let _ = writeln!(out, "rename to {to}");
                }
                Change::ModeChanged { path, old, new } => {
                    let as_node = |mode: u32| Node::File {
                        size: 0,
                        mode,
                        digest: [0; 32],
                    };
                    let (a, b) = (git_mode(&as_node(*old)), git_mode(&as_node(*new)));
                    if a != b {
                        let _ = writeln!(out, "diff --git a/{path} b/{path}");
                        let _ = writeln!(out, "old mode {a}");
                        let _ = writeln!(out, "new mode {b}");
                    }
                }
            }
        }
        Ok(out)
    }
}
