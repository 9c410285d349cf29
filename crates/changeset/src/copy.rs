//! Copy-in: the project into the sandbox's workdir, and the baseline snapshot of exactly what
//! was copied (each file is read once: its bytes are hashed and written in the same pass; a
//! large file is copied by the kernel, a reflink where the filesystem has them, and hashed
//! from the copy). Symlinks are copied only when they stay inside the project; device files
//! and FIFOs never are. A couple of threads share the work, directory by directory.
//!
//! Besides the baseline (rooted at the project), [`copy_project`] hands back a snapshot of the
//! destination as written: the same nodes and hashes, with the copies' own stat data, so the
//! first [`Snapshot::rescan`] of the workdir reads only what the agent changed.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::apply::link_stays_inside;
use crate::snapshot::{FileRecord, FileStat, ScanStats, Stamp};
use crate::{Error, Node, Options, Result, Skipped, Snapshot, walk};

/// What [`copy_in`] copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Files copied.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Both sides of a copy-in (see [`copy_project`]).
#[derive(Debug, Clone)]
pub struct CopiedProject {
    /// What was copied, rooted at the project, with the project's stat data: the base of the
    /// change set (and what [`ChangeSet::apply`](crate::ChangeSet::apply) checks the project
    /// against).
    pub baseline: Snapshot,
    /// The destination as written, rooted at it: the baseline's nodes and hashes with the
    /// copies' stat data. Pass it to [`Snapshot::rescan`] of the destination, so that only
    /// the files changed since the copy are read.
    pub workdir_snapshot: Snapshot,
    /// The totals.
    pub report: CopyReport,
}

/// Copies `project` into `dest` (created; must not exist or be empty) and returns the baseline
/// snapshot of what was copied, rooted at `project`. `progress` sees the running totals.
///
/// [`copy_project`] does the same and also returns the destination's snapshot, which a rescan
/// of the destination needs to skip unchanged files.
pub fn copy_in(
    project: &Path,
    dest: &Path,
    options: &Options,
    progress: impl FnMut(&CopyReport),
) -> Result<(Snapshot, CopyReport)> {
    let copied = copy_project(project, dest, options, progress)?;
    Ok((copied.baseline, copied.report))
}

/// Copies `project` into `dest` (created; must not exist or be empty; nothing else may write
/// to it until this returns) and returns the baseline (what was copied, rooted at `project`)
/// and the destination's snapshot (the same hashes, the copies' stat data). `progress` sees
/// the running totals.
///
/// ```no_run
/// # fn main() -> changeset::Result<()> {
/// use changeset::{ChangeSet, Options, Snapshot, copy_project};
/// # let (project, workdir) = (std::path::Path::new("p"), std::path::Path::new("w"));
/// let copied = copy_project(project, workdir, &Options::default(), |_| {})?;
/// // … the agent works in `workdir` …
/// let after = Snapshot::rescan(workdir, &Options::default(), &copied.workdir_snapshot)?;
/// let changes = ChangeSet::between(&copied.baseline, &after);
/// # Ok(()) }
/// ```
pub fn copy_project(
    project: &Path,
    dest: &Path,
    options: &Options,
    mut progress: impl FnMut(&CopyReport),
) -> Result<CopiedProject> {
    // Before anything of the project is looked at: its files changed after this are read
    // again by a rescan of the project.
    let project_trusted_before = Stamp::clock_floor();
    let meta = fs::symlink_metadata(project).map_err(|e| Error::io("read", project, e))?;
    if !meta.is_dir() {
        return Err(Error::NotADirectory(project.to_owned()));
    }
    fs::create_dir_all(dest).map_err(|e| Error::io("create", dest, e))?;
    let copy = Copy {
        project,
        dest,
        options,
        files: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
    };
    let mut shown = 0;
    let parts = walk::run(
        CopyJob::Dir(String::new()),
        walk::threads(),
        Copied::default,
        |job, copied, jobs| copy.job(job, copied, jobs),
        |copied| {
            copied.nodes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            copied.skipped.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        },
        || {
            let files = copy.files.load(Ordering::Relaxed);
            if files / 256 != shown / 256 {
                shown = files;
                progress(&CopyReport {
                    files,
                    bytes: copy.bytes.load(Ordering::Relaxed),
                });
            }
        },
    )?;
    let mut report = CopyReport::default();
    let mut nodes = Vec::new();
    let mut skipped = Vec::new();
    let mut dirs = Vec::new();
    let mut sources = Vec::with_capacity(parts.iter().map(|p| p.files.len()).sum());
    let mut copies = Vec::with_capacity(sources.capacity());
    for part in parts {
        nodes.push(part.nodes);
        skipped.push(part.skipped);
        dirs.extend(part.dirs);
        for (source, copy, digest) in part.files {
            sources.push(FileRecord::new(source, digest, project_trusted_before));
            copies.push((copy, digest));
        }
        report.files += part.report.files;
        report.bytes += part.report.bytes;
    }
    // Directories get their modes last, deepest first, so a read-only one is still filled.
    dirs.sort_by_key(|(path, _)| std::cmp::Reverse(path.components().count()));
    for (path, mode) in &dirs {
        fs::set_permissions(path, fs::Permissions::from_mode(*mode))
            .map_err(|e| Error::io("chmod", path, e))?;
    }
    let stats = ScanStats {
        files: report.files,
        hashed: report.files,
        hashed_bytes: report.bytes,
        ..ScanStats::default()
    };
    let baseline = Snapshot::assemble(project, nodes, skipped, sources, stats);
    // The copies were all written before this moment, and nothing else writes to `dest`
    // until we return.
    let written = clock_of(dest)?;
    let copies = copies
        .into_iter()
        .map(|(stat, digest)| FileRecord::new(stat, digest, written));
    // The copy has what the baseline has, less what was left out.
    let mut workdir = Snapshot::assemble(dest, Vec::new(), Vec::new(), copies, stats);
    workdir.nodes = baseline.nodes.clone();
    progress(&report);
    Ok(CopiedProject {
        baseline,
        workdir_snapshot: workdir,
        report,
    })
}

