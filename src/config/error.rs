//! Configuration errors: every problem carries the file and line it was found at, and
//! loading collects all of them before giving up (OpenSMTPD `file->errors` style).

use std::fmt;
use std::path::{Path, PathBuf};

/// One configuration problem, displayed as `PATH:LINE: message`.
///
/// `line` is 1-based; 0 means "the file as a whole" (for example, unreadable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file.
    pub path: PathBuf,
    /// 1-based line of the offending key or section header; 0 for the whole file.
    pub line: usize,
    /// One lowercase clause without a trailing period.
    pub msg: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.msg)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one configuration file, in line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Error collector used while loading one file.
#[derive(Debug)]
pub(crate) struct Diag {
    path: PathBuf,
    errors: Vec<ConfigError>,
}

impl Diag {
    pub(crate) fn new(path: &Path) -> Diag {
        Diag { path: path.to_path_buf(), errors: Vec::new() }
    }

    /// Records one problem at `line`.
    pub(crate) fn err(&mut self, line: usize, msg: impl Into<String>) {
        self.errors.push(ConfigError { path: self.path.clone(), line, msg: msg.into() });
    }

    /// Number of problems so far; sections compare it to see whether they added any.
    pub(crate) fn count(&self) -> usize {
        self.errors.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// All collected errors, sorted by line (stable, so same-line errors keep their order).
    pub(crate) fn into_errors(mut self) -> ConfigErrors {
        self.errors.sort_by_key(|e| e.line);
        ConfigErrors(self.errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_display_one_per_line() {
        let mut d = Diag::new(Path::new("etc/x.ini"));
        d.err(7, "second");
        d.err(3, "first");
        let errs = d.into_errors();
        assert_eq!(errs.to_string(), "etc/x.ini:3: first\netc/x.ini:7: second");
    }
}
