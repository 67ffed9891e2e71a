//! SQLite databases (cargo feature `sqlite`), through rusqlite and the system's
//! libsqlite3: opened read-only at each query (so a database replaced on disk is used
//! from the next login on), with `?1`, `?2`, ... bound, waiting at most the map's
//! `timeout` for a writer's lock.

use std::time::Duration;

use rusqlite::{types::ValueRef, Connection, OpenFlags};

use super::{Database, Rows};
use crate::imap::sasl::Secret;
use crate::lookup::Place;

pub struct Sqlite {
    place: Place,
}

impl Sqlite {
    pub fn open(path: &str, chroot: Option<&std::path::Path>) -> Result<Sqlite, String> {
        if path.is_empty() {
            return Err("sqlite: needs a file name".into());
        }
        Ok(Sqlite { place: Place::new(path.as_ref(), chroot) })
    }
}

impl Database for Sqlite {
    fn query(&self, sql: &str, params: &[String], timeout: Duration) -> Result<Rows, String> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        // SQLite reports a missing file as an open error, not NotFound: check first.
        let path = match self.place.with(|p| std::fs::metadata(p).map(|_| p.to_path_buf())) {
            Ok(p) => p,
            Err(e) => return Err(format!("cannot open {}: {e}", self.place.path.display())),
        };
        let db = Connection::open_with_flags(&path, flags)
            .map_err(|e| format!("cannot open {}: {e}", self.place.path.display()))?;
        db.busy_timeout(timeout).map_err(|e| e.to_string())?;
        let mut stmt = db.prepare(sql).map_err(|e| format!("query: {e}"))?;
        let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter()))
            .map_err(|e| format!("query: {e}"))?;
        let mut out = Rows { columns, rows: Vec::new() };
        while let Some(row) = rows.next().map_err(|e| format!("query: {e}"))? {
            let mut values = Vec::new();
            for i in 0..out.columns.len() {
                let value = match row.get_ref(i).map_err(|e| e.to_string())? {
                    ValueRef::Null => None,
                    ValueRef::Integer(n) => Some(n.to_string().into_bytes()),
                    ValueRef::Real(f) => Some(f.to_string().into_bytes()),
                    ValueRef::Text(t) | ValueRef::Blob(t) => Some(t.to_vec()),
                };
                values.push(value.map(Secret::new));
            }
            out.rows.push(values);
            if out.rows.len() > 2 {
                break;
            }
        }
        Ok(out)
    }
}
