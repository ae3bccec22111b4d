//! The configuration file (`--config FILE`, TOML) and its place below the command line.
//!
//! The file's keys are the flags' names, flat, without the dashes: `max-output =
//! "1MiB"`, `rate = 5`, `tls-cert = "/etc/loopchat/cert.pem"`, `admin = ["alice"]`.
//! Both come from [`ServerConfig`]'s one field list (clap derives the flags, serde the
//! keys), so there is no second list to keep in step; [`ServerConfig::keys`] names
//! every key and a test holds each flag to one.
//!
//! Precedence: the file is read first, then each setting whose flag was given on the
//! command line ([`clap::parser::ValueSource::CommandLine`]) replaces the file's. Those
//! settings are kept ([`CommandLine`]) so that a reload (SIGHUP) lays them over the
//! file again. A repeatable flag (`--admin`, `--exempt`) replaces the file's whole list.
//!
//! Errors name the file, the line and the key. This module does not apply anything to
//! a running server: `server/reload.rs` does that.

use std::ffi::OsString;
use std::fmt::{self, Write as _};
use std::fs;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, FromArgMatches};

use super::ServerConfig;

/// The name `clap` gives the command whose arguments are [`ServerConfig`]'s.
const COMMAND: &str = "loopchat server";

/// What `--print-config` writes first.
const HEADER: &str = "\
# loopchat server configuration (TOML), for `loopchat server --config FILE`.
# Every key is a flag of `loopchat server` by the same name; a flag given on the
# command line overrides the file. Sizes take B, KiB, MiB or GiB (\"64KiB\");
# durations ms, s, m, h or d (\"30s\"). SIGHUP re-reads the file; the log says what
# changed and what needs a restart.
";

/// Width of the comments `--print-config` writes.
const COMMENT_WIDTH: usize = 88;

/// The settings given on the command line, by key, to lay over the file's at every
/// (re)load. Empty when there is no file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommandLine(toml::Table);

impl CommandLine {
    /// The keys set on the command line, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

/// A configuration that cannot be used: where it is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file, unless the command line is at fault.
    pub file: Option<PathBuf>,
    /// The line of the file (from 1), when the error is at a place in it.
    pub line: Option<usize>,
    /// The key the error is about, when there is one.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    fn new(message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: None,
            line: None,
            key: None,
            message: message.into(),
        }
    }

    fn in_file(mut self, file: &Path) -> ConfigError {
        self.file = Some(file.to_path_buf());
        self
    }
}

