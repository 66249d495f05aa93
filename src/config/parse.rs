//! Reading variables as flags (see [`super`]'s "Reading the environment"): which variables
//! are set, where their flags go on the command line, and clap's errors turned into
//! [`ConfigError`]s built from its structured context.

use clap::builder::{BoolValueParser, TypedValueParser};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use std::ffi::OsString;

use super::args::Args;
use super::{ConfigError, Env};

/// A variable that is set and not empty.
pub(super) fn set(env: Env, var: &str) -> Option<OsString> {
    env(var).filter(|v| !v.is_empty())
}

/// Every variable the command and its subcommands read.
pub(super) fn variables(cmd: &clap::Command) -> Vec<OsString> {
    let mut vars: Vec<OsString> = std::iter::once(cmd)
        .chain(cmd.get_subcommands())
        .flat_map(|c| c.get_arguments())
        .filter_map(|a| a.get_env().map(ToOwned::to_owned))
        .collect();
    vars.sort();
    vars.dedup();
    vars
}

/// The arguments of `argv` and `env`, as described in the module docs.
pub(super) fn parse_args(argv: &[OsString], env: Env) -> Result<Args, ConfigError> {
    let mut annotated = Args::command();
    annotated.build();
    let parser = annotated.clone().mut_args(|a| a.env(None)).mut_subcommands(|c| c.mut_args(|a| a.env(None)));
    let no_name = [OsString::from("nixery")];
    let argv = if argv.is_empty() { &no_name[..] } else { argv };

    // What the command line gives by itself: the subcommand, and which flags. Its mistakes
    // are reported by the full parse below.
    let given = match parser.clone().ignore_errors(true).try_get_matches_from(argv) {
        Ok(given) => given,
        // Help as clap renders it with the variables (and their values in this process).
        Err(e) if is_help(&e) => {
            return Err(annotated.try_get_matches_from(argv).map_or_else(ConfigError::Help, |_| ConfigError::Help(e)));
        }
        Err(e) => return Err(config_error(e, &annotated)),
    };

    // Each command's variables go after its own flags, as clap reads them after the command
    // line: a mistake on the command line is reported first.
    let subcommand = given.subcommand().zip(subcommand_position(&annotated, argv));
    let top_end = subcommand.map_or_else(|| end_of_options(argv, 1), |(_, at)| at);
    let mut full = argv[..top_end].to_vec();
    full.extend(env_flags(&annotated, &given, env)?);
    let mut rest = top_end;
    if let Some(((name, sub_given), at)) = subcommand {
        let sub = annotated.find_subcommand(name).expect("clap matched this subcommand");
        let sub_end = end_of_options(argv, at + 1);
        full.extend_from_slice(&argv[at..sub_end]);
        full.extend(env_flags(sub, sub_given, env)?);
        rest = sub_end;
    }
    full.extend_from_slice(&argv[rest..]);
    let matches = parser.try_get_matches_from(full).map_err(|e| config_error(e, &annotated))?;
    Args::from_arg_matches(&matches).map_err(ConfigError::Usage)
}

/// Where a command's options end when they start at `from`: at `--` (after which everything
/// is positional), else at the end.
fn end_of_options(argv: &[OsString], from: usize) -> usize {
    argv.iter().skip(from).position(|t| t == "--").map_or(argv.len(), |i| from + i)
}

/// The flags that stand for the variables of `cmd` (one command, not its subcommands) that
/// are set in `env` and whose flags the command line does not give.
fn env_flags(cmd: &clap::Command, given: &ArgMatches, env: Env) -> Result<Vec<OsString>, ConfigError> {
    let mut flags = Vec::new();
    for arg in cmd.get_arguments() {
        let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) else { continue };
        let Some(value) = var.to_str().and_then(|var| set(env, var)) else { continue };
        if given.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
            continue;
        }
        if arg.get_action().takes_values() {
            let mut flag = OsString::from(format!("--{long}="));
            flag.push(value);
            flags.push(flag);
        } else {
            // A switch: clap reads its variable as `true` or `false`.
            let on = BoolValueParser::new().parse_ref(cmd, Some(arg), &value).map_err(|e| config_error(e, cmd))?;
            if on {
                flags.push(format!("--{long}").into());
            }
        }
    }
    Ok(flags)
}

/// Where the subcommand stands in `argv`: the top-level command has only long options and
/// no positionals, so it is the first token after the program name that is neither an
/// option nor an option's value.
fn subcommand_position(top: &clap::Command, argv: &[OsString]) -> Option<usize> {
    let mut tokens = argv.iter().enumerate().skip(1);
    while let Some((i, token)) = tokens.next() {
        let token = token.to_string_lossy();
        match token.strip_prefix("--") {
            Some("") => return None,
            Some(long) => {
                let takes_value = |a: &clap::Arg| a.get_long() == Some(long) && a.get_action().takes_values();
                if top.get_arguments().any(takes_value) {
                    tokens.next();
                }
            }
            None if token.starts_with('-') => {}
            None => return Some(i),
        }
    }
    None
}

fn is_help(e: &clap::Error) -> bool {
    matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
}

/// A bad value for an argument that has a variable names both; anything else is clap's.
fn config_error(e: clap::Error, annotated: &clap::Command) -> ConfigError {
    if is_help(&e) {
        return ConfigError::Help(e);
    }
    let bad_value = matches!(e.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation);
    let Some(ContextValue::String(rendered)) = e.get(ContextKind::InvalidArg).filter(|_| bad_value) else {
        return ConfigError::Usage(e);
    };
    // clap names the argument as the argument displays itself.
    let arg = std::iter::once(annotated)
        .chain(annotated.get_subcommands())
        .flat_map(|c| c.get_arguments())
        .find(|a| a.to_string() == *rendered);
    let Some((arg, variable, long)) = arg.and_then(|a| Some((a, a.get_env()?, a.get_long()?))) else {
        return ConfigError::Usage(e);
    };
    let value = match e.get(ContextKind::InvalidValue) {
        _ if arg.is_hide_env_values_set() => "***".to_owned(),
        // A URL's user information or token parameters are not repeated back (a malformed
        // NIXERY_AUTH_TOKEN_KEYS or repository URL may carry them).
        Some(ContextValue::String(v)) => crate::redact::credentials(v).into_owned(),
        _ => String::new(),
    };
    ConfigError::InvalidValue {
        variable: variable.to_string_lossy().into_owned(),
        flag: format!("--{long}"),
        value,
        source: e,
    }
}

/// Why clap refused a value: the value parser's own error, or the values it accepts.
pub(super) fn reason(e: &clap::Error) -> String {
    if let Some(source) = std::error::Error::source(e) {
        return source.to_string();
    }
    match e.get(ContextKind::ValidValue) {
        Some(ContextValue::Strings(valid)) => format!("expected one of {}", valid.join(", ")),
        _ => "invalid value".to_owned(),
    }
}
