//! A snapshot of a tree: every file (size, mode, SHA-256), directory and symlink by relative
//! path, never following a symlink. Device files, FIFOs and sockets are recorded as skipped,
//! as are files over the size cap: they are never copied or applied.
//!
//! Like git's index, a snapshot also keeps each file's stat data (size, mtime and ctime to the
//! nanosecond, inode, device), so that a later [`Snapshot::rescan`] of the same tree reads only
//! the files whose stat data changed. A record is trusted only when the file's mtime and ctime
//! were strictly older than the time the snapshot began (every later write gets a newer
//! stamp, so changes its stat data): a file changed in the same timestamp granule as it was
//! recorded ("racily clean", in git's words) could change again without its stat data
//! showing it, so the next rescan reads it again.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::{Error, Result, walk};

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
    /// A symlink whose target leaves the tree or could through another link: absolute, `..`
    /// past the root, or `..` after a name (`a -> d/..` is the root's parent when `d -> .`).
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
    /// Whether the entry `name`, at `relative` (which ends with it), is left out.
    pub(crate) fn excluded(&self, name: &str, relative: &str) -> bool {
        self.excludes
            .iter()
            .any(|e| e == name || e.trim_end_matches('/') == relative)
    }
}

/// `prefix` then `name`, in one allocation.
pub(crate) fn join(prefix: &str, name: &str) -> String {
    let mut relative = String::with_capacity(prefix.len() + name.len());
    relative.push_str(prefix);
    relative.push_str(name);
    relative
}

/// A file timestamp (seconds and nanoseconds since the epoch), as stat reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Stamp {
    sec: i64,
    nsec: i64,
}

impl Stamp {
    /// A stamp no write from now on can be given an older one than, as far as the system
    /// clock tells: the clock now, less a margin for the coarse clock the kernel stamps files
    /// with (it lags by up to a tick), rounded down to an even second, so that filesystems
    /// with coarse timestamps (one second; FAT's two) are covered too. Files changed in the
    /// last two seconds before a scan are read again by the next rescan: a small price.
    pub(crate) fn clock_floor() -> Option<Self> {
        let now = SystemTime::now().checked_sub(Duration::from_millis(50))?;
        let sec = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
        Some(Self {
            sec: i64::try_from(sec - sec % 2).ok()?,
            nsec: 0,
        })
    }
}

/// What decides that a file is unchanged without reading it: git's stat data, less the owner.
/// The ctime can't be set by a program, so an edit that restores the size and mtime still
/// shows; the inode and device catch a file replaced by another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStat {
    size: u64,
    mtime: Stamp,
    ctime: Stamp,
    ino: u64,
    dev: u64,
}

impl FileStat {
    pub(crate) fn of(meta: &fs::Metadata) -> Self {
        Self {
            size: meta.size(),
            mtime: Stamp {
                sec: meta.mtime(),
                nsec: meta.mtime_nsec(),
            },
            ctime: Stamp {
                sec: meta.ctime(),
                nsec: meta.ctime_nsec(),
            },
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }

    /// The later of its mtime and ctime.
    pub(crate) fn newest(&self) -> Stamp {
        self.mtime.max(self.ctime)
    }

    /// Whether `meta` is this very file (not another put in its place).
    fn same_file(&self, meta: &fs::Metadata) -> bool {
        self.ino == meta.ino() && self.dev == meta.dev()
    }
}

/// A file's stat data when it was read, and the hash of what was read. Keyed by inode, not
/// path: the stat data says the inode's content is unchanged, wherever it is now (renamed,
/// hard-linked), so no path string is kept twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileRecord {
    pub(crate) stat: FileStat,
    pub(crate) digest: [u8; 32],
    /// Whether its mtime and ctime were strictly older than the stamp every write after the
    /// recording gets at least (`trusted_before`): then unchanged stat data means unchanged
    /// content. Otherwise it is racily clean and never trusted.
    pub(crate) settled: bool,
}

impl FileRecord {
    /// A record of a file read after a moment when writes started getting stamps of at
    /// least `trusted_before` (`None`: unknown, never trusted).
    pub(crate) fn new(stat: FileStat, digest: [u8; 32], trusted_before: Option<Stamp>) -> Self {
        Self {
            stat,
            digest,
            settled: trusted_before.is_some_and(|before| stat.newest() < before),
        }
    }

