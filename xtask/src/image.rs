//! `cargo xtask image [--out DIR] [--no-build]`: the harness image for Apple's `container`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use runtime_applecontainer::{Container, ImageRecipe};

use crate::workspace_root;

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut out = workspace_root().join("target/container-image");
    let mut build = true;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--out" => {
                out = PathBuf::from(it.next().context("--out needs a directory")?);
            }
            "--no-build" => build = false,
            other => bail!(
                "unknown argument `{other}` (usage: cargo xtask image [--out DIR] [--no-build])"
            ),
        }
    }
    let recipe = ImageRecipe::for_this_build();
    let file = recipe
        .write_context(&out)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "wrote the build context of {} to {}",
        recipe.tag,
        out.display()
    );
    if !build {
        return Ok(());
    }
    let cli = Container::new("container");
    let cmd = cli.build(&recipe.tag, &file, &out);
    match cmd.to_command().status() {
        Ok(status) if status.success() => {
            println!("built {}", recipe.tag);
            Ok(())
        }
        Ok(status) => bail!("`{cmd}` failed ({status})"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!(
                "Apple's `container` is not installed here: the image is not built. On macOS 26 \
                 or later run `{cmd}` (or this command again)"
            );
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("run `{cmd}`")),
    }
}
