//! Medians, the markdown table (each figure with its ratio to direct Dovecot
//! and to nginx) and the raw results under bench/results/.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::Opts;

pub struct Rec {
    pub mode: String,
    pub target: String,
    pub rep: usize,
    pub metric: String,
    pub value: f64,
}

pub const TARGETS: [&str; 7] =
    ["direct", "nginx", "perdition", "imapgate", "imapgate-rules", "imapgate-ldap", "imapgate-ldap-cache"];

/// (metric, label, ratio to direct makes sense)
const ROWS: &[(&str, &str, bool)] = &[
    ("login16_rate", "login+logout, 16 clients, sessions/s", true),
    ("login16_p50_ms", "  p50 session latency, ms", true),
    ("login16_p99_ms", "  p99 session latency, ms", true),
    ("login64_rate", "login+logout, 64 clients, sessions/s", true),
    ("login64_p50_ms", "  p50 session latency, ms", true),
    ("login64_p99_ms", "  p99 session latency, ms", true),
    ("login64_cpu_s_per_1000", "proxy CPU s per 1000 logins (64 clients)", false),
    ("bulk_mb_s", "bulk FETCH 200 x 1 MiB, MB/s", true),
    ("bulk_cpu_s_per_gb", "proxy CPU s per GB (bulk)", false),
    ("small_mb_s", "small FETCH 2000 x 4 KiB, MB/s", true),
    ("small_cpu_s_per_gb", "proxy CPU s per GB (small)", false),
    ("bulkz_mb_s", "bulk FETCH, client COMPRESS=DEFLATE, MB/s", true),
    ("bulkz_cpu_s_per_gb", "proxy CPU s per GB (bulk, compressed)", false),
    ("append_seq_msg_s", "APPEND 4 KiB one at a time, messages/s", true),
    ("append_seq_mb_s", "  MB/s", true),
    ("append_seq_p50_ms", "  p50 APPEND latency (send to tagged OK), ms", true),
    ("append_seq_cpu_s_per_1000", "  proxy CPU s per 1000 APPENDs", false),
    ("append_pipe_msg_s", "APPEND 4 KiB, 16 outstanding, messages/s", true),
    ("append_pipe_mb_s", "  MB/s", true),
    ("append_pipe_cpu_s_per_1000", "  proxy CPU s per 1000 APPENDs", false),
    ("idle_kib_per_session", "proxy memory per idle session, KiB (PSS)", false),
];

const GEN_ROWS: &[&str] = &[
    "login16_gen_cpu_pct",
    "login64_gen_cpu_pct",
    "bulk_gen_cpu_pct",
    "small_gen_cpu_pct",
    "bulkz_gen_cpu_pct",
    "append_seq_gen_cpu_pct",
    "append_pipe_gen_cpu_pct",
];

const FOREIGN_ROWS: &[&str] = &[
    "login16_foreign_cpu_pct",
    "login64_foreign_cpu_pct",
    "bulk_foreign_cpu_pct",
    "small_foreign_cpu_pct",
    "bulkz_foreign_cpu_pct",
    "append_seq_foreign_cpu_pct",
    "append_pipe_foreign_cpu_pct",
];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn num(x: f64) -> String {
    if !x.is_finite() {
        "–".into()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// UTC timestamp YYYYmmdd-HHMMSS without a date crate.
fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem / 60 % 60, rem % 60)
}