    pub(crate) fn key(&self) -> (u64, u64) {
        (self.stat.dev, self.stat.ino)
    }
}

/// Records by (device, inode).
pub(crate) type Records = HashMap<(u64, u64), FileRecord, BuildHasherDefault<InodeHasher>>;

/// A hash of (device, inode) keys that keeps nearby inodes in nearby slots: a rescan looks up
/// every file, and files of a directory mostly have consecutive inodes (a copy-in creates them
/// in the order a listing returns them), so their records share cache lines instead of each
/// lookup missing the cache. The slot comes from the low bits (the inode's own), the tag
/// hashbrown keeps from the top seven (mixed). Inode numbers are handed out by the
/// filesystem, not chosen by whoever writes the tree (an agent can't pick colliding keys the
/// way it could pick file names), so an unkeyed hash is safe here.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct InodeHasher(u64);

impl Hasher for InodeHasher {
    fn finish(&self) -> u64 {
        const TAG: u64 = 0x7f << 57;
        (self.0 & !TAG) | (self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) & TAG)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write_u64(u64::from(*byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // (device, inode): the inode in the low bits, the device above.
        self.0 = self.0.rotate_left(32) ^ n;
    }
}

/// How much work a scan did: how many files it read, and how many it could trust unread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScanStats {
    /// Regular files in the snapshot.
    pub files: u64,
    /// Files whose content was read and hashed.
    pub hashed: u64,
    /// The bytes read to hash them.
    pub hashed_bytes: u64,
    /// Files whose hash was taken from the previous snapshot: stat data unchanged, and last
    /// changed before that snapshot began.
    pub reused: u64,
    /// Files with unchanged stat data that were read anyway because they were racily clean
    /// (changed in the same timestamp granule as the previous snapshot recorded them).
    pub racy: u64,
}

impl ScanStats {
    pub(crate) fn add(&mut self, other: &ScanStats) {
        self.files += other.files;
        self.hashed += other.hashed;
        self.hashed_bytes += other.hashed_bytes;
        self.reused += other.reused;
        self.racy += other.racy;
    }
}

/// A tree's nodes by relative path (`/`-separated, no leading `./`), with the stat data a
/// [`Snapshot::rescan`] needs to skip unchanged files.
///
/// Two snapshots are equal when they describe the same tree (root, nodes, skipped entries);
/// stat data and statistics are a cache and don't count.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The tree's root.
    pub root: PathBuf,
    /// Its nodes.
    pub nodes: BTreeMap<String, Node>,
    /// What was left out, and why.
    pub skipped: BTreeMap<String, Skipped>,
    /// Each regular file's stat data and hash, by device and inode.
    pub(crate) records: Records,
    pub(crate) stats: ScanStats,
}

impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        self.root == other.root && self.nodes == other.nodes && self.skipped == other.skipped
    }
}

impl Eq for Snapshot {}

impl Snapshot {
    /// Scans `root` (a directory), reading every file.
    pub fn scan(root: &Path, options: &Options) -> Result<Self> {
        Self::walk(root, options, None)
    }

    /// Scans `root` again, reading only the files whose stat data changed since `previous`
    /// (an earlier snapshot of the same directory: a [`Snapshot::scan`] or `rescan` of it, or
    /// the `workdir_snapshot` of a [`copy_project`](crate::copy_project) into it). This is
    /// what makes computing a change set after an agent's work cost about as much as
    /// `git status`: one stat per entry, and reading only what changed.
    ///
    /// A file's hash is taken from `previous` when its size, mtime, ctime (to the
    /// nanosecond), inode and device are unchanged, and its last change came strictly before
    /// the snapshot that first read it began: a file changed in the same timestamp granule
    /// (racily clean) could have changed again unseen, so it is read again, as git does.
    /// The result is the same as a [`Snapshot::scan`] of the tree; a `previous` of another
    /// tree is never wrong, only useless (no inode matches).
    pub fn rescan(root: &Path, options: &Options, previous: &Snapshot) -> Result<Self> {
        Self::walk(root, options, Some(previous))
    }

