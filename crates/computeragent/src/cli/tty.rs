//! The caller's terminal while a session is attached to it: raw mode restored on every way
//! out, the keys read on a thread that can be stopped (so a prompt after the session gets
//! every key typed at it), and the signals that end a session from outside.

use std::os::fd::OwnedFd;
use std::sync::Mutex;

use rustix::event::{PollFd, PollFlags, poll};
use rustix::termios::{OptionalActions, Termios, tcgetattr, tcsetattr};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// The caller's terminal settings before raw mode, for whoever restores them first.
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

fn restore() {
    if let Ok(mut saved) = SAVED.lock()
        && let Some(termios) = saved.take()
    {
        let _ = tcsetattr(std::io::stdin(), OptionalActions::Now, &termios);
    }
}

/// Raw mode on stdin's terminal until dropped (and on a panic, by the panic hook).
pub(crate) struct RawMode;

impl RawMode {
    /// Enters raw mode. Take [`SessionSignals::watch`] first, so that a signal arriving at
    /// any moment of raw mode ends the session through the path that restores the terminal.
    pub(crate) fn enter(_watched: &SessionSignals) -> computeragent::Result<Self> {
        let original = tcgetattr(std::io::stdin())
            .map_err(|e| computeragent::Error::io("read the terminal's settings", e.into()))?;
        let mut raw = original.clone();
        raw.make_raw();
        if let Ok(mut saved) = SAVED.lock() {
            *saved = Some(original);
        }
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        tcsetattr(std::io::stdin(), OptionalActions::Now, &raw)
            .map_err(|e| computeragent::Error::io("make the terminal raw", e.into()))?;
        Ok(Self)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

/// The caller's keys, read from stdin on a plain thread (a blocking read cannot be cancelled)
/// and sent on as they come, until [`KeyReader::stop`]. The thread reads the descriptor itself,
/// never through std's buffered, locked `Stdin`, and waits in `poll` beside a stop pipe: once
/// stopped it has read its last key, so whatever asks the person something next reads every
/// key typed at it.
pub(crate) struct KeyReader {
    stop: Option<OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KeyReader {
    /// Starts reading; each chunk of keys goes to `keys`.
    pub(crate) fn spawn(keys: tokio::sync::mpsc::Sender<Vec<u8>>) -> computeragent::Result<Self> {
        let (stop_read, stop_write) = rustix::pipe::pipe()
            .map_err(|e| computeragent::Error::io("create the key reader's stop pipe", e.into()))?;
        let thread = std::thread::Builder::new()
            .name("keys".into())
            .spawn(move || read_keys(&stop_read, &keys))
            .map_err(|e| computeragent::Error::io("start the key reader", e))?;
        Ok(Self {
            stop: Some(stop_write),
            thread: Some(thread),
        })
    }

    /// Stops the reader and waits until it has read its last key.
    pub(crate) async fn stop(mut self) {
        // Closing the pipe's write end wakes the thread's poll.
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for KeyReader {
    fn drop(&mut self) {
        // A reader never stopped (an early return) ends at its next wake-up.
        self.stop.take();
    }
}

fn read_keys(stop: &OwnedFd, keys: &tokio::sync::mpsc::Sender<Vec<u8>>) {
    let stdin = std::io::stdin();
    let mut buf = [0u8; 4096];
    loop {
        let mut fds = [
            PollFd::new(&stdin, PollFlags::IN),
            PollFd::new(stop, PollFlags::IN),
        ];
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return,
        }
        // Stopping wins over keys that are ready: they belong to whatever reads next.
        if !fds[1].revents().is_empty() {
            return;
        }
        if fds[0].revents().is_empty() {
            continue;
        }
        match rustix::io::read(&stdin, &mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if keys.blocking_send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {}
            Err(_) => return,
        }
    }
}

/// What a session's signals say.
pub(crate) enum SessionSignal {
    /// The caller's terminal changed size.
    Resized,
    /// A signal from outside ends the session (the terminal's own Ctrl-C is a byte for the
    /// program inside, never a signal here).
    Ended {
        /// Its name, for the message.
        name: &'static str,
        /// The exit status a shell gives for it (128 + its number).
        code: u8,
    },
}

/// The signals a session watches: window changes, and SIGTERM, SIGHUP and SIGINT, which end it.
pub(crate) struct SessionSignals {
    resized: Signal,
    term: Signal,
    hangup: Signal,
    interrupt: Signal,
}

impl SessionSignals {
    /// Starts watching (from here on these signals no longer kill the process).
    pub(crate) fn watch() -> computeragent::Result<Self> {
        let watch = |kind| signal(kind).map_err(|e| computeragent::Error::io("watch signals", e));
        Ok(Self {
            resized: watch(SignalKind::window_change())?,
            term: watch(SignalKind::terminate())?,
            hangup: watch(SignalKind::hangup())?,
            interrupt: watch(SignalKind::interrupt())?,
        })
    }

    /// The next signal.
    pub(crate) async fn next(&mut self) -> SessionSignal {
        let ended = |name, number: u8| SessionSignal::Ended {
            name,
            code: 128 + number,
        };
        tokio::select! {
            _ = self.resized.recv() => SessionSignal::Resized,
            _ = self.term.recv() => ended("SIGTERM", 15),
            _ = self.hangup.recv() => ended("SIGHUP", 1),
            _ = self.interrupt.recv() => ended("SIGINT", 2),
        }
    }
}
