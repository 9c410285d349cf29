//! Interactive programs: one program on a terminal of its own in a fresh sandbox — a login
//! shell, Claude Code's own interface. The caller holds the terminal's other side (what the
//! program prints, what a person types, the window size); the program never gets the
//! caller's own terminal, so nothing it does (`TIOCSTI` among others) reaches the caller's
//! session.
//!
//! Every runtime that can do it hands back the same [`Terminal`]: bwrap puts the program on a
//! PTY pair the host owns; the VM runtimes on an SSH PTY channel.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;

use crate::substrate::{CommandEnd, OutputStream};
use crate::{Error, Result};

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

impl Default for TerminalSize {
    fn default() -> Self {
        Self { rows: 24, cols: 80 }
    }
}

/// A byte stream into a sandboxed program (what a person types).
pub type InputStream = Pin<Box<dyn tokio::io::AsyncWrite + Send>>;

/// What to run on a terminal, and on what.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TerminalRequest {
    /// The program and its arguments.
    pub argv: Vec<OsString>,
    /// The terminal's size at start.
    pub size: TerminalSize,
    /// The terminal type the program sees (`TERM`).
    pub term: String,
    /// A host directory whose tree is put into the workdir before the program starts.
    pub seed: Option<PathBuf>,
    /// Whether the seed is handed over: the runtime may then move its entries into the
    /// workdir instead of copying them (a local runtime on the same filesystem does), so a
    /// large project is copied once, and its files keep the inodes a change set's rescan
    /// knows them by. The caller must not count on the directory's content afterwards.
    pub move_seed: bool,
}

impl TerminalRequest {
    /// `argv` on an 80×24 `xterm-256color` terminal, in an empty workdir.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Self {
            argv: argv.into_iter().map(Into::into).collect(),
            size: TerminalSize::default(),
            term: "xterm-256color".into(),
            seed: None,
            move_seed: false,
        }
    }

    /// The size at start.
    pub fn size(mut self, size: TerminalSize) -> Self {
        self.size = size;
        self
    }

    /// The terminal type.
    pub fn term(mut self, term: impl Into<String>) -> Self {
        self.term = term.into();
        self
    }

    /// The directory copied into the workdir first.
    pub fn seed(mut self, dir: impl Into<PathBuf>) -> Self {
        self.seed = Some(dir.into());
        self.move_seed = false;
        self
    }

    /// The directory handed over to the workdir: its entries are moved there where the
    /// runtime can (else copied), and it is left empty or as it was.
    pub fn seed_moved(mut self, dir: impl Into<PathBuf>) -> Self {
        self.seed = Some(dir.into());
        self.move_seed = true;
        self
    }

    /// Refuses a request with no program.
    pub fn check(&self) -> Result<()> {
        if self.argv.is_empty() {
            return Err(Error::invalid("terminal", "no program given"));
        }
        Ok(())
    }
}

/// Passes a new window size on to the program (it gets `SIGWINCH`). Cheap to clone, usable
/// while another task waits for the program.
#[derive(Clone)]
pub struct Resizer(Arc<dyn Fn(TerminalSize) -> Result<()> + Send + Sync>);

impl Resizer {
    /// A resizer that calls `resize`.
    pub fn new(resize: impl Fn(TerminalSize) -> Result<()> + Send + Sync + 'static) -> Self {
        Self(Arc::new(resize))
    }

    /// Tells the program its terminal is now `size`.
    pub fn resize(&self, size: TerminalSize) -> Result<()> {
        (self.0)(size)
    }
}

impl fmt::Debug for Resizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Resizer")
    }
}

/// The sandbox side of a [`Terminal`]: what each runtime implements.
#[async_trait]
pub trait TerminalSandbox: Send + fmt::Debug {
    /// Waits for the program to end. The sandbox stays, so that its workdir can be read.
    /// Cancel-safe: a wait given up (in a `select!` beside a resize, say) leaves the program
    /// running, and the next wait picks it up.
    async fn wait(&mut self) -> Result<CommandEnd>;

    /// A host directory holding the workdir's tree (once the program ended, or as it is at
    /// that moment when asked through [`Terminal::workdir_as_it_is_now`]): the workdir itself
    /// where it is a host directory, else a copy made under `scratch` (an empty directory the
    /// caller owns). Entries that could lead outside (absolute or `..` names, links out of the
    /// tree's root in the copy's path) are never written outside `scratch`.
    async fn workdir_on_host(&mut self, scratch: &Path) -> Result<PathBuf>;

