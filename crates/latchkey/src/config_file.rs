//! The configuration file (`--config FILE`, `LATCHKEY_CONFIG`) and the
//! layers settings come from: defaults, then the file, then `LATCHKEY_…`
//! variables, then flags.
//!
//! The file is TOML; each key is the id of one of the command line's
//! arguments (`listen`, `data_dir`, `header_timeout_seconds`, …: a flag's
//! name with underscores). clap already layers flags over variables over
//! defaults; the file goes in between by adding, for each of its keys that
//! neither a flag nor a variable set, that flag to the command line before
//! clap reads it again. So a value in the file is checked by the very parser
//! of its flag, and `--help` stays the one list of settings.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};

use crate::cli::Cli;

/// Arguments that are not settings (never read from the file).
const NOT_SETTINGS: &[&str] = &["config", "help", "version", "json", "force"];

/// Settings that hold secrets: redacted by `config check`.
const SECRETS: &[&str] = &["database_url", "master_key"];

/// A setting and its `_file` form: one of the two set by a flag or a
/// variable overrides both in the file.
const TWINS: &[(&str, &str)] = &[
    ("database_url", "database_url_file"),
    ("master_key", "master_key_file"),
    ("tls_key", "tls_key_file"),
];

/// The command line as read, with what came from the configuration file.
#[derive(Debug)]
pub struct Effective {
    command: Command,
    matches: ArgMatches,
    /// The settings the file gave (no flag or variable set them).
    from_file: Vec<String>,
}

/// Reads the command line, with the configuration file's settings layered
/// under flags and variables.
pub fn parse() -> anyhow::Result<(Cli, Effective)> {
    parse_from(std::env::args_os().collect())
}

pub fn parse_from(args: Vec<OsString>) -> anyhow::Result<(Cli, Effective)> {
    let command = Cli::command();
    let matches = command
        .clone()
        .try_get_matches_from(&args)
        .unwrap_or_else(|e| e.exit());
    let (leaf_command, leaf_matches) = leaf(&command, &matches);
    let config = leaf_matches
        .try_get_one::<std::path::PathBuf>("config")
        .ok()
        .flatten()
        .cloned();
    let (matches, from_file) = match config {
        None => (matches, Vec::new()),
        Some(path) => {
            let table = load(&path)?;
            let (extra, from_file) =
                file_args(&path, &command, leaf_command, leaf_matches, &table)?;
            let mut all = args;
            all.extend(extra);
            let matches = match command.clone().try_get_matches_from(&all) {
                Ok(matches) => matches,
                Err(e) => return Err(blame_file(e, &path, &from_file)),
            };
            (matches, from_file)
        }
    };
    let cli = Cli::from_arg_matches(&matches)?;
    Ok((
        cli,
        Effective {
            command,
            matches,
            from_file,
        },
    ))
}

/// A value from the file that its flag's parser refused: the error names
/// the file's key. Any other error is clap's own, as without a file.
fn blame_file(e: clap::Error, path: &Path, from_file: &[String]) -> anyhow::Error {
    use clap::error::{ContextKind, ContextValue};
    let flag = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(flag)) => flag.clone(),
        _ => e.exit(),
    };
    let key = from_file.iter().find(|key| {
        let long = key.replace('_', "-");
        flag == format!("--{long}") || flag.starts_with(&format!("--{long} "))
    });
    let Some(key) = key else { e.exit() };
    let detail = e.to_string();
    let detail = detail
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_string();
    anyhow::anyhow!(
        "the configuration file {}: `{key}`: {detail}",
        path.display()
    )
}

/// The innermost subcommand the command line names, and its matches.
fn leaf<'a>(command: &'a Command, matches: &'a ArgMatches) -> (&'a Command, &'a ArgMatches) {
    match matches.subcommand() {
        Some((name, sub)) => match command.find_subcommand(name) {
            Some(sub_command) => leaf(sub_command, sub),
            None => (command, matches),
        },
        None => (command, matches),
    }
}

fn load(path: &Path) -> anyhow::Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the configuration file {}", path.display()))?;
    text.parse::<toml::Table>().with_context(|| {
        format!(
            "the configuration file {} is not valid TOML",
            path.display()
        )
    })
}

