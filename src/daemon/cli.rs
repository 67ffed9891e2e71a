//! The command line, in the style of classic daemons (no argument-parsing crate: five
//! options do not need one).

use std::path::PathBuf;

/// Where the configuration lives unless `-f` says otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/imapgate/imapgate.ini";

/// The usage text for `-h` and for mistakes.
pub const USAGE: &str = "usage: imapgate [-h] [-v] [-d LEVEL] [-t] [--inetd] [-f FILE]
  -f FILE    configuration file (default /etc/imapgate/imapgate.ini)
  -t         check the configuration and exit (0 when valid)
  -d LEVEL   log verbosity: error, warn, info, debug or trace, optionally per module
             (info,imapgate::rules=debug); overrides log_level
  --inetd    serve one connection on stdin/stdout (inetd, xinetd, systemd Accept=yes)
  -v         print the version and exit
  -h         print this help and exit";

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// `-f FILE`.
    pub config: PathBuf,
    /// `-t`.
    pub check_only: bool,
    /// `-d LEVEL`.
    pub log_level: Option<crate::config::LogFilter>,
    /// `--inetd`.
    pub inetd: bool,
}

/// A command line's meaning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Run (or check) with these options.
    Run(Options),
    /// `-h`.
    Help,
    /// `-v`.
    Version,
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut opts =
        Options { config: DEFAULT_CONFIG.into(), check_only: false, log_level: None, inetd: false };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-v" | "--version" => return Ok(Command::Version),
            "-t" => opts.check_only = true,
            "--inetd" => opts.inetd = true,
            "-f" => opts.config = args.next().ok_or("-f needs a file name")?.into(),
            "-d" => {
                let level = args.next().ok_or("-d needs a level")?;
                let parsed =
                    crate::config::parse_log_filter(&level).map_err(|e| format!("-d: {e}"))?;
                opts.log_level = Some(parsed);
            }
            other => return Err(format!("unknown option \"{other}\"")),
        }
    }
    Ok(Command::Run(opts))
}

/// True when a command line asks for inetd mode without `-t`, even one that does not
/// parse: then standard error is the client's connection, and a mistake must be reported
/// elsewhere. Words are read as `parse` reads them (the word after `-f` or `-d` is its
/// value: `-f --inetd` names a file), and on past a mistake, which may come first.
pub fn wants_inetd(args: &[String]) -> bool {
    let (mut inetd, mut check) = (false, false);
    let mut words = args.iter();
    while let Some(word) = words.next() {
        match word.as_str() {
            "--inetd" => inetd = true,
            "-t" => check = true,
            "-f" | "-d" => {
                words.next();
            }
            _ => {}
        }
    }
    inetd && !check
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn options_parse() {
        let Ok(Command::Run(o)) = run(&["-t", "-f", "x.ini", "-d", "debug", "--inetd"]) else {
            panic!()
        };
        assert_eq!(o.config, PathBuf::from("x.ini"));
        assert!(o.check_only && o.inetd);
        assert_eq!(o.log_level.map(|f| f.max), Some(log::LevelFilter::Debug));
        assert_eq!(run(&["-v"]), Ok(Command::Version));
        assert_eq!(
            run(&[])
                .map(|c| matches!(c, Command::Run(o) if o.config.as_os_str() == DEFAULT_CONFIG)),
            Ok(true)
        );
    }

    #[test]
    fn inetd_mode_is_recognised_in_a_command_line_that_does_not_parse() {
        let wants =
            |args: &[&str]| wants_inetd(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(wants(&["--inetd", "-x"]));
        assert!(wants(&["-x", "--inetd"]));
        assert!(wants(&["--inetd", "-d", "loud"]));
        assert!(wants(&["-d", "loud", "-f", "x.ini", "--inetd"]));
        assert!(!wants(&["-f", "--inetd", "-x"]), "a file called --inetd");
        assert!(!wants(&["-t", "--inetd", "-x"]), "-t never serves a client");
        assert!(!wants(&["-x"]));
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(run(&["-x"]), Err("unknown option \"-x\"".into()));
        assert_eq!(run(&["-f"]), Err("-f needs a file name".into()));
        assert!(run(&["-d", "loud"]).is_err_and(|e| e.starts_with("-d: invalid value \"loud\"")));
    }
}
