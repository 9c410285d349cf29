//! `cfg(tart_runtime)`: the tart runtime is offered, on macOS with the `tart` feature or on
//! any OS with `tart-on-any-os` (driving whatever `tart` is on PATH: a simulator's);
//! `cfg(container_runtime)` the same for Apple's `container`.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(tart_runtime)");
    println!("cargo::rustc-check-cfg=cfg(container_runtime)");
    let feature = |name: &str| std::env::var_os(format!("CARGO_FEATURE_{name}")).is_some();
    let macos = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "macos");
    if (feature("TART") && macos) || feature("TART_ON_ANY_OS") {
        println!("cargo::rustc-cfg=tart_runtime");
    }
    if (feature("APPLE_CONTAINER") && macos) || feature("APPLE_CONTAINER_ON_ANY_OS") {
        println!("cargo::rustc-cfg=container_runtime");
    }
}
