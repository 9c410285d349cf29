//! A snapshot of a tree: every file (size, mode, SHA-256), directory and symlink by relative
//! path, never following a symlink. Device files, FIFOs and sockets are recorded as skipped,
//! as are files over the size cap: they are never copied or applied.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// One node of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A regular file.
    File {
        /// Its size.
        size: u64,
        /// Its permission bits (`0o777`: setuid, setgid and sticky never count).
        mode: u32,
        /// SHA-256 of its content.
        digest: [u8; 32],
    },
    /// A directory.
    Dir {
        /// Its permission bits.
        mode: u32,
    },
    /// A symbolic link (never followed).
    Symlink {
        /// What it points to, as written.
        target: PathBuf,
    },
}

impl Node {
    /// `file`, `dir` or `symlink`.
    pub fn kind(&self) -> &'static str {
        match self {
            Node::File { .. } => "file",
            Node::Dir { .. } => "dir",
            Node::Symlink { .. } => "symlink",
        }
    }

    /// The same content and kind (modes aside).
    pub fn same_content(&self, other: &Node) -> bool {
        match (self, other) {
            (Node::File { digest: a, .. }, Node::File { digest: b, .. }) => a == b,
            (Node::Dir { .. }, Node::Dir { .. }) => true,
            (Node::Symlink { target: a }, Node::Symlink { target: b }) => a == b,
            _ => false,
        }
    }

    /// Its permission bits, when it has any.
    pub fn mode(&self) -> Option<u32> {
        match self {
            Node::File { mode, .. } | Node::Dir { mode } => Some(*mode),
            Node::Symlink { .. } => None,
        }
    }
}

/// Why an entry is not in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    /// A device file, FIFO or socket.
    Special,
    /// A file over the size cap.
    TooLarge(u64),
    /// Matched an exclude.
    Excluded,
    /// A name that is not UTF-8.
    NotUtf8,
    /// A symlink whose target leaves the tree (absolute, or `..` past the root).
    SymlinkOut,
}

/// What a scan leaves out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Names left out wherever they appear (`node_modules`, `.DS_Store`), or relative paths
    /// (`build/cache`).
    pub excludes: Vec<String>,
    /// Files larger than this are skipped (default 256 MiB).
    pub max_file_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            excludes: Vec::new(),
            max_file_bytes: 256 << 20,
        }
    }
}

impl Options {
    fn excluded(&self, relative: &str) -> bool {
        let name = relative.rsplit('/').next().unwrap_or(relative);
        self.excludes
            .iter()
            .any(|e| e == name || e.trim_end_matches('/') == relative)
    }
}

/// A tree's nodes by relative path (`/`-separated, no leading `./`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The tree's root.
    pub root: PathBuf,
    /// Its nodes.
    pub nodes: BTreeMap<String, Node>,
    /// What was left out, and why.
    pub skipped: BTreeMap<String, Skipped>,
}

impl Snapshot {
    /// Scans `root` (a directory).
    pub fn scan(root: &Path, options: &Options) -> Result<Self> {
        let meta = fs::symlink_metadata(root).map_err(|e| Error::io("scan", root, e))?;
        if !meta.is_dir() {
            return Err(Error::NotADirectory(root.to_owned()));
        }
        let mut snapshot = Self {
            root: root.to_owned(),
            nodes: BTreeMap::new(),
            skipped: BTreeMap::new(),
        };
        let mut stack = vec![(root.to_owned(), String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            let entries = fs::read_dir(&dir).map_err(|e| Error::io("read", &dir, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::io("read", &dir, e))?;
                let path = entry.path();
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    snapshot.skipped.insert(
                        format!("{prefix}{}", entry.file_name().to_string_lossy()),
                        Skipped::NotUtf8,
                    );
                    continue;
                };
                let relative = format!("{prefix}{name}");
                if options.excluded(&relative) {
                    snapshot.skipped.insert(relative, Skipped::Excluded);
                    continue;
                }
                let meta =
                    fs::symlink_metadata(&path).map_err(|e| Error::io("inspect", &path, e))?;
                let kind = meta.file_type();
                let mode = meta.mode() & 0o777;
                if kind.is_dir() {
                    snapshot.nodes.insert(relative.clone(), Node::Dir { mode });
                    stack.push((path, format!("{relative}/")));
                } else if kind.is_symlink() {
                    let target =
                        fs::read_link(&path).map_err(|e| Error::io("read link", &path, e))?;
                    snapshot.nodes.insert(relative, Node::Symlink { target });
                } else if kind.is_file() {
                    if meta.len() > options.max_file_bytes {
                        snapshot
                            .skipped
                            .insert(relative, Skipped::TooLarge(meta.len()));
                        continue;
                    }
                    let digest = digest_file(&path)?;
                    snapshot.nodes.insert(
                        relative,
                        Node::File {
                            size: meta.len(),
                            mode,
                            digest,
                        },
                    );
                } else if kind.is_fifo()
                    || kind.is_socket()
                    || kind.is_block_device()
                    || kind.is_char_device()
                {
                    snapshot.skipped.insert(relative, Skipped::Special);
                }
            }
        }
        Ok(snapshot)
    }

    /// The total size of its files.
    pub fn bytes(&self) -> u64 {
        self.nodes
            .values()
            .map(|n| match n {
                Node::File { size, .. } => *size,
                _ => 0,
            })
            .sum()
    }
}

/// SHA-256 of a file's content.
pub(crate) fn digest_file(path: &Path) -> Result<[u8; 32]> {
    let mut file = fs::File::open(path).map_err(|e| Error::io("read", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io("read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}
