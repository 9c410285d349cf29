//! The guest simulator, one binary for every simulated tool: it acts as the tool it is called
//! as (`tart`, `limactl`, `container`; see `substrate_testkit::guestsim`).

fn main() {
    let mut args = std::env::args();
    let called = args
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let code = match called.as_str() {
        "tart" => substrate_testkit::guestsim::tart::main(rest),
        "limactl" => substrate_testkit::guestsim::lima::main(rest),
        "container" => substrate_testkit::guestsim::container::main(rest),
        other => {
            eprintln!(
                "guest-sim: called as {other:?}; link it as `tart`, `limactl` or `container`"
            );
            64
        }
    };
    std::process::exit(code);
}
