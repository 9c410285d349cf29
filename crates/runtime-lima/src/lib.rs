//! Runtime for Lima VMs (macOS and Linux).
//!
//! Not available yet: this crate has no substrate to offer. It will hold argv builders for
//! `limactl` (compiled and snapshot-tested on every OS) and a VM lifecycle over SSH.
#![deny(missing_docs)]
