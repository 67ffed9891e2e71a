//! `type = cdb`: the records of a file map (`file.rs`) in a constant database, as built
//! by `cdb -c -m` (tinycdb) or `cdbmake`: key the login (or `*@domain`, `*`), data the rest
//! of the record. A CDB is replaced atomically by a rename, and imapgate opens it at every
//! lookup, so the new one is used from the next login on; a lookup is a few reads.
//!
//! The format (D. J. Bernstein's): 256 table pointers (position, slot count) of 8 bytes
//! each at the start; the hash of a key picks a table (`h % 256`) and a first slot
//! (`(h / 256) % slots`); each slot holds a hash and a record position, 0 for an empty
//! slot; a record is key length, data length, key, data. All numbers little-endian u32.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

use super::file::parse_record;
use super::{Found, Place, Query, Source};
use crate::config::Target;

/// The longest record data imapgate reads (a record is one line of a map).
const MAX_DATA: u32 = 64 * 1024;

pub struct CdbMap {
    place: Place,
    targets: HashMap<String, Target>,
    /// The file as opened at start-up, for when the path is out of reach (a chroot).
    opened: File,
}

impl CdbMap {
    /// Checks that `path` opens and reads as a CDB.
    pub fn open(place: Place, targets: HashMap<String, Target>) -> Result<CdbMap, String> {
        let opened = File::open(&place.path).map_err(|e| format!("cannot open: {e}"))?;
        get(&opened, b"*").map_err(|e| format!("not a CDB: {e}"))?;
        Ok(CdbMap { place, targets, opened })
    }
}

impl Source for CdbMap {
    fn find(&self, q: &Query<'_>) -> Result<Option<Found>, String> {
        // The current file (one replaced by a rename is used at once); the one opened at
        // start-up only when the path is no longer readable (after the privilege drop),
        // never when it is gone: a removed map is a failure.
        let file = match self.place.with(|p| File::open(p)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                self.opened.try_clone().map_err(|e| e.to_string())?
            }
            Err(e) => return Err(format!("cannot open {}: {e}", self.place.path.display())),
        };
        let wildcard =
            q.user.rsplit_once('@').map(|(_, d)| format!("*@{}", d.to_ascii_lowercase()));
        let keys = [Some(q.user.to_string()), wildcard, Some("*".to_string())];
        for key in keys.iter().flatten() {
            let data = get(&file, key.as_bytes())
                .map_err(|e| format!("{}: {e}", self.place.path.display()))?;
            if let Some(data) = data {
                let text = String::from_utf8(data).map_err(|_| {
                    format!("{}: record {key:?} is not UTF-8", self.place.path.display())
                })?;
                return parse_record(&text, &self.targets)
                    .map(Some)
                    .map_err(|e| format!("{}: record {key:?}: {e}", self.place.path.display()));
            }
        }
        Ok(None)
    }
}

/// The cdb hash: h = 5381; h = (h * 33) ^ byte.
fn hash(key: &[u8]) -> u32 {
    key.iter().fold(5381u32, |h, &b| (h << 5).wrapping_add(h) ^ u32::from(b))
}

fn read_u32_pair(file: &File, pos: u64) -> std::io::Result<(u32, u32)> {
    let mut buf = [0u8; 8];
    file.read_exact_at(&mut buf, pos)?;
    let a = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let b = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    Ok((a, b))
}

/// The data of the first record with `key`.
fn get(file: &File, key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
    let h = hash(key);
    let (table, slots) = read_u32_pair(file, u64::from(h % 256) * 8)?;
    if slots == 0 {
        return Ok(None);
    }
    let mut slot = (h >> 8) % slots;
    for _ in 0..slots {
        let (slot_hash, pos) = read_u32_pair(file, u64::from(table) + u64::from(slot) * 8)?;
        if pos == 0 {
            return Ok(None);
        }
        if slot_hash == h {
            let (klen, dlen) = read_u32_pair(file, u64::from(pos))?;
            if klen as usize == key.len() && dlen <= MAX_DATA {
                let mut record = vec![0u8; klen as usize + dlen as usize];
                file.read_exact_at(&mut record, u64::from(pos) + 8)?;
                if &record[..key.len()] == key {
                    return Ok(Some(record.split_off(key.len())));
                }
            }
        }
        slot = (slot + 1) % slots;
    }
    Ok(None)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// Writes a CDB of `records` (the format, for tests; the real tools build the CDBs
    /// the integration tests use).
    pub fn build(records: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = vec![0u8; 2048];
        let mut tables: Vec<Vec<(u32, u32)>> = vec![Vec::new(); 256];
        for (k, d) in records {
            let pos = out.len() as u32;
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(&(d.len() as u32).to_le_bytes());
            out.extend_from_slice(k);
            out.extend_from_slice(d);
            tables[(hash(k) % 256) as usize].push((hash(k), pos));
        }
        for (i, entries) in tables.iter().enumerate() {
            let slots = entries.len() as u32 * 2;
            let at = out.len() as u32;
            let mut table = vec![(0u32, 0u32); slots as usize];
            for &(h, pos) in entries {
                let mut s = ((h >> 8) % slots) as usize;
                while table[s].1 != 0 {
                    s = (s + 1) % slots as usize;
                }
                table[s] = (h, pos);
            }
            for (h, pos) in table {
                out.extend_from_slice(&h.to_le_bytes());
                out.extend_from_slice(&pos.to_le_bytes());
            }
            out[i * 8..i * 8 + 4].copy_from_slice(&at.to_le_bytes());
            out[i * 8 + 4..i * 8 + 8].copy_from_slice(&slots.to_le_bytes());
        }
        out
    }

    #[test]
    fn finds_every_record_and_nothing_else() {
        let records: Vec<(Vec<u8>, Vec<u8>)> = (0..500)
            .map(|i| (format!("user{i}").into_bytes(), format!("b{i}").into_bytes()))
            .collect();
        let refs: Vec<(&[u8], &[u8])> = records.iter().map(|(k, d)| (&k[..], &d[..])).collect();
        let path = std::env::temp_dir().join(format!("imapgate-cdb-{}.cdb", std::process::id()));
        std::fs::write(&path, build(&refs)).unwrap();
        let file = File::open(&path).unwrap();
        for (k, d) in &records {
            assert_eq!(get(&file, k).unwrap().as_deref(), Some(&d[..]));
        }
        assert_eq!(get(&file, b"nobody").unwrap(), None);
        assert_eq!(hash(b""), 5381);
        std::fs::write(&path, b"short").unwrap();
        assert!(CdbMap::open(Place::new(&path, None), HashMap::new()).is_err());
        std::fs::remove_file(&path).unwrap();
    }
}
