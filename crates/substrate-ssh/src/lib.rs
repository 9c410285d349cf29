#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod auth;
pub mod guest;
pub mod host_cli;
pub mod host_key;
pub mod session;
pub mod terminal;

pub use auth::SshAuth;
pub use host_key::{HostKeyPolicy, fingerprint};
pub use session::{
    ForwardTarget, LocalForward, OutputStream, RemoteOutput, RemotePty, RemoteStatus, SshSession,
    SshTarget,
};
