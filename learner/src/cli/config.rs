//! `asrl-learner config`: the resolved config (defaults filled in), whole or one field, for
//! users checking what a file means and for scripts (`scripts/launch.sh` reads the devices).

use std::path::PathBuf;

use anyhow::{bail, Context};
use asrl_common::config::AsrlConfig;
use clap::Args;

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Run config (TOML).
    #[arg(long)]
    pub config: PathBuf,
    /// Print only this field, by its dotted path (e.g. `workers.devices`, `run.dir`). Arrays
    /// print one element per line.
    #[arg(long)]
    pub get: Option<String>,
}

pub fn run(args: ConfigArgs) -> anyhow::Result<()> {
    // Printed output ends up in logs and terminals: never the token.
    let cfg = AsrlConfig::load(&args.config)?.redacted();
    let Some(path) = &args.get else {
        print!("{}", cfg.to_toml_string()?);
        return Ok(());
    };
    let root = toml::Value::try_from(&cfg).context("serialising the config")?;
    let mut value = &root;
    for key in path.split('.') {
        value = match value.get(key) {
            Some(v) => v,
            None => bail!("--get {path}: no field `{key}` in {}", args.config.display()),
        };
    }
    match value {
        toml::Value::String(s) => println!("{s}"),
        toml::Value::Array(items) => {
            for item in items {
                match item {
                    toml::Value::String(s) => println!("{s}"),
                    other => println!("{other}"),
                }
            }
        }
        toml::Value::Table(t) => print!("{}", toml::to_string_pretty(t)?),
        other => println!("{other}"),
    }
    Ok(())
}
