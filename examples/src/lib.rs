//! Runnable examples live under `examples/`.
