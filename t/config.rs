//! `imapgate -t -f CONFIG`: exit 0 for good configs; exit 78 (EX_CONFIG) and
//! `PATH:LINE: message` on stderr for each `t/configs/bad-*.ini` fixture,
//! whose `; expect: LINE: substring` comments say what must be reported.

use std::path::{Path, PathBuf};

use crate::common::proxy::{fill, run_imapgate};
use crate::common::*;

const EX_CONFIG: i32 = 78;

fn manifest_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn check(path: &Path) -> Output {
    let p = path.to_str().expect("utf-8 path");
    run_imapgate(&["-t", "-f", p])
}

#[test]
fn check_mode_accepts_the_minimal_config() {
    let dir = TempDir::new("config");
    let path = dir.join("minimal.ini");
    std::fs::write(&path, fill(&minimal_config(143), 1143, &dir)).expect("write");
    let out = check(&path);
    assert_eq!(out.status.code(), Some(0), "-t on minimal config: stderr:\n{}", out.stderr_text());
}

#[test]
fn check_mode_accepts_the_shipped_example_config() {
    let path = manifest_path("etc/imapgate.ini");
    assert!(path.exists(), "etc/imapgate.ini is missing");
    let out = check(&path);
    assert_eq!(
        out.status.code(),
        Some(0),
        "-t on etc/imapgate.ini: stderr:\n{}",
        out.stderr_text()
    );
}

/// `; expect: LINE: substring` comments of a fixture.
fn expectations(body: &str) -> Vec<(u32, String)> {
    body.lines()
        .filter_map(|l| l.trim_start().strip_prefix("; expect:"))
        .map(|rest| {
            let (line, sub) = rest.split_once(':').expect("`; expect: LINE: substring`");
            (line.trim().parse().expect("expect LINE is a number"), sub.trim().to_owned())
        })
        .collect()
}

#[test]
fn check_mode_rejects_each_bad_fixture_with_exit_78_and_a_located_message() {
    let dir = manifest_path("t/configs");
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    fixtures.retain(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        name.starts_with("bad-") && name.ends_with(".ini")
    });
    fixtures.sort();
    assert!(!fixtures.is_empty(), "no t/configs/bad-*.ini fixtures found");
    let mut problems = Vec::new();
    for f in &fixtures {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let body = std::fs::read_to_string(f).expect("read fixture");
        let expects = expectations(&body);
        if expects.is_empty() {
            problems.push(format!("{name}: fixture has no `; expect: LINE: substring` line"));
        }
        let out = check(f);
        let stderr = out.stderr_text();
        if out.status.code() != Some(EX_CONFIG) {
            problems.push(format!(
                "{name}: exit {:?}, want {EX_CONFIG}; stderr:\n{stderr}",
                out.status.code()
            ));
        }
        for (line, sub) in expects {
            let loc = format!("{name}:{line}:");
            let hit = stderr.lines().any(|l| l.contains(&loc) && l.contains(&sub));
            if !hit {
                problems.push(format!(
                    "{name}: no stderr line with `{loc}` and `{sub}`; stderr:\n{stderr}"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} fixtures failed:\n{}",
        problems.len(),
        fixtures.len(),
        problems.join("\n")
    );
}