/// `FILE:LINE: key `KEY`: MESSAGE`, leaving out what is not known.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
            }
            f.write_str(": ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

impl ServerConfig {
    /// The configuration that the arguments of `loopchat server` describe (the first
    /// item is the program's name, as in `std::env::args`): its flags over its
    /// `--config` file, if any.
    pub fn from_args<I, T>(args: I) -> Result<ServerConfig, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = command()
            .try_get_matches_from(args)
            .map_err(|e| ConfigError::new(e.to_string().trim_end()))?;
        ServerConfig::from_matches(&matches)
    }

    /// The configuration that `matches` describes (of `loopchat server`, or of any
    /// command that flattens [`ServerConfig`]): its flags over its `--config` file.
    /// The file's path is made absolute, since a service's working directory may
    /// change before a reload.
    pub fn from_matches(matches: &ArgMatches) -> Result<ServerConfig, ConfigError> {
        let given = ServerConfig::from_arg_matches(matches)
            .map_err(|e| ConfigError::new(e.to_string().trim_end()))?;
        let Some(file) = &given.config_file else {
            return Ok(given);
        };
        let file = std::path::absolute(file).map_err(|e| {
            ConfigError::new(format!("cannot resolve --config {}: {e}", file.display()))
        })?;
        let table = given.to_table()?;
        let mut overrides = toml::Table::new();
        for arg in &settings() {
            if matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine)
                && let Some((key, value)) = table.get_key_value(&key_of(arg))
            {
                overrides.insert(key.clone(), value.clone());
            }
        }
        let mut config = ServerConfig::load(&file, &CommandLine(overrides))?;
        config.handle_signals = given.handle_signals;
        Ok(config)
    }

    /// Reads `file` and lays `overrides` over it.
    pub fn load(file: &Path, overrides: &CommandLine) -> Result<ServerConfig, ConfigError> {
        let text = fs::read_to_string(file)
            .map_err(|e| ConfigError::new(format!("cannot read: {e}")).in_file(file))?;
        let from_file = parse(&text).map_err(|e| e.in_file(file))?;
        let mut table = from_file.to_table()?;
        table.extend(overrides.0.clone());
        let mut config = ServerConfig::from_table(table)?;
        config.config_file = Some(file.to_path_buf());
        config.overrides = overrides.clone();
        Ok(config)
    }

    /// The same file and command line read again (SIGHUP), or `None` without a file.
    /// The result keeps this configuration's `handle_signals`.
    pub fn reread(&self) -> Option<Result<ServerConfig, ConfigError>> {
        let file = self.config_file.as_deref()?;
        Some(ServerConfig::load(file, &self.overrides).map(|mut c| {
            c.handle_signals = self.handle_signals;
            c
        }))
    }

    /// Every setting as a TOML table, by key. Unset optional settings are absent.
    pub fn to_table(&self) -> Result<toml::Table, ConfigError> {
        toml::Table::try_from(self).map_err(|e| ConfigError::new(e.to_string()))
    }

    /// The settings of `table` (keys as in the file), with everything else default.
    /// Unknown keys and bad values are errors that name the key.
    pub fn from_table(table: toml::Table) -> Result<ServerConfig, ConfigError> {
        // Through text, so that an error has a place to name the key by; the line is
        // of that text, and means nothing to anyone.
        parse(&table.to_string()).map_err(|e| ConfigError { line: None, ..e })
    }

    /// Every key the configuration file knows, in the order of `--help`: each flag's
    /// name without the dashes (the listen address is `addr`).
    pub fn keys() -> Vec<String> {
        settings().iter().map(key_of).collect()
    }

    /// Every setting as a TOML file to start from (`--print-config`): each key with
    /// its flag's help as a comment, unset optional ones commented out. Read back, it
    /// gives this configuration.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        let table = self.to_table()?;
        let mut out = String::from(HEADER);
        for arg in &settings() {
            let key = key_of(arg);
            out.push('\n');
            if let Some(help) = arg.get_help() {
                // clap drops the closing full stop of a one-paragraph doc comment.
                let help = help.to_string();
                let stop = if help.ends_with('.') { "" } else { "." };
                comment(&mut out, &format!("{help}{stop}"));
            }
            match table.get(&key) {
                Some(value) => {
                    let _ = writeln!(out, "{key} = {value}");
                }
                None => {
                    let example = arg
                        .get_value_names()
                        .and_then(|names| names.first())
                        .map_or_else(|| key.to_uppercase(), ToString::to_string);
                    let _ = writeln!(out, "# {key} = \"{example}\"");
                }
            }
        }
        Ok(out)
    }
}

/// `clap`'s view of [`ServerConfig`]'s flags.
fn command() -> clap::Command {
    ServerConfig::augment_args(clap::Command::new(COMMAND))
}

/// The flags that are settings: all but `--config` itself, which names the file and
/// is not in it.
fn settings() -> Vec<clap::Arg> {
    command()
        .get_arguments()
        .filter(|arg| arg.get_id() != "config_file")
        .cloned()
        .collect()
}

/// The key of a flag: its long name, or for a positional argument (the address) its
/// field's name.
fn key_of(arg: &clap::Arg) -> String {
    arg.get_long()
        .map_or_else(|| arg.get_id().to_string(), str::to_string)
}

/// A file's text as a configuration, with errors placed at a line and a key.
fn parse(text: &str) -> Result<ServerConfig, ConfigError> {
    toml::from_str::<ServerConfig>(text).map_err(|e| {
        let at = e.span().map(|span| span.start);
        let key = at.and_then(|at| key_at(text, at));
        let message = match e.message().trim() {
            m if m.starts_with("unknown field") => {
                "unknown key (every key is a flag's name; `loopchat server --print-config` \
                 lists them)"
                    .to_string()
            }
            m => m.to_string(),
        };
        ConfigError {
            file: None,
            line: at.map(|at| 1 + text[..at.min(text.len())].matches('\n').count()),
            key,
            message,
        }
    })
}

/// The top-level key whose entry holds byte `at` of `text`.
fn key_at(text: &str, at: usize) -> Option<String> {
    let document = match toml::de::DeTable::parse(text) {
        Ok(document) => document,
        // Not TOML at all: the key is what stands before `=` on that line, if anything.
        Err(_) => {
            let start = text[..at.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
            let line = text[start..].lines().next()?;
            let key = line.split_once('=')?.0.trim().trim_matches(['"', '\'']);
            return (!key.is_empty()).then(|| key.to_string());
        }
    };
    document
        .get_ref()
        .iter()
        .find(|(key, value)| key.span().contains(&at) || value.span().contains(&at))
        .map(|(key, _)| key.get_ref().to_string())
}

/// Appends `text` as `# ` comment lines of at most [`COMMENT_WIDTH`] columns.
fn comment(out: &mut String, text: &str) {
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() > 1 && line.len() + 1 + word.len() > COMMENT_WIDTH {
            out.push_str(&line);
            out.push('\n');
            line.truncate(1);
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}
