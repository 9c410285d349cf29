//! The CLI's option parsers: the library's, as clap value parsers.

pub use computeragent::parse::{bytes, cpus, limits, network};
