//! `type = sql`: one query per login, its `%u`, `%n`, `%d`, `%r` bound as parameters
//! (never pasted into the SQL), its result columns named like the answer's fields
//! (`SELECT host AS backend, login AS destuser FROM users WHERE login = %u`), and with
//! `verify_password` a `password` column holding the user's hash in Dovecot's
//! `{SCHEME}` form (`password.rs`). PostgreSQL is spoken by imapgate itself
//! (`postgres.rs`: protocol 3, SCRAM-SHA-256); SQLite goes through the C library
//! (`sqlite.rs`, cargo feature `sqlite`).
//!
//! No row: the user is not known. More than one row: an error (an ambiguous answer is
//! not an answer). A column that is not a field: an error, so a typo shows.

mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::collections::HashMap;
use std::time::Duration;

use super::fields::{Fields, NAMES};
use super::password;
use super::template::{self, Piece, Template, Var};
use super::{Found, Query, Source};
use crate::config::Target;
use crate::imap::sasl::Secret;

pub use postgres::Postgres;

#[cfg(any(test, fuzzing))]
pub use postgres::fuzz;

/// A database: runs a query with text parameters, returns rows of named, nullable text.
pub trait Database: Send + Sync {
    fn query(&self, sql: &str, params: &[String], timeout: Duration) -> Result<Rows, String>;
}

/// Column names, and rows of values (`None` for NULL).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<Secret>>>,
}

/// The driver named by `database`: `postgresql://...` or `sqlite:PATH`.
pub fn open(database: &str, chroot: Option<&std::path::Path>) -> Result<Box<dyn Database>, String> {
    if database.starts_with("postgres://") || database.starts_with("postgresql://") {
        return Ok(Box::new(Postgres::parse(database, chroot)?));
    }
    if let Some(path) = database.strip_prefix("sqlite:") {
        #[cfg(feature = "sqlite")]
        return Ok(Box::new(sqlite::Sqlite::open(path, chroot)?));
        #[cfg(not(feature = "sqlite"))]
        return Err(format!(
            "sqlite:{path}: this imapgate was built without SQLite (cargo feature \"sqlite\")"
        ));
    }
    Err("expected postgresql://USER[:PASSWORD]@HOST[:PORT]/DB, postgresql://USER@/DB?host=/SOCKET/DIR or sqlite:PATH".into())
}

pub struct SqlMap {
    db: Box<dyn Database>,
    /// The query with `$1`, `$2`, ... (PostgreSQL) or `?1`, ... (SQLite) for variables.
    sql: String,
    vars: Vec<Var>,
    verify_password: bool,
    timeout: Duration,
    targets: HashMap<String, Target>,
}

impl SqlMap {
    pub fn new(
        database: &str,
        chroot: Option<&std::path::Path>,
        query: &str,
        verify_password: bool,
        timeout: Duration,
        targets: HashMap<String, Target>,
    ) -> Result<SqlMap, String> {
        let db = open(database, chroot)?;
        let marker = if database.starts_with("sqlite:") { '?' } else { '$' };
        let template = Template::parse(query)?;
        let mut sql = String::new();
        let mut vars: Vec<Var> = Vec::new();
        for piece in &template.0 {
            match piece {
                Piece::Text(t) => sql.push_str(t),
                Piece::Var(v) => {
                    let n = match vars.iter().position(|x| x == v) {
                        Some(i) => i + 1,
                        None => {
                            vars.push(*v);
                            vars.len()
                        }
                    };
                    sql.push_str(&format!("{marker}{n}"));
                }
            }
        }
        // %r alone does not say whose row it is: every login from one address would share it.
        if !vars.iter().any(|v| matches!(v, Var::User | Var::Local | Var::Domain)) {
            return Err("the query uses no %u, %n or %d: every login would get the same row".into());
        }
        Ok(SqlMap { db, sql, vars, verify_password, timeout, targets })
    }
}

impl Source for SqlMap {
    fn find(&self, q: &Query<'_>) -> Result<Option<Found>, String> {
        let params: Vec<String> = self.vars.iter().map(|v| template::value(*v, q)).collect();
        let mut result = self.db.query(&self.sql, &params, self.timeout)?;
        let row = match result.rows.len() {
            0 => return Ok(None),
            1 => result.rows.remove(0),
            n => return Err(format!("the query returned {n} rows for one login")),
        };
        let mut fields = Fields::default();
        let mut hash = None;
        for (name, value) in result.columns.iter().zip(row) {
            let name = name.to_ascii_lowercase();
            if name == "password" {
                hash = value;
                continue;
            }
            if !NAMES.contains(&name.as_str()) {
                return Err(format!(
                    "column {name:?} is not a field (known: {}, password)",
                    NAMES.join(", ")
                ));
            }
            if let Some(value) = value {
                let text = String::from_utf8(value.expose().to_vec())
                    .map_err(|_| format!("column {name}: not UTF-8"))?;
                fields.set(&name, &text, &self.targets)?;
            }
        }
        let mut verified = false;
        if self.verify_password {
            if let Some(given) = q.password {
                let Some(hash) = hash else {
                    return Ok(Some(Found::Rejected { text: None, wait: None }));
                };
                let stored = String::from_utf8_lossy(hash.expose()).into_owned();
                if !password::verify(&stored, given.expose())? {
                    return Ok(Some(Found::Rejected { text: None, wait: None }));
                }
                verified = true;
            }
        }
        fields.into_found(verified).map(Some)
    }

    fn verifies(&self) -> bool {
        self.verify_password
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built(query: &str) -> Result<(), String> {
        let db = "postgresql://u@127.0.0.1/db";
        SqlMap::new(db, None, query, false, Duration::from_secs(1), HashMap::new()).map(|_| ())
    }

    #[test]
    fn a_query_must_name_the_user() {
        let none = Err("the query uses no %u, %n or %d: every login would get the same row".into());
        assert_eq!(built("SELECT 'a' AS backend"), none);
        assert_eq!(built("SELECT backend FROM hosts WHERE ip = %r"), none);
        assert_eq!(built("SELECT backend FROM users WHERE login = %u"), Ok(()));
        assert_eq!(built("SELECT backend FROM u WHERE name = %n AND domain = %d"), Ok(()));
        assert_eq!(built("SELECT backend FROM u WHERE domain = %d AND ip = %r"), Ok(()));
    }
}
