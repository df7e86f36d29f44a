//! `--config FILE` for the services: a YAML mapping of flag names to values
//! (`bus: nats://nats:4222`, `concurrency: 4`). Flags on the command line win, then
//! environment variables, then the file, then the defaults; the file's settings become
//! flags placed before the user's own.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::ArgAction;
use serde_json::Value;

/// The file named by `--config FILE`, `--config=FILE` or `CTFLOW_CONFIG`.
fn config_path(args: &[OsString]) -> Option<OsString> {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--config" {
            return iter.next().cloned();
        }
        if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            return Some(path.into());
        }
    }
    std::env::var_os("CTFLOW_CONFIG")
}

fn scalar(key: &str, value: &Value) -> Result<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => bail!("the setting '{key}' must be a string, a number or a boolean"),
    }
}

/// Reads a config file into flags for `subcommand`.
fn flags_from_file(
    subcommand: &clap::Command,
    path: &Path,
    given: &[OsString],
) -> Result<Vec<OsString>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let settings: serde_json::Map<String, Value> = if text.trim().is_empty() {
        serde_json::Map::new()
    } else {
        serde_saphyr::from_str(&text)
            .with_context(|| format!("{} is not a YAML mapping of settings", path.display()))?
    };
    let mut flags = Vec::new();
    for (key, value) in settings {
        let long = key.replace('_', "-");
        let Some(arg) = subcommand
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()) && long != "config")
        else {
            let known: Vec<&str> = subcommand
                .get_arguments()
                .filter_map(|a| a.get_long())
                .filter(|l| *l != "config" && *l != "help")
                .collect();
            bail!(
                "{}: unknown setting '{key}' for `ctflow {}` (known: {})",
                path.display(),
                subcommand.get_name(),
                known.join(", ")
            );
        };
        let flag = format!("--{long}");
        let on_command_line = given.iter().any(|a| {
            a.to_str()
                .is_some_and(|a| a == flag || a.starts_with(&format!("{flag}=")))
        });
        let in_environment = arg
            .get_env()
            .is_some_and(|name| std::env::var_os(name).is_some());
        if on_command_line || in_environment {
            continue;
        }
        let values = match &value {
            Value::Array(items) => items.clone(),
            Value::Null => Vec::new(),
            other => vec![other.clone()],
        };
        for item in values {
            if matches!(arg.get_action(), ArgAction::SetTrue) {
                match item {
                    Value::Bool(true) => flags.push(OsString::from(&flag)),
                    Value::Bool(false) => {}
                    _ => bail!("{}: the setting '{key}' is true or false", path.display()),
                }
            } else {
                flags.push(OsString::from(format!("{flag}={}", scalar(&key, &item)?)));
            }
        }
    }
    Ok(flags)
}

/// The command line with a config file's settings added, for the subcommands that
/// take `--config`.
pub fn with_config_file(command: &clap::Command, args: Vec<OsString>) -> Result<Vec<OsString>> {
    let Some(name) = args.get(1).and_then(|a| a.to_str()) else {
        return Ok(args);
    };
    let Some(subcommand) = command.find_subcommand(name) else {
        return Ok(args);
    };
    if !subcommand
        .get_arguments()
        .any(|a| a.get_long() == Some("config"))
    {
        return Ok(args);
    }
    let Some(path) = config_path(&args[2..]) else {
        return Ok(args);
    };
    let flags = flags_from_file(subcommand, Path::new(&path), &args[2..])?;
    let mut merged = args[..2].to_vec();
    merged.extend(flags);
    merged.extend_from_slice(&args[2..]);
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    fn command() -> Command {
        Command::new("ctflow").subcommand(
            Command::new("worker")
                .arg(Arg::new("config").long("config"))
                .arg(Arg::new("bus").long("bus"))
                .arg(Arg::new("concurrency").long("concurrency"))
                .arg(
                    Arg::new("shutdown-grace")
                        .long("shutdown-grace")
                        .env("CTFLOW_TEST_UNSET_GRACE"),
                )
                .arg(
                    Arg::new("verbose")
                        .long("verbose")
                        .action(ArgAction::SetTrue),
                ),
        )
    }

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn file_settings_become_flags_and_the_command_line_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("worker.yaml");
        std::fs::write(
            &file,
            "bus: nats://nats:4222\nconcurrency: 4\nshutdown_grace: 10s\nverbose: true\n",
        )
        .expect("write");
        let path = file.to_str().expect("utf-8");
        let merged = with_config_file(
            &command(),
            args(&["ctflow", "worker", "--config", path, "--concurrency=2"]),
        )
        .expect("merged");
        let matches = command().try_get_matches_from(&merged).expect("parses");
        let worker = matches.subcommand_matches("worker").expect("worker");
        assert_eq!(
            worker.get_one::<String>("bus").map(String::as_str),
            Some("nats://nats:4222")
        );
        assert_eq!(
            worker.get_one::<String>("concurrency").map(String::as_str),
            Some("2")
        );
        assert_eq!(
            worker
                .get_one::<String>("shutdown-grace")
                .map(String::as_str),
            Some("10s")
        );
        assert!(worker.get_flag("verbose"));
    }

    #[test]
    fn unknown_settings_and_unreadable_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("worker.yaml");
        std::fs::write(&file, "buss: nats://x\n").expect("write");
        let path = file.to_str().expect("utf-8");
        let error = with_config_file(&command(), args(&["ctflow", "worker", "--config", path]))
            .expect_err("unknown key");
        let text = format!("{error:#}");
        assert!(
            text.contains("unknown setting 'buss'") && text.contains("bus, concurrency"),
            "{text}"
        );
        let missing = dir.path().join("absent.yaml");
        let error = with_config_file(
            &command(),
            args(&[
                "ctflow",
                "worker",
                &format!("--config={}", missing.display()),
            ]),
        )
        .expect_err("missing file");
        assert!(format!("{error:#}").contains("cannot read the config file"));
        // Other commands are left alone.
        let plain = args(&["ctflow", "other", "--config", "x"]);
        assert_eq!(
            with_config_file(&command(), plain.clone()).expect("as is"),
            plain
        );
    }
}
