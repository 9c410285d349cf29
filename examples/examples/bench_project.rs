//! Project folders and terminals, each beside a baseline measured in the same run:
//!
//! - copy-in of a generated tree (50,000 files, 1 GiB) with its baseline snapshot vs `cp -a`
//!   of the same tree (target ≤ 1.2×);
//! - the change set after 100 edits, as the product computes it (a rescan of the sandbox's
//!   copy against the snapshot of it that copy-in handed back, reading only files whose stat
//!   data changed, and the comparison with the baseline) vs `git status` on the same tree
//!   (target ≤ 1×);
//! - a keystroke's round trip through a bwrap sandbox's PTY (`cat` in raw mode echoing it),
//!   p50/p95 (target ≤ 5 ms).
//!
//! Run with `cargo xtask bench project` (release build, Linux with bubblewrap and git).

#[cfg(target_os = "linux")]
mod linux {
    use std::io::Write;
    use std::path::Path;
    use std::time::{Duration, Instant};

    use anyhow::{Context, bail};
    use changeset::{ChangeSet, Options, Snapshot, copy_project};
    use computeragent::terminal::TerminalRequest;
    use computeragent::{RuntimeConfig, RuntimeName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const FILES: usize = 50_000;
    const TOTAL: usize = 1 << 30;
    const EDITS: usize = 100;
    const KEYS: usize = 200;

    fn generate(root: &Path) -> anyhow::Result<()> {
        let size = TOTAL / FILES;
        let mut block = vec![0u8; size];
        for i in 0..FILES {
            let dir = root.join(format!("d{:03}/e{:02}", i % 500, (i / 500) % 20));
            std::fs::create_dir_all(&dir)?;
            for (j, b) in block.iter_mut().enumerate() {
                *b = b'a' + ((i * 31 + j * 7) % 26) as u8;
            }
            block[..8].copy_from_slice(&(i as u64).to_le_bytes().map(|b| b'a' + (b % 26)));
            std::fs::write(dir.join(format!("f{i}.txt")), &block)?;
        }
        Ok(())
    }

    fn run(cmd: &mut std::process::Command) -> anyhow::Result<()> {
        let status = cmd.status().with_context(|| format!("run {cmd:?}"))?;
        if !status.success() {
            bail!("{cmd:?} failed ({status})");
        }
        Ok(())
    }

    /// Writes back every dirty page (both sides then read a warm page cache).
    fn drop_caches() {
        let _ = std::process::Command::new("sync").status();
    }

    fn percentile(sorted: &[Duration], p: f64) -> Duration {
        sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
    }

    pub async fn run_all() -> anyhow::Result<()> {
        let work = tempfile::tempdir_in(std::env::current_dir()?.join("target"))?;
        let tree = work.path().join("tree");
        println!("generating {FILES} files, {} MiB …", TOTAL >> 20);
        generate(&tree)?;
        drop_caches();

        // Copy-in vs cp -a, twice each, the better of two, in turns (each side goes first
        // once). The copies are all kept until the end: on ext4 without a journal, creating
        // inodes right after many were deleted is slow (it steps over each recently deleted
        // one), which would land on whichever side copies after a removal.
        let mut ours = Duration::MAX;
        let mut cp = Duration::MAX;
        for round in 0..2 {
            let order = if round == 0 {
                ["cp", "ours"]
            } else {
                ["ours", "cp"]
            };
            for side in order {
                let dest = work.path().join(format!("{side}-{round}"));
                // Each copy starts with no dirty pages and ends with its data written:
                // writeback of an earlier gigabyte never lands on the other side's clock.
                drop_caches();
                let started = Instant::now();
                if side == "cp" {
                    run(std::process::Command::new("cp")
                        .arg("-a")
                        .arg(&tree)
                        .arg(&dest))?;
                    drop_caches();
                    cp = cp.min(started.elapsed());
                } else {
                    let copied = copy_project(&tree, &dest, &Options::default(), |_| {})?;
                    drop_caches();
                    ours = ours.min(started.elapsed());
                    assert_eq!(copied.report.files as usize, FILES);
                    assert!(copied.baseline.nodes.len() >= FILES);
                }
            }
        }
        println!(
            "benchmark                                   measured      baseline      ratio    target"
        );
        println!(
            "copy-in {FILES} files / 1 GiB + baseline, synced  {:>8.2} s    {:>8.2} s (cp -a)  {:>5.2}x   ≤ 1.2x",
            ours.as_secs_f64(),
            cp.as_secs_f64(),
            ours.as_secs_f64() / cp.as_secs_f64()
        );

        // The change set after 100 edits vs git status.
        let dest = work.path().join("sandbox");
        let copied = copy_project(&tree, &dest, &Options::default(), |_| {})?;
        run(std::process::Command::new("git")
            .args(["init", "-q"])
            .current_dir(&dest))?;
        run(std::process::Command::new("git")
            .args(["-c", "core.fsmonitor=false", "add", "-A"])
            .current_dir(&dest))?;
        run(std::process::Command::new("git")
            .args([
                "-c",
                "user.name=b",
                "-c",
                "user.email=b@b",
                "commit",
                "-qm",
                "base",
            ])
            .current_dir(&dest))?;
        for i in 0..EDITS {
            let i = i * (FILES / EDITS);
            let path = dest.join(format!("d{:03}/e{:02}/f{i}.txt", i % 500, (i / 500) % 20));
            std::fs::OpenOptions::new()
                .append(true)
                .open(&path)?
                .write_all(b"edit\n")?;
        }
        // The copy's and git's gigabytes written back first: writeback threads busy on a core
        // would land on whichever side runs while they are.
        drop_caches();
        let mut ours = Duration::MAX;
        let mut git = Duration::MAX;
        let mut read = changeset::ScanStats::default();
        for _ in 0..3 {
            let started = Instant::now();
            let out = std::process::Command::new("git")
                .args(["status", "--porcelain"])
                .current_dir(&dest)
                .output()?;
            git = git.min(started.elapsed());
            assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), EDITS);
            let started = Instant::now();
            let options = Options {
                excludes: vec![".git".into()],
                ..Options::default()
            };
            // As the product does: the sandbox's copy rescanned against the snapshot of it
            // that copy-in handed back, compared with the baseline.
            let now = Snapshot::rescan(&dest, &options, &copied.workdir_snapshot)?;
            let changes = ChangeSet::between(&copied.baseline, &now);
            ours = ours.min(started.elapsed());
            assert_eq!(changes.changes().len(), EDITS);
            read = *now.scan_stats();
        }
        println!(
            "change set after {EDITS} edits                  {:>8.3} s    {:>8.3} s (git status)  {:>5.2}x   ≤ 1x",
            ours.as_secs_f64(),
            git.as_secs_f64(),
            ours.as_secs_f64() / git.as_secs_f64()
        );
        println!(
            "  (the rescan read {} of {FILES} files: the edited ones and {} racily clean)",
            read.hashed, read.racy
        );

