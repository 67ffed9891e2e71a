//! TLS keys of `[listener NAME]` and `[backend NAME]` sections: modes, certificate and key
//! files, certificates chosen by SNI, client certificates and backend verification.
//!
//! Parsing and consistency checks only: no file named here is opened. Each file keeps the
//! line of the key that named it ([`FileRef`]), so that the module that loads the files can
//! report an unreadable or mismatched certificate as `PATH:LINE: ...` at that key.
//! Relative file names are resolved against the directory of the configuration file.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::error::Diag;
use super::ini::Section;
use super::value::{is_hostname, parse_yes_no};
use super::{first, value_of};

/// A file named in the configuration, with the line of the key that named it.
///
/// `path` is already resolved: a relative name in the file is joined to the directory of
/// the configuration file (as given to [`Config::load`](super::Config::load), so it may
/// itself be relative to the working directory at load time); absolute names are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// The resolved path.
    pub path: PathBuf,
    /// 1-based line of the key (`cert`, `key`, `sni_cert`, `client_ca`, `ca`).
    pub line: usize,
}

/// `tls = none | starttls | implicit`, on either side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plaintext IMAP.
    None,
    /// Plaintext first, upgraded by the IMAP `STARTTLS` command.
    Starttls,
    /// TLS from the first byte (the port 993 style).
    Implicit,
}

impl TlsMode {
    /// The word used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::None => "none",
            TlsMode::Starttls => "starttls",
            TlsMode::Implicit => "implicit",
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `tls_min_version = 1.2 | 1.3`: the oldest protocol version accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 (the default).
    V1_2,
    /// TLS 1.3.
    V1_3,
}

impl TlsVersion {
    /// The value used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        }
    }
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `client_cert = none | request | require` on a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertMode {
    /// No client certificate is asked for.
    None,
    /// Asked for; a client without one is still accepted, one with a bad one is not.
    Request,
    /// Asked for; the handshake fails without a certificate signed by `client_ca`.
    Require,
}

impl ClientCertMode {
    /// The word used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientCertMode::None => "none",
            ClientCertMode::Request => "request",
            ClientCertMode::Require => "require",
        }
    }
}

/// One `sni_cert = NAME CERTFILE KEYFILE` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniCert {
    /// Lower-case DNS name, or `*.domain` for any one label in front of `domain`.
    pub name: String,
    /// Certificate chain (PEM); its line is the `sni_cert` line.
    pub cert: FileRef,
    /// Private key (PEM); its line is the `sni_cert` line.
    pub key: FileRef,
}

/// TLS toward the clients of one listener (`tls = starttls | implicit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// [`TlsMode::Starttls`] or [`TlsMode::Implicit`], never [`TlsMode::None`].
    pub mode: TlsMode,
    /// `cert`: the default certificate chain (PEM).
    pub cert: FileRef,
    /// `key`: the private key of `cert` (PEM).
    pub key: FileRef,
    /// `sni_cert` lines in file order: certificates chosen by the client's SNI.
    pub sni: Vec<SniCert>,
    /// `tls_min_version`, default 1.2.
    pub min_version: TlsVersion,
    /// `login_requires_tls`, default true: refuse LOGIN/AUTHENTICATE before STARTTLS.
    /// Only has an effect with [`TlsMode::Starttls`].
    pub login_requires_tls: bool,
    /// `client_cert`, default none.
    pub client_cert: ClientCertMode,
    /// `client_ca`: CA bundle for client certificates; `Some` iff `client_cert` is not none.
    pub client_ca: Option<FileRef>,
}

/// Keys of this module allowed in `[listener NAME]`; `sni_cert` is repeatable.
pub(crate) const LISTENER_KEYS: &[&str] = &[
    "tls",
    "cert",
    "key",
    "sni_cert",
    "tls_min_version",
    "login_requires_tls",
    "client_cert",
    "client_ca",
];

/// Keys of this module allowed in `[backend NAME]`.
pub(crate) const BACKEND_KEYS: &[&str] =
    &["tls", "ca", "tls_name", "tls_insecure_skip_verify", "tls_min_version"];

/// The TLS settings of a backend, before they are spread over `Backend`'s fields.
pub(crate) struct BackendTls {
    pub(crate) mode: TlsMode,
    pub(crate) ca: Option<FileRef>,
    pub(crate) tls_name: Option<String>,
    pub(crate) insecure_skip_verify: bool,
    pub(crate) min_version: TlsVersion,
}

const NEEDS_TLS: &str = "only valid with tls = starttls or implicit";

