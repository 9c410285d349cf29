//! Runtime for Tart VMs on Apple Silicon.
//!
//! Not available yet: this crate has no substrate to offer. It will hold argv builders for the
//! `tart` CLI (compiled and snapshot-tested on every OS) and a VM lifecycle over SSH.
#![deny(missing_docs)]
