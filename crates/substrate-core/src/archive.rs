//! A workdir as tar, both ways: a host tree packed by the host's `tar` for a sandbox that
//! unpacks it (a VM's, a container's), and a sandbox's tar unpacked on the host without
//! trusting it.

use std::path::Path;

use crate::{Error, Result};

/// The host's `tar` writing `dir`'s tree to its stdout (taken by the caller, who feeds it to
/// the sandbox); [`HostTar::finish`] checks it succeeded.
#[derive(Debug)]
pub struct HostTar {
    child: tokio::process::Child,
    dir: std::path::PathBuf,
}

impl HostTar {
    /// Starts packing `dir`.
    pub fn pack(dir: &Path) -> Result<Self> {
        let child = tokio::process::Command::new("tar")
            .arg("-C")
            .arg(dir)
            .args(["-cf", "-", "."])
            // macOS's tar would add AppleDouble `._` files.
            .env("COPYFILE_DISABLE", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::io(format!("start `tar` to pack {}", dir.display()), e))?;
        Ok(Self {
            child,
            dir: dir.to_owned(),
        })
    }

    /// The archive, once.
    pub fn take_output(&mut self) -> Result<tokio::process::ChildStdout> {
        self.child
            .stdout
            .take()
            .ok_or_else(|| Error::invalid("tar", "its output was already taken"))
    }

    /// Waits for `tar`; its failure, with what it printed, is an error.
    pub async fn finish(self) -> Result<()> {
        let out = self
            .child
            .wait_with_output()
            .await
            .map_err(|e| Error::io("wait for `tar`", e))?;
        if out.status.success() {
            return Ok(());
        }
        Err(Error::ProcessFailed {
            command: format!("tar -C {} -cf - .", self.dir.display()),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

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