/// Types the TLS keys of a listener. `None` means no TLS, or errors (reported to `diag`;
/// the caller compares the error count).
pub(crate) fn listener(sec: &Section, base: &Path, diag: &mut Diag) -> Option<ListenerTls> {
    // Every value is typed first, so that bad values are reported whatever the mode.
    let mode = mode_of(sec, diag);
    let cert = file_of(sec, "cert", base, diag);
    let key = file_of(sec, "key", base, diag);
    let sni = sni_certs(sec, base, diag);
    let min_version = value_of(sec, "tls_min_version", diag, parse_version);
    let login_requires_tls = value_of(sec, "login_requires_tls", diag, parse_yes_no);
    let client_cert = value_of(sec, "client_cert", diag, parse_client_cert);
    let client_ca = file_of(sec, "client_ca", base, diag);
    let (mode, tls_line) = mode?;
    if mode == TlsMode::None {
        for k in ["cert", "key", "tls_min_version", "client_ca"] {
            if let Some(e) = first(sec, k) {
                diag.err(e.line, format!("{k}: {NEEDS_TLS}"));
            }
        }
        for e in sec.entries.iter().filter(|e| e.key == "sni_cert") {
            diag.err(e.line, format!("sni_cert: {NEEDS_TLS}"));
        }
        if let (Some(true), Some(e)) = (login_requires_tls, first(sec, "login_requires_tls")) {
            diag.err(e.line, "login_requires_tls = yes needs tls = starttls or implicit");
        }
        if let (Some(ClientCertMode::Request | ClientCertMode::Require), Some(e)) =
            (client_cert, first(sec, "client_cert"))
        {
            diag.err(e.line, format!("client_cert: {NEEDS_TLS}"));
        }
        return None;
    }
    for k in ["cert", "key"] {
        if first(sec, k).is_none() {
            diag.err(tls_line, format!("missing key {k:?} (required with tls = {mode})"));
        }
    }
    // A bad client_cert value is already reported; its pairing with client_ca is not checked.
    let cc_given = first(sec, "client_cert");
    match (client_cert, cc_given, first(sec, "client_ca")) {
        (Some(m @ (ClientCertMode::Request | ClientCertMode::Require)), Some(e), None) => {
            diag.err(
                e.line,
                format!("missing key \"client_ca\" (required with client_cert = {})", m.as_str()),
            );
        }
        (Some(ClientCertMode::None), _, Some(e)) | (None, None, Some(e)) => {
            diag.err(e.line, "client_ca: only valid with client_cert = request or require");
        }
        _ => {}
    }
    Some(ListenerTls {
        mode,
        cert: cert?,
        key: key?,
        sni,
        min_version: min_version.unwrap_or(TlsVersion::V1_2),
        login_requires_tls: login_requires_tls.unwrap_or(true),
        client_cert: client_cert.unwrap_or(ClientCertMode::None),
        client_ca,
    })
}

/// Types the TLS keys of a backend. `None` only if the `tls` value itself is bad; other
/// problems are reported to `diag` and the caller compares the error count.
pub(crate) fn backend(sec: &Section, base: &Path, diag: &mut Diag) -> Option<BackendTls> {
    let mode = mode_of(sec, diag);
    let ca = file_of(sec, "ca", base, diag);
    let tls_name = value_of(sec, "tls_name", diag, parse_tls_name);
    let insecure_skip_verify = value_of(sec, "tls_insecure_skip_verify", diag, parse_yes_no);
    let min_version = value_of(sec, "tls_min_version", diag, parse_version);
    let (mode, _) = mode?;
    if mode == TlsMode::None {
        for k in ["ca", "tls_name", "tls_insecure_skip_verify", "tls_min_version"] {
            if let Some(e) = first(sec, k) {
                diag.err(e.line, format!("{k}: {NEEDS_TLS}"));
            }
        }
    }
    Some(BackendTls {
        mode,
        ca,
        tls_name,
        insecure_skip_verify: insecure_skip_verify.unwrap_or(false),
        min_version: min_version.unwrap_or(TlsVersion::V1_2),
    })
}

/// `tls` and the line it is on (0 when absent, which means none); `None` if the value is bad.
fn mode_of(sec: &Section, diag: &mut Diag) -> Option<(TlsMode, usize)> {
    match first(sec, "tls") {
        None => Some((TlsMode::None, 0)),
        Some(e) => value_of(sec, "tls", diag, parse_mode).map(|m| (m, e.line)),
    }
}

fn parse_mode(s: &str) -> Result<TlsMode, String> {
    match s.to_ascii_lowercase().as_str() {
        "none" => Ok(TlsMode::None),
        "starttls" => Ok(TlsMode::Starttls),
        "implicit" => Ok(TlsMode::Implicit),
        _ => Err(format!("invalid value {s:?} (expected none, starttls or implicit)")),
    }
}

fn parse_version(s: &str) -> Result<TlsVersion, String> {
    match s {
        "1.2" => Ok(TlsVersion::V1_2),
        "1.3" => Ok(TlsVersion::V1_3),
        _ => Err(format!("invalid value {s:?} (expected 1.2 or 1.3)")),
    }
}