    /// What the scan that made this snapshot read and reused.
    pub fn scan_stats(&self) -> &ScanStats {
        &self.stats
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

    /// A snapshot of `root` from lists of nodes and skipped entries (each sorted by path) and
    /// the file records.
    pub(crate) fn assemble(
        root: &Path,
        nodes: Vec<Vec<(String, Node)>>,
        skipped: Vec<Vec<(String, Skipped)>>,
        records: impl IntoIterator<Item = FileRecord> + Send,
        stats: ScanStats,
    ) -> Self {
        // The records' map is built beside the nodes' (two independent halves of the work).
        let (nodes, records) = std::thread::scope(|scope| {
            let records = scope.spawn(|| records.into_iter().map(|r| (r.key(), r)).collect());
            let nodes = merge_sorted(nodes);
            match records.join() {
                Ok(records) => (nodes, records),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        });
        Self {
            root: root.to_owned(),
            nodes,
            skipped: merge_sorted(skipped),
            records,
            stats,
        }
    }

    /// The recorded hash of the file whose current stat data is `now`, when it shows the
    /// file unchanged and the record is not racily clean; counts a racily clean match.
    fn trusted_digest(&self, now: &FileStat, stats: &mut ScanStats) -> Option<[u8; 32]> {
        let record = self.records.get(&(now.dev, now.ino))?;
        if record.stat != *now {
            return None;
        }
        if !record.settled {
            stats.racy += 1;
            return None;
        }
        Some(record.digest)
    }

    fn walk(root: &Path, options: &Options, previous: Option<&Snapshot>) -> Result<Self> {
        // Taken before any entry is looked at: whatever changes after this gets a newer
        // stamp than what the next rescan trusts.
        let trusted_before = Stamp::clock_floor();
        let meta = fs::symlink_metadata(root).map_err(|e| Error::io("scan", root, e))?;
        if !meta.is_dir() {
            return Err(Error::NotADirectory(root.to_owned()));
        }
        let scan = Scan {
            options,
            previous,
            trusted_before,
            listings: AtomicUsize::new(1),
        };
        let found = walk::run(
            ScanJob::Dir {
                path: root.to_owned(),
                prefix: String::new(),
                listing: 0,
            },
            walk::threads(),
            Found::default,
            |job, found, jobs| scan.job(job, found, jobs),
            |found| {
                found.loose.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                found.skipped.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            },
            || {},
        )?;
        let mut stats = ScanStats::default();
        let mut listings: Vec<Option<Vec<Listed>>> = Vec::new();
        listings.resize_with(scan.listings.into_inner(), || None);
        let mut loose = Vec::new();
        let mut skipped = Vec::new();
        let mut records = Vec::with_capacity(found.iter().map(|f| f.records.len()).sum());
        for part in found {
            stats.add(&part.stats);
            for (id, listing) in part.listings {
                if let Some(slot) = listings.get_mut(id) {
                    *slot = Some(listing);
                }
            }
            loose.push(part.loose);
            skipped.push(part.skipped);
            records.extend(part.records);
        }
        let mut nodes = vec![in_order(&mut listings, 0)];
        debug_assert!(
            nodes[0].windows(2).all(|w| w[0].0 < w[1].0),
            "listings came out of path order"
        );
        // Listings no directory links to (a file replaced by a directory while it was being
        // read): in order among themselves, merged like the loose nodes.
        let mut orphans = Vec::new();
        for id in 1..listings.len() {
            if listings[id].is_some() {
                orphans.extend(in_order(&mut listings, id));
            }
        }
        orphans.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        nodes.push(orphans);
        nodes.extend(loose);
        Ok(Self::assemble(root, nodes, skipped, records, stats))
    }
}

/// The nodes of listing `id` and the listings under it, in path order.
fn in_order(listings: &mut [Option<Vec<Listed>>], id: usize) -> Vec<(String, Node)> {
    let mut out = Vec::new();
    let mut stack = Vec::new();
    if let Some(first) = listings.get_mut(id).and_then(Option::take) {
        stack.push(first.into_iter());
    }
    while let Some(top) = stack.last_mut() {
        match top.next() {
            None => {
                stack.pop();
            }
            Some(Listed::Node(path, node)) => out.push((path, node)),
            Some(Listed::Under(_, sub)) => {
                if let Some(listing) = listings.get_mut(sub).and_then(Option::take) {
                    stack.push(listing.into_iter());
                }
            }
        }
    }
    out
}

/// One map from a few lists each sorted by key (keys are unique across them): merged in
/// linear time, so the map is built from sorted input.
fn merge_sorted<V>(mut parts: Vec<Vec<(String, V)>>) -> BTreeMap<String, V> {
    while parts.len() > 1 {
        let mut next = Vec::with_capacity(parts.len().div_ceil(2));
        let mut pairs = parts.into_iter();
        while let Some(a) = pairs.next() {
            match pairs.next() {
                Some(b) => next.push(merge_two(a, b)),
                None => next.push(a),
            }
        }
        parts = next;
    }
    // Sorted input: the map's own sort only confirms the order.
    parts.into_iter().flatten().collect()
}

fn merge_two<V>(a: Vec<(String, V)>, b: Vec<(String, V)>) -> Vec<(String, V)> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let mut a = a.into_iter().peekable();
    let mut b = b.into_iter().peekable();
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => x.0 <= y.0,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_a { a.next() } else { b.next() };
        out.extend(next);
    }
    out
}

