//! The core of the substrates: the [`Substrate`] trait a runtime implements, the [`BootSpec`]
//! a caller hands it, the one [`Error`] type, argv as data ([`CommandSpec`]), and harness
//! protocol v1 ([`protocol`] types and the async [`HarnessClient`]).
//!
//! This crate never spawns a process and has no platform code: runtimes do that.
#![deny(missing_docs)]

pub mod archive;
pub mod audit;
pub mod boot;
pub mod client;
pub mod command;
pub mod credential;
pub mod error;
pub mod protocol;
#[cfg(unix)]
pub mod pty;
pub mod secret;
pub mod substrate;
pub mod terminal;

pub use audit::{
    AuditSink, BoundaryEvent, BrokerRequest, EgressDecision, ExitReason, Limit, LimitHit,
    ProcessExit, TeardownReport,
};
pub use boot::{
    BootEvent, BootPhase, BootSpec, NetworkPolicy, PhaseDeadlines, PhaseProbe, ProgressSink,
    ResourceLimits, WorkdirPolicy,
};
pub use client::{ChatSession, EventStream, HarnessClient};
pub use command::CommandSpec;
pub use credential::{BrokeredUpstream, CredentialHeader, CredentialMode};
pub use error::{Error, ErrorKind, Result, SshFailure};
pub use secret::{EnvValue, EnvVars, Secret};
pub use substrate::{
    BootedHarness, Capabilities, CommandEnd, Endpoint, Isolation, OutputStream, SandboxProcess,
    Substrate, SubstrateKind, Teardown,
};
pub use terminal::{
    InputStream, Resizer, Terminal, TerminalHost, TerminalRequest, TerminalSandbox, TerminalSize,
};