/// The destination filesystem's own clock, after the copy: the timestamp of a file created in
/// `dest` (then removed), as git takes its index file's. Every write after the copy gets a
/// timestamp at least this; copies stamped strictly before it can be trusted by a rescan, the
/// ones stamped in the same granule are racily clean and read again. Exact whatever the
/// filesystem's granularity, and on a network filesystem whose clock is not ours. `None`
/// (trust nothing) when the file can't be made.
fn clock_of(dest: &Path) -> Result<Option<Stamp>> {
    let marker = dest.join(format!(".changeset-clock-{}", std::process::id()));
    let Ok(file) = fs::File::options()
        .write(true)
        .create_new(true)
        .open(&marker)
    else {
        return Ok(None);
    };
    let meta = file.metadata();
    drop(file);
    fs::remove_file(&marker).map_err(|e| Error::io("remove", &marker, e))?;
    Ok(meta.ok().map(|meta| FileStat::of(&meta).newest()))
}

/// A copy's work: a directory to copy (relative path, `""` for the root), or files in one.
enum CopyJob {
    Dir(String),
    Files(Vec<(String, fs::Metadata)>),
}

/// One thread's share of the copy.
#[derive(Default)]
struct Copied {
    nodes: Vec<(String, Node)>,
    skipped: Vec<(String, Skipped)>,
    /// Per file: the source's and the copy's stat data, the hash.
    files: Vec<(FileStat, FileStat, [u8; 32])>,
    /// Directories made, with the modes they get at the end.
    dirs: Vec<(PathBuf, u32)>,
    report: CopyReport,
    buf: Vec<u8>,
}

/// Files copied by one job at most (see the scan's batches).
const COPY_BATCH: usize = 16;

/// Files at least this large are copied by the kernel (`copy_file_range`: a reflink where
/// the filesystem has them) and hashed from the copy; smaller ones are read once, hashed
/// and written from the same buffer.
const KERNEL_COPY: u64 = 1 << 20;

struct Copy<'a> {
    project: &'a Path,
    dest: &'a Path,
    options: &'a Options,
    files: AtomicU64,
    bytes: AtomicU64,
}