fn parse_client_cert(s: &str) -> Result<ClientCertMode, String> {
    match s.to_ascii_lowercase().as_str() {
        "none" => Ok(ClientCertMode::None),
        "request" => Ok(ClientCertMode::Request),
        "require" => Ok(ClientCertMode::Require),
        _ => Err(format!("invalid value {s:?} (expected none, request or require)")),
    }
}

/// `tls_name`: a DNS name or an IP address (IPv6 bare or in brackets) to verify.
fn parse_tls_name(s: &str) -> Result<String, String> {
    let inner = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(s);
    if inner.parse::<IpAddr>().is_ok() {
        return Ok(inner.to_string());
    }
    if is_hostname(s) {
        return Ok(s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase());
    }
    Err(format!("invalid name {s:?} (expected a DNS name or an IP address)"))
}

/// The name of an `sni_cert` line: a DNS name or `*.domain`, lower-cased, without a
/// trailing dot. IP addresses are refused: SNI carries DNS names only.
fn parse_sni_name(s: &str) -> Result<String, String> {
    let bad = || format!("invalid name {s:?} (expected a DNS name or *.domain)");
    let lower = s.to_ascii_lowercase();
    let lower = lower.strip_suffix('.').unwrap_or(&lower);
    if lower.parse::<IpAddr>().is_ok() {
        return Err(format!("invalid name {s:?} (SNI carries DNS names, not IP addresses)"));
    }
    let domain = lower.strip_prefix("*.").unwrap_or(lower);
    if domain.ends_with('.') || !is_hostname(domain) {
        return Err(bad());
    }
    Ok(lower.to_string())
}

/// A single-file key: the whole value is the path, resolved against `base`.
fn file_of(sec: &Section, key: &str, base: &Path, diag: &mut Diag) -> Option<FileRef> {
    let line = first(sec, key)?.line;
    value_of(sec, key, diag, |s| {
        if s.is_empty() {
            Err("empty path".to_string())
        } else {
            Ok(FileRef { path: base.join(s), line })
        }
    })
}

/// `sni_cert = NAME CERTFILE KEYFILE` lines; each NAME may appear once.
fn sni_certs(sec: &Section, base: &Path, diag: &mut Diag) -> Vec<SniCert> {
    let mut out = Vec::new();
    let mut lines: HashMap<String, usize> = HashMap::new();
    for e in sec.entries.iter().filter(|e| e.key == "sni_cert") {
        let fields: Vec<&str> = e.value.split_whitespace().collect();
        let [name, cert, key] = fields[..] else {
            diag.err(e.line, "sni_cert: expected \"NAME CERTFILE KEYFILE\"");
            continue;
        };
        let name = match parse_sni_name(name) {
            Ok(n) => n,
            Err(m) => {
                diag.err(e.line, format!("sni_cert: {m}"));
                continue;
            }
        };
        if let Some(first) = lines.get(&name) {
            diag.err(e.line, format!("sni_cert: duplicate name {name:?} (first at line {first})"));
            continue;
        }
        lines.insert(name.clone(), e.line);
        let file = |p: &str| FileRef { path: base.join(p), line: e.line };
        out.push(SniCert { name, cert: file(cert), key: file(key) });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_names() {
        assert_eq!(parse_sni_name("Mail.Example.ORG").as_deref(), Ok("mail.example.org"));
        assert_eq!(parse_sni_name("*.example.org.").as_deref(), Ok("*.example.org"));
        assert_eq!(parse_sni_name("x.").as_deref(), Ok("x"));
        for s in ["", "*", "*.", "a.*.b", "*.*.b", "*a.b", "a b", "a..b", "-a.b", "a/b", "x.."] {
            assert!(parse_sni_name(s).is_err(), "{s:?}");
        }
        assert!(parse_sni_name("192.0.2.1").unwrap_err().contains("not IP"));
        assert!(parse_sni_name("::1").is_err());
    }

    #[test]
    fn tls_names() {
        assert_eq!(parse_tls_name("IMAP.example.org").as_deref(), Ok("imap.example.org"));
        assert_eq!(parse_tls_name("[::1]").as_deref(), Ok("::1"));
        assert_eq!(parse_tls_name("192.0.2.1").as_deref(), Ok("192.0.2.1"));
        for s in ["", "a b", "*.example.org", "h:993"] {
            assert!(parse_tls_name(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn words() {
        assert_eq!(parse_mode("STARTTLS"), Ok(TlsMode::Starttls));
        assert_eq!(parse_version("1.3"), Ok(TlsVersion::V1_3));
        assert!(parse_version("1.1").is_err());
        assert!(parse_version("tls1.3").is_err());
        assert_eq!(parse_client_cert("Require"), Ok(ClientCertMode::Require));
        assert!(parse_client_cert("optional").is_err());
    }
}