        // Keystroke round trip through a sandbox's PTY.
        let stage = substrate_testkit::stage::ensure_staged().map_err(anyhow::Error::msg)?;
        let config = RuntimeConfig {
            stage_dir: stage.parent().map(Into::into),
            ..RuntimeConfig::default()
        };
        let mut terminal = computeragent::terminal::open(
            RuntimeName::Bwrap,
            &config,
            &substrate_core::BootSpec::new("bench-keys"),
            TerminalRequest::new(["sh", "-c", "stty raw -echo; exec cat"]),
        )
        .await?;
        let mut writer = terminal.take_input().context("no input")?;
        let mut reader = terminal.take_output().context("no output")?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut times = Vec::new();
        let mut byte = [0u8; 1];
        for i in 0..KEYS {
            let key = b'a' + (i % 26) as u8;
            let started = Instant::now();
            writer.write_all(&[key]).await?;
            loop {
                reader.read_exact(&mut byte).await?;
                if byte[0] == key {
                    break;
                }
            }
            times.push(started.elapsed());
        }
        times.sort();
        println!(
            "keystroke round trip (bwrap PTY), p50/p95  {:>6.3} / {:.3} ms                         ≤ 5 ms",
            percentile(&times, 0.5).as_secs_f64() * 1000.0,
            percentile(&times, 0.95).as_secs_f64() * 1000.0
        );
        writer.write_all(&[4u8]).await?;
        drop(writer);
        let _ = tokio::time::timeout(Duration::from_secs(5), terminal.wait()).await;
        terminal.close().await?;
        Ok(())
    }
}

#[cfg(target_os = "linux")]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    linux::run_all().await
}

#[cfg(not(target_os = "linux"))]
fn main() -> anyhow::Result<()> {
    anyhow::bail!("the project benchmark runs bubblewrap sandboxes: Linux only")
}
