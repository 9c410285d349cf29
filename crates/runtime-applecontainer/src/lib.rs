//! Runtime for Apple's `container` CLI (one lightweight VM per container, macOS 26+).
//!
//! Not available yet: this crate has no substrate to offer. It will hold argv builders for
//! `container` (compiled and snapshot-tested on every OS) and a container lifecycle.
#![deny(missing_docs)]
