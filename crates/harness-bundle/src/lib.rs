//! The harness bundle.
#![deny(missing_docs)]
