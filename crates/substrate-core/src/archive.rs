//! A tar archive of a sandbox's workdir unpacked on the host without trusting it: what a
//! runtime that reads a workdir back as tar (a VM's, a container's) brings home.

use std::path::Path;

use crate::{Error, Result};

/// Unpacks the sandbox's tar `archive` into `dest`: plain files, directories, symlinks and
/// hard links only, and none outside `dest` (the tar crate refuses `..` and absolute names
/// and never writes through a symlink out of `dest`). Owners are not restored.
pub fn unpack(archive: &Path, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest)
        .map_err(|e| Error::io(format!("create {}", dest.display()), e))?;
    let file = std::fs::File::open(archive)
        .map_err(|e| Error::io(format!("open {}", archive.display()), e))?;
    let mut tar = tar::Archive::new(std::io::BufReader::new(file));
    tar.set_preserve_permissions(true);
    tar.set_preserve_mtime(true);
    tar.set_unpack_xattrs(false);
    tar.set_overwrite(true);
    let entries = tar
        .entries()
        .map_err(|e| Error::io(format!("read {}", archive.display()), e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::io(format!("read {}", archive.display()), e))?;
        use tar::EntryType::{Directory, Link, Regular, Symlink};
        let kind = entry.header().entry_type();
        if !matches!(kind, Regular | Directory | Symlink | Link) {
            tracing::debug!(path = ?entry.path().ok(), ?kind, "left out of the workdir's copy");
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| Error::io(format!("read {}", archive.display()), e))?
            .into_owned();
        if through_symlink(dest, &path) {
            tracing::warn!(path = %path.display(), "a workdir entry under a symlink was left out");
            continue;
        }
        let unpacked = entry
            .unpack_in(dest)
            .map_err(|e| Error::io(format!("unpack into {}", dest.display()), e))?;
        if !unpacked {
            tracing::warn!(path = ?entry.path().ok(), "a workdir entry pointing outside was left out");
        }
    }
    let _ = std::fs::remove_file(archive);
    Ok(())
}

/// Whether a directory on the way to `path` inside `root` is a symlink (so writing `path`
/// would follow it).
fn through_symlink(root: &Path, path: &Path) -> bool {
    let mut at = root.to_path_buf();
    let parents: Vec<_> = path.components().collect();
    for component in parents.iter().take(parents.len().saturating_sub(1)) {
        at.push(component);
        if std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
            return true;
        }
    }
    false
}