/// A scan's work: a directory to list (its path, its relative path with a trailing `/`, its
/// listing's number), or files to hash.
enum ScanJob {
    Dir {
        path: PathBuf,
        prefix: String,
        listing: usize,
    },
    Hash(Vec<Pending>),
}

/// A regular file to read: its relative path, where it is, and its stat data when listed.
struct Pending {
    relative: String,
    path: PathBuf,
    listed: fs::Metadata,
}

/// One item of a directory's listing. A listing is sorted by name, a subdirectory's contents
/// standing as `name/` (so after `name` and after siblings like `name-x`, as full paths
/// sort): the whole tree comes out in path order without sorting full paths.
enum Listed {
    Node(String, Node),
    /// `name/`, and the subdirectory's listing.
    Under(String, usize),
}

impl Listed {
    /// What it sorts by in its directory's listing (whose paths start with `prefix_len`
    /// bytes of prefix): the name, or `name/`.
    fn key(&self, prefix_len: usize) -> &str {
        match self {
            Listed::Node(path, _) => path.get(prefix_len..).unwrap_or(path),
            Listed::Under(key, _) => key,
        }
    }
}

/// What a directory entry turned out to be.
enum Visited {
    /// Recorded (a file trusted unread, a symlink), or left out.
    Node(String, Node),
    /// A directory: its relative path, mode, and where it is.
    Dir(String, u32, PathBuf),
    /// A file to read.
    Read(Pending),
    /// Nothing to record (left out, or gone).
    Nothing,
}

/// One thread's share of a snapshot.
#[derive(Default)]
struct Found {
    /// Directories' listings, by number.
    listings: Vec<(usize, Vec<Listed>)>,
    /// Nodes outside any listing (files read in batches), sorted at the end.
    loose: Vec<(String, Node)>,
    skipped: Vec<(String, Skipped)>,
    records: Vec<FileRecord>,
    stats: ScanStats,
    buf: Vec<u8>,
}

/// Files hashed by one job at most: enough to amortize the job, few enough to share a large
/// directory between threads.
const HASH_BATCH: usize = 16;

/// How often a file that keeps being replaced while it is read is looked at again.
pub(crate) const ATTEMPTS: usize = 3;

struct Scan<'a> {
    options: &'a Options,
    previous: Option<&'a Snapshot>,
    /// Every write after the scan began is stamped at least this.
    trusted_before: Option<Stamp>,
    /// Listings numbered so far.
    listings: AtomicUsize,
}

