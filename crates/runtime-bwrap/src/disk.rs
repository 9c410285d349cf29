//! The workdir size cap: the workdir is a small ext4 filesystem of its own, loop-mounted on
//! the host, so the agent's files live on disk (not in memory) and cannot grow past the cap.
//! Mounting needs root; anyone else gets a clear refusal rather than an unenforced cap.

use std::path::{Path, PathBuf};
use std::process::Command;

use substrate_core::{Error, Result};

/// The smallest cap accepted: ext4 needs room for its own metadata.
pub const MIN_BYTES: u64 = 8 << 20;

/// File name of the image inside the boot directory.
pub const IMAGE: &str = "workdir.img";

fn refuse(reason: String) -> Error {
    Error::Unsupported {
        what: String::from("a workdir size cap"),
        reason,
    }
}

/// Checks that a cap of `bytes` can be enforced here.
pub fn check(bytes: u64) -> Result<()> {
    if bytes < MIN_BYTES {
        return Err(Error::invalid(
            "disk_bytes",
            format!("{bytes} bytes is below the smallest workdir cap of {MIN_BYTES} bytes (8 MiB)"),
        ));
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(refuse(String::from(
            "it is a loop-mounted filesystem, and mounting needs root; run as root or boot \
             without `disk_bytes`",
        )));
    }
    Ok(())
}

pub(crate) fn run(program: &str, args: &[&std::ffi::OsStr], hint: &str) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotInstalled {
                tool: program.to_owned(),
                hint: hint.to_owned(),
            },
            _ => Error::io(format!("run {program}"), e),
        })?;
    if !out.status.success() {
        let shown: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        return Err(Error::ProcessFailed {
            command: format!("{program} {}", shown.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// Creates a `bytes`-sized ext4 image in `boot_dir` owned (at its root) by `owner`, and mounts
/// it on `workdir`.
pub fn mount_capped(
    boot_dir: &Path,
    workdir: &Path,
    bytes: u64,
    owner: (u32, u32),
) -> Result<PathBuf> {
    let image = boot_dir.join(IMAGE);
    let file = std::fs::File::create(&image)
        .map_err(|e| Error::io(format!("create {}", image.display()), e))?;
    file.set_len(bytes)
        .map_err(|e| Error::io(format!("size {}", image.display()), e))?;
    drop(file);
    let root_owner = format!("root_owner={}:{}", owner.0, owner.1);
    // No journal and no reserved blocks: the cap is what the agent gets.
    run(
        "mkfs.ext4",
        &[
            "-q".as_ref(),
            "-F".as_ref(),
            "-m".as_ref(),
            "0".as_ref(),
            "-O".as_ref(),
            "^has_journal".as_ref(),
            "-E".as_ref(),
            root_owner.as_ref(),
            image.as_os_str(),
        ],
        "install e2fsprogs (`apt-get install e2fsprogs`)",
    )?;
    run(
        "mount",
        &[
            "-o".as_ref(),
            "loop,nosuid,nodev".as_ref(),
            image.as_os_str(),
            workdir.as_os_str(),
        ],
        "install mount (`apt-get install mount`)",
    )?;
    // lost+found belongs to no agent.
    let _ = std::fs::remove_dir(workdir.join("lost+found"));
    Ok(image)
}

/// Unmounts `workdir` (lazily when still busy, so the loop device goes once the last user does).
pub fn unmount(workdir: &Path) -> Result<()> {
    if run("umount", &[workdir.as_os_str()], "install mount").is_ok() {
        return Ok(());
    }
    run(
        "umount",
        &["-l".as_ref(), workdir.as_os_str()],
        "install mount",
    )
}

/// Mount points at or below `dir`, deepest first (for the reaper).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// Binds `source` read-only at `target` (an existing file or directory).
pub fn bind_read_only(source: &Path, target: &Path) -> Result<()> {
    run(
        "mount",
        &["--bind".as_ref(), source.as_os_str(), target.as_os_str()],
        "install mount",
    )?;
    if let Err(e) = run(
        "mount",
        &[
            "-o".as_ref(),
            "remount,bind,ro".as_ref(),
            target.as_os_str(),
        ],
        "install mount",
    ) {
        let _ = unmount(target);
        return Err(e);
    }
    Ok(())
}
