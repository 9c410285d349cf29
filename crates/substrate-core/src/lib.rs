//! Core of the substrates.
#![deny(missing_docs)]