impl Scan<'_> {
    fn job(&self, job: ScanJob, found: &mut Found, jobs: &mut Vec<ScanJob>) -> Result<()> {
        match job {
            ScanJob::Dir {
                path,
                prefix,
                listing,
            } => self.list(&path, &prefix, listing, found, jobs),
            ScanJob::Hash(files) => {
                let mut loose = Vec::new();
                for file in files {
                    if let Some(node) = self.hash(file, found, jobs, &mut loose, 0)? {
                        loose.push(node);
                    }
                }
                found.loose.append(&mut loose);
                Ok(())
            }
        }
    }

    /// Lists `dir` once: one stat per entry (relative to the open directory), directories
    /// queued, files trusted from the previous snapshot or read.
    fn list(
        &self,
        dir: &Path,
        prefix: &str,
        listing: usize,
        found: &mut Found,
        jobs: &mut Vec<ScanJob>,
    ) -> Result<()> {
        let entries = fs::read_dir(dir).map_err(|e| Error::io("read", dir, e))?;
        let mut listed = Vec::new();
        let mut pending = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read", dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                found.skipped.push((
                    format!("{prefix}{}", name.to_string_lossy()),
                    Skipped::NotUtf8,
                ));
                continue;
            };
            let relative = join(prefix, name);
            if self.options.excluded(name, &relative) {
                found.skipped.push((relative, Skipped::Excluded));
                continue;
            }
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                // Gone since the listing: not in the tree.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("inspect", &dir.join(name), e)),
            };
            match self.visit(relative, || dir.join(name), meta, found)? {
                Visited::Node(path, node) => listed.push(Listed::Node(path, node)),
                Visited::Dir(path, mode, at) => {
                    let sub = self.listings.fetch_add(1, Ordering::Relaxed);
                    listed.push(Listed::Under(join(name, "/"), sub));
                    jobs.push(ScanJob::Dir {
                        path: at,
                        prefix: join(&path, "/"),
                        listing: sub,
                    });
                    listed.push(Listed::Node(path, Node::Dir { mode }));
                }
                Visited::Read(file) => pending.push(file),
                Visited::Nothing => {}
            }
        }
        if pending.len() <= HASH_BATCH {
            for file in pending {
                let mut loose = Vec::new();
                if let Some((path, node)) = self.hash(file, found, jobs, &mut loose, 0)? {
                    listed.push(Listed::Node(path, node));
                }
                found.loose.append(&mut loose);
            }
        } else {
            while !pending.is_empty() {
                let rest = pending.split_off(pending.len().saturating_sub(HASH_BATCH));
                jobs.push(ScanJob::Hash(rest));
            }
        }
        listed.sort_unstable_by(|a, b| a.key(prefix.len()).cmp(b.key(prefix.len())));
        found.listings.push((listing, listed));
        Ok(())
    }

    /// What the entry at `relative` (found at `path()`) is, from its stat data; a file
    /// trusted from the previous snapshot is recorded.
    fn visit(
        &self,
        relative: String,
        path: impl FnOnce() -> PathBuf,
        meta: fs::Metadata,
        found: &mut Found,
    ) -> Result<Visited> {
        let kind = meta.file_type();
        let mode = meta.mode() & 0o777;
        if kind.is_file() {
            if meta.len() > self.options.max_file_bytes {
                found
                    .skipped
                    .push((relative, Skipped::TooLarge(meta.len())));
                return Ok(Visited::Nothing);
            }
            let stat = FileStat::of(&meta);
            let trusted = self
                .previous
                .and_then(|previous| previous.trusted_digest(&stat, &mut found.stats));
            let Some(digest) = trusted else {
                return Ok(Visited::Read(Pending {
                    relative,
                    path: path(),
                    listed: meta,
                }));
            };
            found.stats.files += 1;
            found.stats.reused += 1;
            // Settled in the previous snapshot, and unchanged since: settled for good.
            found.records.push(FileRecord {
                stat,
                digest,
                settled: true,
            });
            Ok(Visited::Node(
                relative,
                Node::File {
                    size: stat.size,
                    mode,
                    digest,
                },
            ))
        } else if kind.is_dir() {
            Ok(Visited::Dir(relative, mode, path()))
        } else if kind.is_symlink() {
            let path = path();
            match fs::read_link(&path) {
                Ok(target) => Ok(Visited::Node(relative, Node::Symlink { target })),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Visited::Nothing),
                Err(e) => Err(Error::io("read link", &path, e)),
            }
        } else {
            if kind.is_fifo() || kind.is_socket() || kind.is_block_device() || kind.is_char_device()
            {
                found.skipped.push((relative, Skipped::Special));
            }
            Ok(Visited::Nothing)
        }
    }

    /// Reads and hashes a listed file; returns its node. Its stat data is taken from the
    /// open file before it is read (a change while reading then shows as changed stat data
    /// next time), and must be the listed file's: one put in its place (a symlink, say) is
    /// looked at afresh, and what it turns out to be goes to `loose` (or, a directory, is
    /// queued with a listing of its own).
    fn hash(
        &self,
        file: Pending,
        found: &mut Found,
        jobs: &mut Vec<ScanJob>,
        loose: &mut Vec<(String, Node)>,
        attempt: usize,
    ) -> Result<Option<(String, Node)>> {
        let Pending {
            relative,
            path,
            listed,
        } = file;
        let opened = match fs::File::open(&path) {
            Ok(opened) => opened,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        let meta = opened
            .metadata()
            .map_err(|e| Error::io("inspect", &path, e))?;
        let stat = FileStat::of(&meta);
        if !meta.is_file() || !stat.same_file(&listed) {
            drop(opened);
            if attempt + 1 >= ATTEMPTS {
                return Err(Error::io(
                    "read",
                    &path,
                    std::io::Error::other("it keeps being replaced"),
                ));
            }
            let meta = match fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::io("inspect", &path, e)),
            };
            let again = path.clone();
            match self.visit(relative, || again, meta, found)? {
                Visited::Node(path, node) => loose.push((path, node)),
                Visited::Dir(path, mode, at) => {
                    let sub = self.listings.fetch_add(1, Ordering::Relaxed);
                    jobs.push(ScanJob::Dir {
                        path: at,
                        prefix: join(&path, "/"),
                        listing: sub,
                    });
                    loose.push((path, Node::Dir { mode }));
                }
                Visited::Read(file) => {
                    if let Some(node) = self.hash(file, found, jobs, loose, attempt + 1)? {
                        loose.push(node);
                    }
                }
                Visited::Nothing => {}
            }
            return Ok(None);
        }
        let (size, digest) = digest_reader(opened, &path, &mut found.buf)?;
        found.stats.files += 1;
        found.stats.hashed += 1;
        found.stats.hashed_bytes += size;
        found
            .records
            .push(FileRecord::new(stat, digest, self.trusted_before));
        Ok(Some((
            relative,
            Node::File {
                size,
                mode: meta.mode() & 0o777,
                digest,
            },
        )))
    }
}

