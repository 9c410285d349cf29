//! Test support for substrates: a scripted Anthropic Messages API server ([`model`]), the
//! `local` substrate that runs the real harness as a host process ([`local`]), staging of the
//! harness's node_modules ([`stage`]), and the protocol v1 conformance suite
//! ([`conformance`], expanded per runtime with [`conformance_suite!`]).
#![deny(missing_docs)]

pub mod conformance;
pub mod dns;
pub mod egress_conformance;
pub mod guestsim;
pub use runtime_local as local;
pub use scripted_model as model;
pub mod netns;
pub mod stage;
pub mod terminal;
