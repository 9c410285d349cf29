//! Copy-in: the project into the sandbox's workdir, and the baseline snapshot of exactly what
//! was copied (the kernel copies each file; its hash is read from the page cache). Symlinks are copied
//! only when they stay inside the project; device files and FIFOs never are.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::apply::link_stays_inside;
use crate::{Error, Node, Options, Result, Skipped, Snapshot};

/// What [`copy_in`] copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Files copied.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Copies `project` into `dest` (created; must not exist or be empty) and returns the baseline
/// snapshot of what was copied, rooted at `project`. `progress` sees the running totals.
pub fn copy_in(
    project: &Path,
    dest: &Path,
    options: &Options,
    mut progress: impl FnMut(&CopyReport),
) -> Result<(Snapshot, CopyReport)> {
    let meta = fs::symlink_metadata(project).map_err(|e| Error::io("read", project, e))?;
    if !meta.is_dir() {
        return Err(Error::NotADirectory(project.to_owned()));
    }
    fs::create_dir_all(dest).map_err(|e| Error::io("create", dest, e))?;
    let mut snapshot = Snapshot {
        root: project.to_owned(),
        nodes: Default::default(),
        skipped: Default::default(),
    };
    let mut report = CopyReport::default();
    let mut stack = vec![String::new()];
    while let Some(prefix) = stack.pop() {
        let dir = project.join(&prefix);
        let entries = fs::read_dir(&dir).map_err(|e| Error::io("read", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read", &dir, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                snapshot.skipped.insert(
                    format!("{prefix}{}", entry.file_name().to_string_lossy()),
                    Skipped::NotUtf8,
                );
                continue;
            };
            let relative = format!("{prefix}{name}");
            if options
                .excludes
                .iter()
                .any(|e| e == &name || e.trim_end_matches('/') == relative)
            {
                snapshot.skipped.insert(relative, Skipped::Excluded);
                continue;
            }
            let source = entry.path();
            let target = dest.join(&relative);
            let meta =
                fs::symlink_metadata(&source).map_err(|e| Error::io("inspect", &source, e))?;
            let kind = meta.file_type();
            let mode = meta.mode() & 0o777;
            if kind.is_dir() {
                fs::create_dir(&target).map_err(|e| Error::io("create", &target, e))?;
                fs::set_permissions(&target, fs::Permissions::from_mode(mode & 0o777))
                    .map_err(|e| Error::io("chmod", &target, e))?;
                snapshot.nodes.insert(relative.clone(), Node::Dir { mode });
                stack.push(format!("{relative}/"));
            } else if kind.is_symlink() {
                let link =
                    fs::read_link(&source).map_err(|e| Error::io("read link", &source, e))?;
                if !link_stays_inside(&relative, &link) {
                    snapshot.skipped.insert(relative, Skipped::SymlinkOut);
                    continue;
                }
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(|e| Error::io("create", &target, e))?;
                snapshot
                    .nodes
                    .insert(relative, Node::Symlink { target: link });
            } else if kind.is_file() {
                if meta.len() > options.max_file_bytes {
                    snapshot
                        .skipped
                        .insert(relative, Skipped::TooLarge(meta.len()));
                    continue;
                }
                // The kernel copies (copy_file_range: a reflink where the filesystem has
                // them), and the hash reads the source from the page cache.
                let size = fs::copy(&source, &target).map_err(|e| Error::io("copy", &source, e))?;
                let digest = crate::snapshot::digest_file(&source)?;
                let to = fs::File::options()
                    .write(true)
                    .open(&target)
                    .map_err(|e| Error::io("open", &target, e))?;
                to.set_permissions(fs::Permissions::from_mode(mode & 0o777))
                    .map_err(|e| Error::io("chmod", &target, e))?;
                snapshot
                    .nodes
                    .insert(relative, Node::File { size, mode, digest });
                report.files += 1;
                report.bytes += size;
                if report.files % 256 == 0 {
                    progress(&report);
                }
            } else if kind.is_fifo()
                || kind.is_socket()
                || kind.is_block_device()
                || kind.is_char_device()
            {
                snapshot.skipped.insert(relative, Skipped::Special);
            }
        }
    }
    progress(&report);
    Ok((snapshot, report))
}