/// Every setting any command takes: the arguments of `serve`, which takes
/// them all.
fn known_settings(command: &Command) -> Vec<String> {
    command
        .find_subcommand("serve")
        .map(|serve| {
            serve
                .get_arguments()
                .map(|a| a.get_id().to_string())
                .filter(|id| !NOT_SETTINGS.contains(&id.as_str()))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a flag or a variable set `id` (or its `_file` twin).
fn set_outside_file(matches: &ArgMatches, id: &str) -> bool {
    let given = |id: &str| {
        matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    given(id)
        || TWINS
            .iter()
            .filter_map(|(a, b)| {
                if *a == id {
                    Some(*b)
                } else if *b == id {
                    Some(*a)
                } else {
                    None
                }
            })
            .any(|twin| matches.try_get_raw(twin).is_ok() && given(twin))
}

/// The flags that carry the file's settings for `leaf`, each checked by its
/// flag's own parser; an unknown key or a bad value is an error naming it.
fn file_args(
    path: &Path,
    root: &Command,
    leaf: &Command,
    matches: &ArgMatches,
    table: &toml::Table,
) -> anyhow::Result<(Vec<OsString>, Vec<String>)> {
    let known = known_settings(root);
    let file = path.display();
    let mut out = Vec::new();
    let mut ids = Vec::new();
    for (key, value) in table {
        if !known.iter().any(|k| k == key) {
            bail!(
                "the configuration file {file} has an unknown key `{key}`; the keys are: {}",
                known.join(", ")
            );
        }
        // A setting this command does not take (`listen` for `backup`).
        let Some(arg) = leaf.get_arguments().find(|a| a.get_id() == key) else {
            continue;
        };
        if set_outside_file(matches, key) {
            continue;
        }
        let Some(long) = arg.get_long() else {
            continue;
        };
        ids.push(key.clone());
        let flag = OsString::from(format!("--{long}"));
        let bad = |what: &str| {
            anyhow::anyhow!("the configuration file {file}: `{key}` must be {what}, not {value}")
        };
        let takes_many = matches!(arg.get_action(), ArgAction::Append);
        match (arg.get_action(), value) {
            (ArgAction::SetTrue, toml::Value::Boolean(true)) => out.push(flag),
            (ArgAction::SetTrue, toml::Value::Boolean(false)) => {}
            (ArgAction::SetTrue, _) => return Err(bad("true or false")),
            (_, toml::Value::Array(items)) if takes_many => {
                for item in items {
                    let text = scalar(item).ok_or_else(|| bad("a list of strings"))?;
                    out.push(flag.clone());
                    out.push(text.into());
                }
            }
            (_, value) => {
                let text = scalar(value).ok_or_else(|| bad("a string or a number"))?;
                out.push(flag);
                out.push(text.into());
            }
        }
    }
    Ok((out, ids))
}

fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        _ => None,
    }
}

impl Effective {
    /// `latchkey config check`: the effective settings as TOML (a file
    /// `--config` can load), each with where it came from, secrets
    /// redacted.
    pub fn render(&self) -> String {
        let (leaf_command, leaf_matches) = leaf(&self.command, &self.matches);
        let mut out = String::from(
            "# The effective configuration, with where each value came from.\n\
             # Secrets are redacted.\n",
        );
        for arg in leaf_command.get_arguments() {
            let id = arg.get_id().as_str();
            if NOT_SETTINGS.contains(&id) {
                continue;
            }
            let from = match leaf_matches.value_source(id) {
                Some(ValueSource::CommandLine) if self.from_file.iter().any(|f| f == id) => {
                    "the configuration file".to_string()
                }
                Some(ValueSource::CommandLine) => "a flag".to_string(),
                Some(ValueSource::EnvVariable) => format!(
                    "the environment ({})",
                    arg.get_env()
                        .map(|e| e.to_string_lossy().into_owned())
                        .unwrap_or_default()
                ),
                Some(ValueSource::DefaultValue) => "the default".to_string(),
                _ => "the default".to_string(),
            };
            let raw: Vec<String> = leaf_matches
                .get_raw(id)
                .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            let is_flag = matches!(arg.get_action(), ArgAction::SetTrue);
            let value = if is_flag {
                leaf_matches.get_flag(id).to_string()
            } else if raw.is_empty() {
                let _ = writeln!(out, "# {id} is not set");
                continue;
            } else if SECRETS.contains(&id) {
                toml::Value::String("<redacted>".into()).to_string()
            } else if matches!(arg.get_action(), ArgAction::Append) {
                toml::Value::Array(raw.into_iter().map(toml::Value::String).collect()).to_string()
            } else {
                let text = raw.join(",");
                match text.parse::<i64>() {
                    Ok(n) => n.to_string(),
                    Err(_) => toml::Value::String(text).to_string(),
                }
            };
            let _ = writeln!(out, "{id} = {value}  # from {from}");
        }
        out
    }
}
