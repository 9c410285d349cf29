//! The change set as a diff, rendered for one of three uses ([`DiffFormat`]): for review (git's
//! format, binaries summarized), as a patch `git apply` reads (binaries as git's binary
//! patches), or as a plain unified diff `patch -p1` reads (text only, the rest named). Text has
//! three lines of context, symlinks are their targets, modes and renames git's extended
//! headers; directories have no lines of their own.
//!
//! The old side is read from the project (copy-in's content is not kept), and only once the
//! project's node is found still the baseline's, by the test apply makes for conflicts: a file
//! the person changed since copy-in is named instead of diffed, so their edits are never shown
//! as reverted and one such file does not fail the whole diff.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use sha2::Digest as _;

use crate::{Change, ChangeSet, Error, Node, Result};

/// What a diff is rendered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffFormat {
    /// For a person to read: git's format, each binary file summarized in one line.
    Review,
    /// For `git apply`: git's format, binary files as `GIT binary patch` literals (as
    /// `git diff --binary` writes them), so that nothing is lost.
    Git,
    /// For `patch -p1`, which knows no git headers: text changes only; binary files, symlinks,
    /// modes and empty files are named in [`Diff::left_out`] instead.
    Plain,
}

impl DiffFormat {
    /// The format of a patch for `project`: [`Git`](Self::Git) when it is a git repository (a
    /// `.git` directory, or a `.git` file as in a worktree or submodule), else
    /// [`Plain`](Self::Plain), since whoever applies it may have only `patch`.
    pub fn patch_for(project: &Path) -> Self {
        match std::fs::metadata(project.join(".git")) {
            Ok(meta) if meta.is_dir() || meta.is_file() => Self::Git,
            _ => Self::Plain,
        }
    }
}

/// A rendered diff, and what it could not show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// The diff. Stale and left-out paths have a `# ` line each in it (which `git apply` and
    /// `patch` skip), so a patch file names them too.
    pub text: String,
    /// Paths the person changed, replaced or removed in the project since copy-in, where the
    /// agent changed them too: their change is not shown (the old side is gone), and applying
    /// it will report a conflict.
    pub stale: Vec<String>,
    /// Changes this format cannot carry, each with why: for a plain patch binary files,
    /// symlinks, modes and empty files; for any patch empty directories and permission bits
    /// other than the executable one. Empty for [`DiffFormat::Review`].
    pub left_out: Vec<(String, String)>,
}

/// Git's id of a missing blob.
const NULL_ID: &str = "0000000000000000000000000000000000000000";

/// The alphabet of git's base 85.
const BASE85: &[u8; 85] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~";

/// `bytes` as text for a diff: `None` when git would call it binary (a NUL in its first 8000
/// bytes) or it is not UTF-8.
fn as_text(bytes: &[u8]) -> Option<&str> {
    if bytes[..bytes.len().min(8000)].contains(&0) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

/// Git's mode word for a node.
fn git_mode(node: &Node) -> &'static str {
    match node {
        Node::Symlink { .. } => "120000",
        Node::Dir { .. } => "040000",
        Node::File { mode, .. } => exec_mode(*mode),
    }
}

/// Git's mode word for a file's permission bits: git keeps only whether it is executable.
fn exec_mode(mode: u32) -> &'static str {
    if mode & 0o111 != 0 {
        "100755"
    } else {
        "100644"
    }
}

