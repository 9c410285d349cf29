//! Linux runtime on bubblewrap namespaces.
//!
//! Not available yet: this crate has no substrate to offer. It will hold a pure argv builder
//! (compiled and snapshot-tested on every OS) and a Linux-only launcher.
#![deny(missing_docs)]