impl Copy<'_> {
    fn job(&self, job: CopyJob, copied: &mut Copied, jobs: &mut Vec<CopyJob>) -> Result<()> {
        match job {
            CopyJob::Dir(prefix) => self.dir(&prefix, copied, jobs),
            CopyJob::Files(files) => {
                for (relative, meta) in files {
                    self.entry(relative, meta, copied, jobs, 0)?;
                }
                Ok(())
            }
        }
    }

    fn dir(&self, prefix: &str, copied: &mut Copied, jobs: &mut Vec<CopyJob>) -> Result<()> {
        let dir = self.project.join(prefix);
        let entries = fs::read_dir(&dir).map_err(|e| Error::io("read", &dir, e))?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read", &dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                copied.skipped.push((
                    format!("{prefix}{}", name.to_string_lossy()),
                    Skipped::NotUtf8,
                ));
                continue;
            };
            let relative = crate::snapshot::join(prefix, name);
            if self.options.excluded(name, &relative) {
                copied.skipped.push((relative, Skipped::Excluded));
                continue;
            }
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("inspect", &entry.path(), e)),
            };
            if meta.is_file() {
                files.push((relative, meta));
            } else {
                self.entry(relative, meta, copied, jobs, 0)?;
            }
        }
        if files.len() <= COPY_BATCH {
            for (relative, meta) in files {
                self.entry(relative, meta, copied, jobs, 0)?;
            }
        } else {
            while !files.is_empty() {
                let rest = files.split_off(files.len().saturating_sub(COPY_BATCH));
                jobs.push(CopyJob::Files(rest));
            }
        }
        Ok(())
    }

    /// Copies one entry, whose stat data (not following a symlink) is `meta`.
    fn entry(
        &self,
        relative: String,
        meta: fs::Metadata,
        copied: &mut Copied,
        jobs: &mut Vec<CopyJob>,
        attempt: usize,
    ) -> Result<()> {
        let source = self.project.join(&relative);
        let target = self.dest.join(&relative);
        let kind = meta.file_type();
        let mode = meta.mode() & 0o777;
        if kind.is_dir() {
            fs::DirBuilder::new()
                .mode(0o700 | mode)
                .create(&target)
                .map_err(|e| Error::io("create", &target, e))?;
            copied.dirs.push((target, mode));
            copied.nodes.push((relative.clone(), Node::Dir { mode }));
            jobs.push(CopyJob::Dir(format!("{relative}/")));
        } else if kind.is_symlink() {
            let link = match fs::read_link(&source) {
                Ok(link) => link,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(Error::io("read link", &source, e)),
            };
            if !link_stays_inside(&relative, &link) {
                copied.skipped.push((relative, Skipped::SymlinkOut));
                return Ok(());
            }
            std::os::unix::fs::symlink(&link, &target)
                .map_err(|e| Error::io("create", &target, e))?;
            copied
                .nodes
                .push((relative, Node::Symlink { target: link }));
        } else if kind.is_file() {
            if meta.len() > self.options.max_file_bytes {
                copied
                    .skipped
                    .push((relative, Skipped::TooLarge(meta.len())));
                return Ok(());
            }
            let from = match fs::File::open(&source) {
                Ok(from) => from,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(Error::io("read", &source, e)),
            };
            let opened = from
                .metadata()
                .map_err(|e| Error::io("inspect", &source, e))?;
            if !opened.is_file() || opened.ino() != meta.ino() || opened.dev() != meta.dev() {
                // Replaced since it was listed (by a symlink out, say): look again.
                drop(from);
                if attempt + 1 >= crate::snapshot::ATTEMPTS {
                    return Err(Error::io(
                        "read",
                        &source,
                        std::io::Error::other("it keeps being replaced"),
                    ));
                }
                return match fs::symlink_metadata(&source) {
                    Ok(meta) => self.entry(relative, meta, copied, jobs, attempt + 1),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(Error::io("inspect", &source, e)),
                };
            }
            let (size, digest, copy) =
                copy_file(from, opened.len(), &target, mode, &mut copied.buf)?;
            copied
                .nodes
                .push((relative, Node::File { size, mode, digest }));
            copied.files.push((FileStat::of(&opened), copy, digest));
            copied.report.files += 1;
            copied.report.bytes += size;
            self.files.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(size, Ordering::Relaxed);
        } else if kind.is_fifo()
            || kind.is_socket()
            || kind.is_block_device()
            || kind.is_char_device()
        {
            copied.skipped.push((relative, Skipped::Special));
        }
        Ok(())
    }
}

/// Copies the open file `from` (`len` bytes when it was opened) to a new file `target` with
/// permission bits `mode`; returns the bytes copied, their SHA-256 and the copy's stat data
/// (taken once it is complete). The hash is of exactly what was written.
fn copy_file(
    mut from: fs::File,
    len: u64,
    target: &Path,
    mode: u32,
    buf: &mut Vec<u8>,
) -> Result<(u64, [u8; 32], FileStat)> {
    let mut to = fs::File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(target)
        .map_err(|e| Error::io("create", target, e))?;
    let failed = |e| Error::io("copy", target, e);
    let (size, digest) = if len >= KERNEL_COPY {
        let size = std::io::copy(&mut from, &mut to).map_err(failed)?;
        let (read, digest) = digest_at(&to, target, buf)?;
        if read != size {
            return Err(failed(std::io::Error::other(
                "the copy changed while hashed",
            )));
        }
        (size, digest)
    } else {
        let chunk = usize::try_from(len.clamp(4096, KERNEL_COPY)).unwrap_or(4096) + 1;
        if buf.len() < chunk {
            buf.resize(chunk, 0);
        }
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        loop {
            let n = match from.read(&mut buf[..chunk]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(failed(e)),
            };
            hasher.update(&buf[..n]);
            to.write_all(&buf[..n]).map_err(failed)?;
            size += n as u64;
        }
        (size, hasher.finalize().into())
    };
    // The mode as asked, whatever the umask took away.
    to.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("chmod", target, e))?;
    let copy = to.metadata().map_err(|e| Error::io("inspect", target, e))?;
    Ok((size, digest, FileStat::of(&copy)))
}

/// SHA-256 of what `file` holds, read from its start.
fn digest_at(file: &fs::File, path: &Path, buf: &mut Vec<u8>) -> Result<(u64, [u8; 32])> {
    if buf.len() < 256 * 1024 {
        buf.resize(256 * 1024, 0);
    }
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    loop {
        let n = match file.read_at(buf, offset) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", path, e)),
        };
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    Ok((offset, hasher.finalize().into()))
}