/// Git's blob id of `bytes` (SHA-1 of `blob <size>\0` and them): `git apply` checks a binary
/// patch's pre- and post-image against it.
fn blob_id(bytes: &[u8]) -> String {
    let mut hasher = sha1::Sha1::new();
    hasher.update(format!("blob {}\0", bytes.len()).as_bytes());
    hasher.update(bytes);
    hasher
        .finalize()
        .iter()
        .fold(String::with_capacity(40), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

/// A unified diff of `old` to `new` with headers `a` and `b`, three lines of context.
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

/// A `GIT binary patch` whose forward hunk is `bytes` whole (zlib, then git's base 85 in lines
/// of at most 52 bytes, each led by its length); the reverse hunk is optional to `git apply`
/// and left out.
fn binary_literal(out: &mut String, bytes: &[u8], path: &Path) -> Result<()> {
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let data = zlib
        .write_all(bytes)
        .and_then(|()| zlib.finish())
        .map_err(|e| Error::io("compress", path, e))?;
    let _ = writeln!(out, "GIT binary patch\nliteral {}", bytes.len());
    for line in data.chunks(52) {
        // 1 to 26 bytes are `A` to `Z`, 27 to 52 `a` to `z` (chunks are never empty).
        let len = line.len() as u8;
        out.push(char::from(if len <= 26 {
            b'A' + len - 1
        } else {
            b'a' + len - 27
        }));
        for group in line.chunks(4) {
            let mut word = [0u8; 4];
            word[..group.len()].copy_from_slice(group);
            let mut n = u32::from_be_bytes(word);
            let mut digits = [0u8; 5];
            for digit in digits.iter_mut().rev() {
                *digit = BASE85[(n % 85) as usize];
                n /= 85;
            }
            out.extend(digits.iter().map(|d| char::from(*d)));
        }
        out.push('\n');
    }
    out.push('\n');
    Ok(())
}

/// A rendering under way.
struct Render<'a> {
    set: &'a ChangeSet,
    format: DiffFormat,
    diff: Diff,
    /// A plain patch's deletions, written before the rest: `patch` works file by file, so a
    /// directory's files must be gone before a file takes its place.
    deletions: String,
    /// Paths a file, symlink or rename creates, and removes: an added or removed directory
    /// with none under it is empty, which no patch carries.
    created: BTreeSet<&'a str>,
    removed: BTreeSet<&'a str>,
}

impl<'a> Render<'a> {
    fn new(set: &'a ChangeSet, format: DiffFormat) -> Self {
        let mut created = BTreeSet::new();
        let mut removed = BTreeSet::new();
        for change in set.changes() {
            match change {
                Change::Added { path, node } if !matches!(node, Node::Dir { .. }) => {
                    created.insert(path.as_str());
                }
                Change::Deleted { path, node } if !matches!(node, Node::Dir { .. }) => {
                    removed.insert(path.as_str());
                }
                Change::Modified { path, old, new } => {
                    if !matches!(new, Node::Dir { .. }) {
                        created.insert(path.as_str());
                    }
                    if !matches!(old, Node::Dir { .. }) {
                        removed.insert(path.as_str());
                    }
                }
                Change::Renamed { from, to, .. } => {
                    created.insert(to.as_str());
                    removed.insert(from.as_str());
                }
                _ => {}
            }
        }
        Self {
            set,
            format,
            diff: Diff::default(),
            deletions: String::new(),
            created,
            removed,
        }
    }

    fn finish(mut self) -> Diff {
        self.deletions.push_str(&self.diff.text);
        self.diff.text = self.deletions;
        self.diff
    }

    /// Where a part of the diff goes: a plain patch's deletions first, the rest in path order.
    fn out(&mut self, deletion: bool) -> &mut String {
        if deletion && self.format == DiffFormat::Plain {
            &mut self.deletions
        } else {
            &mut self.diff.text
        }
    }

    fn stale(&mut self, path: &str) {
        let _ = writeln!(
            self.diff.text,
            "# {path}: changed in the project since copy-in, so the agent's change to it \
             cannot be shown; applying it will report a conflict"
        );
        self.diff.stale.push(path.to_owned());
    }

    fn left_out(&mut self, path: &str, why: String) {
        if self.format == DiffFormat::Review {
            return;
        }
        let _ = writeln!(self.diff.text, "# {path}: not in this patch: {why}");
        self.diff.left_out.push((path.to_owned(), why));
    }

    /// The project's content of `path` when it is still the baseline's `old` (the test
    /// [`ChangeSet::apply`] makes), else `None`.
    fn old_side(&self, path: &str, old: &Node) -> Result<Option<Vec<u8>>> {
        let root = self.set.base_root();
        let unchanged = crate::apply::current(root, path)?.is_some_and(|now| now.same_content(old));
        if !unchanged {
            return Ok(None);
        }
        match old {
            Node::File { digest, .. } => {
                let file = root.join(path);
                match std::fs::read(&file) {
                    // Checked again on the bytes read: it may have changed since.
                    Ok(bytes) => {
                        Ok((sha2::Sha256::digest(&bytes)[..] == digest[..]).then_some(bytes))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(Error::io("read", &file, e)),
                }
            }
            Node::Symlink { target } => Ok(Some(target.as_os_str().as_bytes().to_vec())),
            Node::Dir { .. } => Ok(Some(Vec::new())),
        }
    }

    /// The new tree's content of `path`.
    fn new_side(&self, path: &str, node: &Node) -> Result<Vec<u8>> {
        match node {
            Node::File { .. } => {
                let file = self.set.new_root().join(path);
                std::fs::read(&file).map_err(|e| Error::io("read", &file, e))
            }
            Node::Symlink { target } => Ok(target.as_os_str().as_bytes().to_vec()),
            Node::Dir { .. } => Ok(Vec::new()),
        }
    }

    /// What a plain patch cannot carry of `node` with content `bytes`, if anything.
    fn plain_cannot(node: &Node, bytes: &[u8]) -> Option<&'static str> {
        match node {
            Node::Symlink { .. } => Some("a symlink, which a plain patch cannot carry"),
            _ if as_text(bytes).is_none() => {
                Some("a binary file, which a plain patch cannot carry")
            }
            _ if bytes.is_empty() => Some("an empty file, which a plain patch cannot carry"),
            _ => None,
        }
    }

    /// The content lines of a git diff from `old` to `new`: text hunks, or for binary content
    /// a summary (review) or the new content whole (git).
    fn content(&mut self, path: &str, names: (&str, &str), old: &[u8], new: &[u8]) -> Result<()> {
        let (a, b) = names;
        let review = self.format == DiffFormat::Review;
        let out = &mut self.diff.text;
        match (as_text(old), as_text(new)) {
            (Some(before), Some(after)) => hunks(out, before, after, a, b),
            _ if review => {
                let _ = writeln!(out, "Binary files {a} and {b} differ");
            }
            _ => binary_literal(out, new, &self.set.new_root().join(path))?,
        }
        Ok(())
    }

    /// `index <old>..<new>[ <mode>]`, in a git patch only.
    fn index(&mut self, old: &str, new: &str, mode: Option<&str>) {
        if self.format == DiffFormat::Git {
            let mode = mode.map(|m| format!(" {m}")).unwrap_or_default();
            let _ = writeln!(self.diff.text, "index {old}..{new}{mode}");
        }
    }

    fn create(&mut self, path: &str, node: &Node) -> Result<()> {
        let bytes = self.new_side(path, node)?;
        if self.format == DiffFormat::Plain {
            if let Some(why) = Self::plain_cannot(node, &bytes) {
                self.left_out(path, format!("new: {why}"));
            } else if let Some(text) = as_text(&bytes) {
                hunks(
                    &mut self.diff.text,
                    "",
                    text,
                    "/dev/null",
                    &format!("b/{path}"),
                );
                if node.mode().is_some_and(|m| m & 0o111 != 0) {
                    self.left_out(
                        path,
                        "its executable bit, which a plain patch cannot set".into(),
                    );
                }
            }
            return Ok(());
        }
        let _ = writeln!(self.diff.text, "diff --git a/{path} b/{path}");
        let _ = writeln!(self.diff.text, "new file mode {}", git_mode(node));
        self.index(NULL_ID, &blob_id(&bytes), None);
        self.content(path, ("/dev/null", &format!("b/{path}")), &[], &bytes)
    }

    fn delete(&mut self, path: &str, node: &Node, bytes: &[u8]) -> Result<()> {
        if self.format == DiffFormat::Plain {
            if let Some(why) = Self::plain_cannot(node, bytes) {
                self.left_out(path, format!("deleted: {why}"));
            } else if let Some(text) = as_text(bytes) {
                hunks(self.out(true), text, "", &format!("a/{path}"), "/dev/null");
            }
            return Ok(());
        }
        let _ = writeln!(self.diff.text, "diff --git a/{path} b/{path}");
        let _ = writeln!(self.diff.text, "deleted file mode {}", git_mode(node));
        self.index(&blob_id(bytes), NULL_ID, None);
        self.content(path, (&format!("a/{path}"), "/dev/null"), bytes, &[])
    }

    /// A change of content (and maybe mode) of a file, or of a symlink's target.
    fn modify(&mut self, path: &str, old: &Node, new: &Node, before: &[u8]) -> Result<()> {
        let after = self.new_side(path, new)?;
        let (old_mode, new_mode) = (git_mode(old), git_mode(new));
        if self.format == DiffFormat::Plain {
            let cannot = Self::plain_cannot(old, before).or(Self::plain_cannot(new, &after));
            if let Some(why) = cannot {
                self.left_out(path, format!("changed: {why}"));
                return Ok(());
            }
            if let (Some(a), Some(b)) = (as_text(before), as_text(&after)) {
                hunks(
                    &mut self.diff.text,
                    a,
                    b,
                    &format!("a/{path}"),
                    &format!("b/{path}"),
                );
            }
            if old_mode != new_mode {
                self.left_out(
                    path,
                    format!("mode {old_mode} -> {new_mode}, which a plain patch cannot carry"),
                );
            }
            return Ok(());
        }
        let _ = writeln!(self.diff.text, "diff --git a/{path} b/{path}");
        let same_mode = if old_mode == new_mode {
            Some(new_mode)
        } else {
            let _ = writeln!(self.diff.text, "old mode {old_mode}\nnew mode {new_mode}");
            None
        };
        self.index(&blob_id(before), &blob_id(&after), same_mode);
        let (a, b) = (format!("a/{path}"), format!("b/{path}"));
        self.content(path, (&a, &b), before, &after)
    }

    fn rename(&mut self, from: &str, to: &str, old: &Node, new: &Node) -> Result<()> {
        if self.format == DiffFormat::Plain {
            // The same content: deleted at `from`, created at `to`.
            let bytes = self.new_side(to, new)?;
            if let Some(why) = Self::plain_cannot(new, &bytes) {
                self.left_out(to, format!("renamed from {from}: {why}"));
                return Ok(());
            }
            self.delete(from, old, &bytes)?;
            return self.create(to, new);
        }
        let _ = writeln!(self.diff.text, "diff --git a/{from} b/{to}");
        if git_mode(old) != git_mode(new) {
            let _ = writeln!(
                self.diff.text,
                "old mode {}\nnew mode {}",
                git_mode(old),
                git_mode(new)
            );
        }
        let _ = writeln!(
            self.diff.text,
            "similarity index 100%\nrename from {from}\nrename to {to}"
        );
        Ok(())
    }

    /// An added (`made`) or removed directory: nothing to write, unless nothing is created or
    /// removed under it, since no patch carries an empty directory.
    fn dir(&mut self, path: &str, made: bool) {
        let paths = if made { &self.created } else { &self.removed };
        let prefix = format!("{path}/");
        let has_files = paths
            .range(prefix.as_str()..)
            .next()
            .is_some_and(|p| p.starts_with(&prefix));
        if !has_files {
            let what = if made { "new" } else { "removed" };
            self.left_out(
                path,
                format!("a {what} empty directory, which a patch cannot carry"),
            );
        }
    }

    fn mode(&mut self, path: &str, old: u32, new: u32) -> Result<()> {
        let now = crate::apply::current(self.set.base_root(), path)?;
        if now.as_ref().and_then(Node::mode) != Some(old) {
            self.stale(path);
            return Ok(());
        }
        let change = format!("mode {old:o} -> {new:o}");
        if matches!(now, Some(Node::Dir { .. })) {
            self.left_out(
                path,
                format!("a directory's {change}, which a patch cannot carry"),
            );
        } else if exec_mode(old) == exec_mode(new) {
            self.left_out(
                path,
                format!("{change}: a patch carries only whether a file is executable"),
            );
        } else if self.format == DiffFormat::Plain {
            self.left_out(path, format!("{change}, which a plain patch cannot carry"));
        } else {
            let _ = writeln!(
                self.diff.text,
                "diff --git a/{path} b/{path}\nold mode {}\nnew mode {}",
                exec_mode(old),
                exec_mode(new)
            );
        }
        Ok(())
    }

    fn change(&mut self, change: &Change) -> Result<()> {
        match change {
            Change::Added { path, node } => match node {
                Node::Dir { .. } => self.dir(path, true),
                _ => self.create(path, node)?,
            },
            Change::Deleted { path, node } => {
                if matches!(node, Node::Dir { .. }) {
                    self.dir(path, false);
                } else {
                    match self.old_side(path, node)? {
                        Some(before) => self.delete(path, node, &before)?,
                        None => self.stale(path),
                    }
                }
            }
            Change::Modified { path, old, new } => {
                let Some(before) = self.old_side(path, old)? else {
                    self.stale(path);
                    return Ok(());
                };
                let same_kind = matches!(
                    (old, new),
                    (Node::File { .. }, Node::File { .. })
                        | (Node::Symlink { .. }, Node::Symlink { .. })
                );
                if same_kind {
                    self.modify(path, old, new, &before)?;
                } else {
                    // A change of kind is a deletion and a creation, as in git.
                    match old {
                        Node::Dir { .. } => self.dir(path, false),
                        _ => self.delete(path, old, &before)?,
                    }
                    match new {
                        Node::Dir { .. } => self.dir(path, true),
                        // `patch` leaves the emptied directory in the way.
                        _ if matches!(old, Node::Dir { .. })
                            && self.format == DiffFormat::Plain =>
                        {
                            self.left_out(
                                path,
                                format!(
                                    "a {} in place of a directory, which a plain patch cannot \
                                     make",
                                    new.kind()
                                ),
                            );
                        }
                        _ => self.create(path, new)?,
                    }
                }
            }
            Change::Renamed { from, to, old, new } => {
                let unchanged = crate::apply::current(self.set.base_root(), from)?
                    .is_some_and(|now| now.same_content(old));
                if unchanged {
                    self.rename(from, to, old, new)?;
                } else {
                    self.stale(from);
                }
            }
            Change::ModeChanged { path, old, new } => self.mode(path, *old, *new)?,
        }
        Ok(())
    }
}

impl ChangeSet {
    /// The change set rendered as `format`. Old content comes from the baseline's root (the
    /// project), only where it is still what copy-in saw ([`Diff::stale`] names the rest);
    /// new content from the new tree.
    pub fn render(&self, format: DiffFormat) -> Result<Diff> {
        let mut render = Render::new(self, format);
        for change in self.changes() {
            render.change(change)?;
        }
        Ok(render.finish())
    }

    /// The diff for review ([`DiffFormat::Review`]), as text alone.
    pub fn diff(&self) -> Result<String> {
        Ok(self.render(DiffFormat::Review)?.text)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code

    use super::*;

    /// The bytes a `GIT binary patch` literal holds, decoded as `git apply` does.
    fn decode(literal: &str) -> Vec<u8> {
        let mut lines = literal.lines();
        assert_eq!(lines.next(), Some("GIT binary patch"));
        let size: usize = lines.next().unwrap()["literal ".len()..].parse().unwrap();
        let mut data = Vec::new();
        for line in lines.take_while(|l| !l.is_empty()) {
            let (len, digits) = line.split_at(1);
            let len = match len.as_bytes()[0] {
                c @ b'A'..=b'Z' => c - b'A' + 1,
                c => c - b'a' + 27,
            } as usize;
            assert_eq!(digits.len(), len.div_ceil(4) * 5, "{line}");
            let mut bytes = Vec::new();
            for group in digits.as_bytes().chunks(5) {
                let n = group.iter().fold(0u64, |n, d| {
                    n * 85 + BASE85.iter().position(|c| c == d).unwrap() as u64
                });
                bytes.extend_from_slice(&u32::try_from(n).unwrap().to_be_bytes());
            }
            data.extend_from_slice(&bytes[..len]);
        }
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(&data[..]), &mut out)
            .unwrap();
        assert_eq!(out.len(), size);
        out
    }

    #[test]
    fn binary_literals_decode_to_their_bytes() {
        for len in [0, 1, 3, 4, 51, 52, 53, 5000] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7919 % 251) as u8).collect();
            let mut out = String::new();
            binary_literal(&mut out, &bytes, Path::new("x")).unwrap();
            assert!(out.ends_with("\n\n"), "{out}");
            assert_eq!(decode(&out), bytes, "{len}");
        }
    }

    #[test]
    fn blob_ids_are_gits() {
        assert_eq!(blob_id(b""), "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");
        assert_eq!(
            blob_id(b"hello\n"),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }
}
