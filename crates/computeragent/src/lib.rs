#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod agent;
pub mod parse;
pub mod project;
pub mod runtime;
#[cfg(feature = "server")]
pub mod server;
pub mod stage;
pub mod terminal;

pub use agent::{Agent, AgentBuilder, Source, TaskResult};
pub use runtime::{Availability, ProjectMount, RuntimeConfig, RuntimeName};
pub use substrate_core::{
    self as core, BootSpec, Error, ErrorKind, NetworkPolicy, ResourceLimits, Result, Substrate,
};
