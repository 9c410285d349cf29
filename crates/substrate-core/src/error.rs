//! The one error type of every substrate, with stable kinds.

use std::time::Duration;

use crate::boot::BootPhase;

/// The result type of this crate and of every runtime.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while booting, driving or tearing down a substrate.
///
/// Messages name what failed and, where there is one, what to do about it. Match on
/// [`Error::kind`] rather than on message text: kinds are stable, messages are for people.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The runtime cannot work on this host (wrong OS, feature not compiled in, …).
    #[error("{what} is not supported here: {reason}")]
    Unsupported {
        /// What was asked for.
        what: String,
        /// Why it cannot work here, and what works instead.
        reason: String,
    },
    /// A tool the runtime needs is missing.
    #[error("{tool} is not installed or not usable: {hint}")]
    NotInstalled {
        /// The missing tool.
        tool: String,
        /// How to install it.
        hint: String,
    },
    /// A boot phase did not finish before its own deadline.
    #[error("boot phase `{phase}` did not finish within {deadline:?}; last seen: {last_seen}")]
    BootTimeout {
        /// The phase whose deadline expired.
        phase: BootPhase,
        /// That phase's deadline.
        deadline: Duration,
        /// The last thing the phase observed before giving up.
        last_seen: String,
    },
    /// A process exited unsuccessfully.
    #[error("`{command}` failed ({status}){}", stderr_suffix(.stderr))]
    ProcessFailed {
        /// The command, shell-escaped, for people to read (never carries secrets).
        command: String,
        /// How it ended (`exit status: 1`, `signal: 9`, …).
        status: String,
        /// The tail of its standard error.
        stderr: String,
    },
    /// The harness answered with a protocol error envelope.
    #[error("harness answered {status} {code}: {message}")]
    Protocol {
        /// HTTP status.
        status: u16,
        /// The stable protocol error code (`VALIDATION`, `NOT_FOUND`, …).
        code: String,
        /// The harness's message.
        message: String,
        /// Extra details, when the harness sent some.
        details: Option<serde_json::Value>,
    },
    /// The harness could not be reached or the connection broke.
    #[error("cannot talk to the harness at {endpoint}: {reason}")]
    Transport {
        /// The endpoint tried.
        endpoint: String,
        /// What went wrong.
        reason: String,
    },
    /// The caller passed something invalid.
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// What was invalid.
        what: String,
        /// Why, and what a valid value looks like.
        reason: String,
    },
    /// The harness sent something this client does not understand.
    #[error("unexpected answer from the harness: {0}")]
    Decode(String),
    /// The harness was already shut down.
    #[error("the harness was already shut down")]
    ShutDown,
    /// A boot phase failed (other than by its deadline, which is [`Error::BootTimeout`]).
    #[error("boot phase `{phase}` failed: {source}")]
    Phase {
        /// The phase that failed.
        phase: BootPhase,
        /// What went wrong in it (shown in the message, so not also a `source()`).
        source: Box<Error>,
    },
    /// An SSH connection to a guest failed.
    #[error("ssh {target}: {failure}: {reason}")]
    Ssh {
        /// `user@host:port`.
        target: String,
        /// Which step failed.
        failure: SshFailure,
        /// What happened, and what to do about it.
        reason: String,
    },
    /// A filesystem or process I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    let trimmed = stderr.trim();
    if trimmed.is_empty() {
        String::new()
    } else {
        format!(": {trimmed}")
    }
}

/// Which step of an SSH connection failed.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SshFailure {
    /// The TCP connection or the SSH handshake.
    Connect,
    /// The guest presented a host key the policy does not accept.
    HostKey,
    /// The guest refused every credential offered.
    Auth,
    /// A channel (exec, SFTP, forward) failed on an established connection.
    Channel,
}

impl std::fmt::Display for SshFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SshFailure::Connect => "cannot connect",
            SshFailure::HostKey => "host key refused",
            SshFailure::Auth => "authentication refused",
            SshFailure::Channel => "channel failed",
        })
    }
}

/// Stable classification of an [`Error`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// See [`Error::Unsupported`].
    Unsupported,
    /// See [`Error::NotInstalled`].
    NotInstalled,
    /// See [`Error::BootTimeout`].
    BootTimeout,
    /// See [`Error::ProcessFailed`].
    ProcessFailed,
    /// See [`Error::Protocol`].
    Protocol,
    /// See [`Error::Transport`].
    Transport,
    /// See [`Error::InvalidInput`].
    InvalidInput,
    /// See [`Error::Decode`].
    Decode,
    /// See [`Error::ShutDown`].
    ShutDown,
    /// See [`Error::Io`].
    Io,
    /// See [`Error::Ssh`].
    Ssh(SshFailure),
}

impl Error {
    /// The stable kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::NotInstalled { .. } => ErrorKind::NotInstalled,
            Error::BootTimeout { .. } => ErrorKind::BootTimeout,
            Error::ProcessFailed { .. } => ErrorKind::ProcessFailed,
            Error::Protocol { .. } => ErrorKind::Protocol,
            Error::Transport { .. } => ErrorKind::Transport,
            Error::InvalidInput { .. } => ErrorKind::InvalidInput,
            Error::Decode(_) => ErrorKind::Decode,
            Error::ShutDown => ErrorKind::ShutDown,
            Error::Io { .. } => ErrorKind::Io,
            Error::Phase { source, .. } => source.kind(),
            Error::Ssh { failure, .. } => ErrorKind::Ssh(*failure),
        }
    }

    /// The boot phase this error happened in, when it happened during a boot.
    pub fn phase(&self) -> Option<BootPhase> {
        match self {
            Error::Phase { phase, .. } | Error::BootTimeout { phase, .. } => Some(*phase),
            _ => None,
        }
    }

    /// Tags the error with the boot phase it happened in (once: an error that already names a
    /// phase keeps it).
    pub fn in_phase(self, phase: BootPhase) -> Self {
        if self.phase().is_some() {
            self
        } else {
            Error::Phase {
                phase,
                source: Box::new(self),
            }
        }
    }

    /// The protocol error code, when this is a [`Error::Protocol`].
    pub fn protocol_code(&self) -> Option<&str> {
        match self {
            Error::Protocol { code, .. } => Some(code),
            Error::Phase { source, .. } => source.protocol_code(),
            _ => None,
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// An [`Error::InvalidInput`].
    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_failed_message_carries_command_status_and_stderr() {
        let err = Error::ProcessFailed {
            command: "bwrap --unshare-all 'a b'".into(),
            status: "exit status: 1".into(),
            stderr: "bwrap: No permissions\n".into(),
        };
        assert_eq!(
            err.to_string(),
            "`bwrap --unshare-all 'a b'` failed (exit status: 1): bwrap: No permissions"
        );
        assert_eq!(err.kind(), ErrorKind::ProcessFailed);
    }

    #[test]
    fn boot_timeout_names_phase_and_last_seen() {
        let err = Error::BootTimeout {
            phase: BootPhase::Health,
            deadline: Duration::from_secs(5),
            last_seen: "connection refused".into(),
        };
        assert_eq!(
            err.to_string(),
            "boot phase `health` did not finish within 5s; last seen: connection refused"
        );
    }
}
