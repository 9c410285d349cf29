//! The interactive-terminal check every runtime with terminals passes: a program on a fresh
//! PTY in a seeded workdir sees its size, follows a resize, reads what is typed, gets Ctrl-C
//! as SIGINT from its terminal, survives a wait given up, and its exit code and the files it
//! made come back.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use substrate_core::{BootSpec, Substrate, TerminalRequest, TerminalSize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The program: prints its size and the seed's file, answers `size` lines until `done`,
/// writes a file, then waits for SIGINT and exits 7 from its trap.
const PROGRAM: &str = r#"stty size
cat hello.txt
while IFS= read -r line; do
  case "$line" in
    size) stty size ;;
    done) break ;;
  esac
done
printf new > made.txt
trap 'echo caught-int; exit 7' INT
echo ready-for-int
while :; do sleep 0.1; done
"#;

/// Output collected as it arrives.
#[derive(Clone, Default)]
struct Screen(Arc<Mutex<Vec<u8>>>);

impl Screen {
    fn text(&self) -> String {
        self.0
            .lock()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    async fn wait_for(&self, needle: &str, limit: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        while !self.text().contains(needle) {
            if started.elapsed() > limit {
                bail!(
                    "`{needle}` never appeared; the terminal shows:\n{}",
                    self.text()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

/// Runs the check on `substrate` with `spec`; `scratch` is an empty directory for a copy of
/// the workdir. Closes the terminal at the end (the caller then checks nothing is left).
pub async fn check_terminal(
    substrate: &dyn Substrate,
    spec: &BootSpec,
    scratch: &Path,
) -> anyhow::Result<()> {
    let seed = scratch.join("seed");
    std::fs::create_dir_all(&seed)?;
    std::fs::write(seed.join("hello.txt"), "hello from the host\n")?;
    let request = TerminalRequest::new(["sh", "-c", PROGRAM])
        .size(TerminalSize {
            rows: 30,
            cols: 100,
        })
        .seed(&seed);
    let mut terminal = substrate
        .open_terminal(spec, request)
        .await
        .context("open the terminal")?;
    let mut output = terminal.take_output().context("no output stream")?;
    let mut input = terminal.take_input().context("no input stream")?;
    let screen = Screen::default();
    let sink = screen.clone();
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n) = output.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if let Ok(mut screen) = sink.0.lock() {
                screen.extend_from_slice(&buf[..n]);
            }
        }
    });
    let limit = Duration::from_secs(20);
    screen.wait_for("30 100", limit).await?;
    screen.wait_for("hello from the host", limit).await?;

    // A resize reaches the program: ask for its size until the new one shows.
    terminal.resizer().resize(TerminalSize {
        rows: 40,
        cols: 120,
    })?;
    let started = Instant::now();
    while !screen.text().contains("40 120") {
        ensure!(
            started.elapsed() < limit,
            "the resize never reached the program:\n{}",
            screen.text()
        );
        input.write_all(b"size\n").await?;
        input.flush().await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    input.write_all(b"done\n").await?;
    input.flush().await?;
    screen.wait_for("ready-for-int", limit).await?;
    // A wait given up leaves the program running: the next one picks it up.
    ensure!(
        tokio::time::timeout(Duration::from_millis(300), terminal.wait())
            .await
            .is_err(),
        "the program ended before Ctrl-C"
    );

    // Ctrl-C is a byte on the terminal; its line discipline makes it SIGINT for the program.
    input.write_all(&[0x03]).await?;
    input.flush().await?;
    let end = tokio::time::timeout(limit, terminal.wait())
        .await
        .context("the program did not end after Ctrl-C")??;
    let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
    ensure!(
        screen.text().contains("caught-int"),
        "SIGINT did not reach the program's trap:\n{}",
        screen.text()
    );
    ensure!(end.code == Some(7), "exit code {:?}, not 7", end.code);

    let copy = scratch.join("copy");
    std::fs::create_dir_all(&copy)?;
    let workdir = terminal
        .workdir_on_host(&copy)
        .await
        .context("read the workdir")?;
    ensure!(
        std::fs::read_to_string(workdir.join("made.txt"))? == "new",
        "made.txt did not come back"
    );
    ensure!(
        std::fs::read_to_string(workdir.join("hello.txt"))? == "hello from the host\n",
        "the seed did not reach the workdir"
    );
    terminal.close().await.context("close the terminal")?;
    Ok(())
}

/// Opens a terminal beside `harness`'s engine and checks it runs, reports its exit, and that
/// closing it leaves the harness serving.
pub async fn check_booted_terminal(harness: &substrate_core::BootedHarness) -> anyhow::Result<()> {
    let mut terminal = harness
        .open_terminal(TerminalRequest::new([
            "sh",
            "-c",
            "echo booted-$((6 * 7)) as=$(id -un); exit 4",
        ]))
        .await
        .context("open a terminal in the booted sandbox")?;
    let mut output = terminal.take_output().context("no output stream")?;
    let _input = terminal.take_input();
    let end = tokio::time::timeout(Duration::from_secs(20), terminal.wait())
        .await
        .context("the program never ended")??;
    let mut text = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), output.read_to_string(&mut text)).await;
    ensure!(
        end.code == Some(4),
        "exit code {:?}, not 4: {text}",
        end.code
    );
    ensure!(
        text.contains("booted-42"),
        "the program's output is missing: {text}"
    );
    terminal.close().await?;
    harness
        .client()?
        .health()
        .await
        .context("the harness after the terminal closed")?;
    Ok(())
}