pub fn report(o: &Opts, recs: &[Rec], na: &[(String, String)], ctx: &str) -> Result<(), String> {
    let mut groups: BTreeMap<(String, String, String), Vec<f64>> = BTreeMap::new();
    for r in recs {
        groups.entry((r.mode.clone(), r.target.clone(), r.metric.clone())).or_default().push(r.value);
    }
    let med = |mode: &str, target: &str, metric: &str| -> Option<f64> {
        groups.get(&(mode.into(), target.into(), metric.into())).map(|v| median(v.clone()))
    };
    let targets: Vec<&str> = TARGETS.iter().copied().filter(|t| o.targets.iter().any(|x| x == t)).collect();
    let modes: Vec<&str> = if o.tls { vec!["plain", "tls"] } else { vec!["plain"] };

    let mut t = String::new();
    let _ = write!(t, "| scenario |");
    for tg in &targets {
        let _ = write!(t, " {tg} |");
    }
    t += "\n|---|";
    for _ in &targets {
        t += "---|";
    }
    t += "\n";
    for mode in &modes {
        let suffix = if *mode == "tls" { " (TLS)" } else { "" };
        for (metric, label, vs_direct) in ROWS {
            // Scenarios left out with --scenarios have no row.
            if targets.iter().all(|tg| med(mode, tg, metric).is_none()) {
                continue;
            }
            let _ = write!(t, "| {label}{suffix} |");
            let d = med(mode, "direct", metric).filter(|_| *vs_direct);
            let n = med(mode, "nginx", metric);
            // imapgate with rules beside imapgate without: the rule engine's cost.
            let g = med(mode, "imapgate", metric);
            for tg in &targets {
                if na.iter().any(|(m, x)| m == mode && x == tg) {
                    t += " n/a (not supported by this build) |";
                    continue;
                }
                let Some(v) = med(mode, tg, metric) else {
                    t += " – |";
                    continue;
                };
                let mut ratios = Vec::new();
                if let Some(d) = d.filter(|d| *d != 0.0 && *tg != "direct") {
                    ratios.push(format!("{:.2}×d", v / d));
                }
                if let Some(n) = n.filter(|n| *n != 0.0 && *tg != "nginx") {
                    ratios.push(format!("{:.2}×n", v / n));
                }
                if let Some(g) = g.filter(|g| *g != 0.0 && *tg == "imapgate-rules") {
                    ratios.push(format!("{:.2}×g", v / g));
                }
                if ratios.is_empty() {
                    let _ = write!(t, " {} |", num(v));
                } else {
                    let _ = write!(t, " {} ({}) |", num(v), ratios.join(", "));
                }
            }
            t += "\n";
        }
        // The load generator's own CPU share (max over its scenarios).
        let _ = write!(t, "| load generator CPU, max % of all cores{suffix} |");
        for tg in &targets {
            let m = GEN_ROWS.iter().filter_map(|g| med(mode, tg, g)).fold(f64::NAN, f64::max);
            let _ = write!(t, " {} |", if m.is_finite() { format!("{m:.0}%") } else { "–".into() });
        }
        t += "\n";
        // CPU used by other processes on the machine during the measurements.
        let _ = write!(t, "| other processes' CPU, max % of all cores{suffix} |");
        for tg in &targets {
            let m = FOREIGN_ROWS.iter().filter_map(|g| med(mode, tg, g)).fold(f64::NAN, f64::max);
            let _ = write!(t, " {} |", if m.is_finite() { format!("{m:.0}%") } else { "–".into() });
        }
        t += "\n";
        // Login errors, if any.
        for c in ["16", "64"] {
            let errs: Vec<String> = targets
                .iter()
                .map(|tg| med(mode, tg, &format!("login{c}_errors")).unwrap_or(0.0))
                .map(|e| format!("{e:.0}"))
                .collect();
            if errs.iter().any(|e| e != "0") {
                let _ = writeln!(t, "| login errors, {c} clients (median per run){suffix} | {} |", errs.join(" | "));
            }
        }
    }
    let notes = format!(
        "Medians of {} runs. (0.66×d, 1.20×n) = ratio to direct Dovecot and to nginx; \
         ×g (imapgate-rules column) = ratio to imapgate without rules. \
         MB = 10^6 bytes. Proxy CPU and memory are summed over the proxy's process tree from /proc \
         (nginx: master and workers, without the auth_http responder; Perdition: parent and session children).\n\n{ctx}\n",
        o.reps
    );
    println!("\n{t}\n{notes}");

    let dir = crate::setup::repo_top().join("bench/results");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let ts = timestamp();
    let mut tsv = String::from("mode\ttarget\trep\tmetric\tvalue\n");
    for r in recs {
        let _ = writeln!(tsv, "{}\t{}\t{}\t{}\t{}", r.mode, r.target, r.rep + 1, r.metric, r.value);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let md = format!("# imapgate bench run {ts}\n\nCommand: `bench/run.sh {}`\n\n{t}\n{notes}", args.join(" "));
    let tsv_path = dir.join(format!("{ts}.tsv"));
    std::fs::write(&tsv_path, tsv).map_err(|e| e.to_string())?;
    std::fs::write(dir.join(format!("{ts}.md")), md).map_err(|e| e.to_string())?;
    println!("raw results: bench/results/{ts}.tsv, table: bench/results/{ts}.md");
    Ok(())
}
