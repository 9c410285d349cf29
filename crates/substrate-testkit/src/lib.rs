//! Test support for substrates: a scripted Messages API server, a host-process launcher for the
//! real harness, and the protocol v1 conformance suite.
#![deny(missing_docs)]