/// Hashes everything `reader` yields, through `buf`; returns the byte count and SHA-256.
pub(crate) fn digest_reader(
    mut reader: impl Read,
    path: &Path,
    buf: &mut Vec<u8>,
) -> Result<(u64, [u8; 32])> {
    if buf.len() < 256 * 1024 {
        buf.resize(256 * 1024, 0);
    }
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    loop {
        let n = match reader.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", path, e)),
        };
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hasher.finalize().into()))
}

/// SHA-256 of a file's content.
pub(crate) fn digest_file(path: &Path) -> Result<[u8; 32]> {
    let file = fs::File::open(path).map_err(|e| Error::io("read", path, e))?;
    let mut buf = Vec::new();
    Ok(digest_reader(file, path, &mut buf)?.1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // test code

    use super::*;
    use crate::ChangeSet;

    #[test]
    fn the_clock_floor_is_an_even_second_in_the_past() {
        let floor = Stamp::clock_floor().unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(floor.nsec, 0);
        assert_eq!(floor.sec % 2, 0);
        assert!(floor.sec <= i64::try_from(now.as_secs()).unwrap());
        assert!(floor.sec + 3 >= i64::try_from(now.as_secs()).unwrap());
    }

    /// A file edited in the same timestamp granule as the snapshot recorded it can keep the
    /// very same stat data (on a filesystem with coarse timestamps, or within one tick of the
    /// kernel's coarse clock). Such a record must not be trusted.
    #[test]
    fn a_racily_clean_record_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        fs::write(&path, b"one!").unwrap();
        let mut base = Snapshot::scan(dir.path(), &Options::default()).unwrap();
        // Edited in place, same size: then make the record's stat data what the file shows
        // now, as if the edit had landed in the same granule as the recording.
        fs::write(&path, b"two!").unwrap();
        let now = FileStat::of(&fs::symlink_metadata(&path).unwrap());
        let key = (now.dev, now.ino);
        let digest = base.records[&key].digest;

        // Recorded in the granule of the file's last change: racily clean, read again.
        base.records
            .insert(key, FileRecord::new(now, digest, Some(now.newest())));
        let again = Snapshot::rescan(dir.path(), &Options::default(), &base).unwrap();
        assert_eq!(again.scan_stats().racy, 1);
        assert_eq!(again.scan_stats().hashed, 1);
        assert_eq!(
            ChangeSet::between(&base, &again).summary(),
            "M a.txt",
            "the edit was missed"
        );

        // Had the snapshot been taken strictly after the change, the record would be trusted
        // (so it must only ever be when the change came before): the stale hash is reused.
        let later = Stamp {
            sec: now.newest().sec + 1,
            nsec: 0,
        };
        base.records
            .insert(key, FileRecord::new(now, digest, Some(later)));
        let trusting = Snapshot::rescan(dir.path(), &Options::default(), &base).unwrap();
        assert_eq!(trusting.scan_stats().reused, 1);
        assert!(ChangeSet::between(&base, &trusting).is_empty());
    }

    #[test]
    fn a_snapshot_without_a_time_trusts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.txt"), b"a").unwrap();
        let mut base = Snapshot::scan(dir.path(), &Options::default()).unwrap();
        for record in base.records.values_mut() {
            *record = FileRecord::new(record.stat, record.digest, None);
        }
        let again = Snapshot::rescan(dir.path(), &Options::default(), &base).unwrap();
        assert_eq!(again.scan_stats().hashed, 1);
        assert_eq!(again.scan_stats().reused, 0);
    }

    /// Every entry, found the plain way.
    fn walk_plainly(root: &Path, prefix: &str, out: &mut Vec<String>) {
        for entry in fs::read_dir(root.join(prefix)).unwrap() {
            let entry = entry.unwrap();
            let relative = format!("{prefix}{}", entry.file_name().to_str().unwrap());
            if entry.file_type().unwrap().is_dir() {
                walk_plainly(root, &format!("{relative}/"), out);
            }
            out.push(relative);
        }
    }

    #[test]
    fn a_scan_finds_every_entry_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // Names around a directory's own (`b-c` and `b.txt` sort between `b` and `b/x`),
        // and a directory big enough to be read in batches by both threads.
        for relative in ["a", "b/x", "b/y/z", "b-c", "b.txt", "b0", "c/d/e/f"] {
            let path = root.join(relative);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, relative).unwrap();
        }
        for i in 0..100 {
            fs::create_dir_all(root.join("big")).unwrap();
            fs::write(root.join(format!("big/f{i:03}")), [i as u8; 3]).unwrap();
        }
        std::os::unix::fs::symlink("b/x", root.join("b/link")).unwrap();
        fs::create_dir(root.join("empty")).unwrap();

        let mut expected = Vec::new();
        walk_plainly(root, "", &mut expected);
        expected.sort();
        let snapshot = Snapshot::scan(root, &Options::default()).unwrap();
        let found: Vec<String> = snapshot.nodes.keys().cloned().collect();
        assert_eq!(found, expected);
        assert_eq!(snapshot.scan_stats().files, 107);
        assert_eq!(snapshot.scan_stats().hashed, 107);
        assert_eq!(snapshot.records.len(), 107);
        // A rescan finds the same, whatever it reads again.
        let again = Snapshot::rescan(root, &Options::default(), &snapshot).unwrap();
        assert_eq!(again, snapshot);
    }

    #[test]
    fn sorted_parts_merge_into_one_map() {
        let part = |keys: &[&str]| -> Vec<(String, u32)> {
            keys.iter().map(|k| ((*k).to_owned(), 0)).collect()
        };
        let merged = merge_sorted(vec![
            part(&["a", "c/x", "e"]),
            part(&["b", "c-d"]),
            part(&[]),
            part(&["c", "d"]),
        ]);
        let keys: Vec<&str> = merged.keys().map(String::as_str).collect();
        assert_eq!(keys, ["a", "b", "c", "c-d", "c/x", "d", "e"]);
    }
}