    /// Ends the program if it still runs and removes the sandbox and its workdir. Idempotent.
    async fn close(&mut self) -> Result<()>;
}

/// Opens terminals inside one booted sandbox (beside its harness): what a runtime attaches to
/// a [`crate::BootedHarness`] when it can. Closing such a terminal ends its program, not the
/// sandbox.
#[async_trait]
pub trait TerminalHost: Send + Sync + fmt::Debug {
    /// Starts `request`'s program in the sandbox, in the harness's workdir root.
    async fn open_terminal(&self, request: TerminalRequest) -> Result<Terminal>;
}

/// A program on a terminal in a sandbox of its own.
///
/// Read what it prints from [`Terminal::take_output`], write keys to
/// [`Terminal::take_input`], pass window sizes through [`Terminal::resizer`], then
/// [`Terminal::wait`] for its exit and [`Terminal::close`] the sandbox. Dropping it without
/// closing removes the sandbox on a best-effort basis.
pub struct Terminal {
    output: Option<OutputStream>,
    input: Option<InputStream>,
    resizer: Resizer,
    sandbox: Box<dyn TerminalSandbox>,
    end: Option<CommandEnd>,
}

impl fmt::Debug for Terminal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Terminal")
            .field("sandbox", &self.sandbox)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl Terminal {
    /// Assembled by a runtime once the program started.
    pub fn new(
        output: OutputStream,
        input: InputStream,
        resizer: Resizer,
        sandbox: Box<dyn TerminalSandbox>,
    ) -> Self {
        Self {
            output: Some(output),
            input: Some(input),
            resizer,
            sandbox,
            end: None,
        }
    }

    /// What the program prints (its stdout and stderr, as a terminal mixes them), once. Ends
    /// when the program and everything it started closed the terminal.
    pub fn take_output(&mut self) -> Option<OutputStream> {
        self.output.take()
    }

    /// Where keys go, once.
    pub fn take_input(&mut self) -> Option<InputStream> {
        self.input.take()
    }

    /// A handle that passes window sizes on.
    pub fn resizer(&self) -> Resizer {
        self.resizer.clone()
    }

    /// Waits for the program to end; again after that, returns the same end. Cancel-safe.
    pub async fn wait(&mut self) -> Result<CommandEnd> {
        if let Some(end) = self.end {
            return Ok(end);
        }
        let end = self.sandbox.wait().await?;
        self.end = Some(end);
        Ok(end)
    }

    /// A host directory with the workdir's tree, once the program ended (see
    /// [`TerminalSandbox::workdir_on_host`]).
    pub async fn workdir_on_host(&mut self, scratch: &Path) -> Result<PathBuf> {
        if self.end.is_none() {
            return Err(Error::invalid(
                "terminal",
                "the workdir is read once the program ended; wait for it first",
            ));
        }
        self.sandbox.workdir_on_host(scratch).await
    }

    /// A host directory with the workdir's tree as it is now, while the program may still
    /// run: for a session ended from outside, which keeps what it can of the program's work
    /// before the sandbox goes. A file the program is writing at that moment may be partial.
    pub async fn workdir_as_it_is_now(&mut self, scratch: &Path) -> Result<PathBuf> {
        self.sandbox.workdir_on_host(scratch).await
    }

    /// Ends the program if it still runs and removes the sandbox.
    pub async fn close(mut self) -> Result<()> {
        self.sandbox.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_without_a_program_is_refused() {
        let empty: [&str; 0] = [];
        let err = TerminalRequest::new(empty).check().unwrap_err();
        assert!(err.to_string().contains("no program"), "{err}");
        assert!(TerminalRequest::new(["sh"]).check().is_ok());
    }

    #[test]
    fn a_resizer_reaches_its_target() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let resizer = Resizer::new(move |size| {
            sink.lock().unwrap().push(size);
            Ok(())
        });
        resizer
            .clone()
            .resize(TerminalSize { rows: 5, cols: 7 })
            .unwrap();
        assert_eq!(*seen.lock().unwrap(), [TerminalSize { rows: 5, cols: 7 }]);
    }
}
