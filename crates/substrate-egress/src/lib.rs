//! The egress proxy of the `allow` network policy.
//!
//! A sandbox has no route out. Under `NetworkPolicy::Allow`, its clients speak HTTP proxy
//! (CONNECT tunnels and plain-HTTP forwarding) to this proxy, which runs in the host process on
//! a Unix socket the runtime makes reachable from inside. The proxy checks every target against
//! the domain rules (exact names and `*.suffix`), resolves allowed names itself, connects, and
//! reports every decision — allowed or denied, with bytes and duration — as a
//! [`substrate_core::BoundaryEvent`].
#![deny(missing_docs)]

mod policy;
mod proxy;

pub use policy::{DomainRule, EgressPolicy};
pub use proxy::{EgressProxy, ProxyConfig};
