//! Runnable examples; see `examples/examples/` and run one with
//! `cargo run -p substrate-examples --example NAME`.
