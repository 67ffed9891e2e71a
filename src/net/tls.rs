//! Building rustls configurations from the configuration, before the chroot and privilege
//! drop, so keys may stay readable by root only. Every problem with a certificate, key or
//! CA file (unreadable, not PEM, expired, key not matching) is an admin error reported as
//! `CONFIG:LINE: FILE: problem`, at the line of the key that names the file, by `-t` and
//! at start-up alike.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::config::{
    ClientCertMode, Config, ConfigError, ConfigErrors, FileRef, TlsMode, TlsVersion,
};
use crate::net::x509;

/// Where a distribution keeps the system's trusted CA bundle (Debian/Ubuntu, RHEL/Fedora,
/// SUSE, Alpine/BSD). The first one that exists is used for backends without `ca`.
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// TLS toward the clients of one listener.
#[derive(Debug)]
pub struct ListenerTls {
    /// STARTTLS or implicit.
    pub mode: TlsMode,
    /// Refuse LOGIN and AUTHENTICATE before TLS.
    pub login_requires_tls: bool,
    /// The server side configuration.
    pub config: Arc<ServerConfig>,
}

/// TLS toward one backend.
#[derive(Debug)]
pub struct BackendTls {
    /// STARTTLS or implicit.
    pub mode: TlsMode,
    /// The name the backend's certificate must carry.
    pub server_name: ServerName<'static>,
    /// The client side configuration.
    pub config: Arc<ClientConfig>,
}

/// Every TLS configuration, indexed like `Config::listeners` and `Config::backends`.
#[derive(Debug, Default)]
pub struct Contexts {
    /// Per listener; `None` without TLS.
    pub listeners: Vec<Option<ListenerTls>>,
    /// Per backend; `None` without TLS.
    pub backends: Vec<Option<BackendTls>>,
}

/// Loads every certificate, key and CA file the configuration names.
pub fn load(config: &Config) -> Result<Contexts, ConfigErrors> {
    let mut loader =
        Loader { config, errors: Vec::new(), provider: Arc::new(ring::default_provider()) };
    let listeners = config.listeners.iter().map(|l| loader.listener(l.tls.as_ref()?)).collect();
    let backends = config.backends.iter().map(|b| loader.backend(b)).collect();
    if loader.errors.is_empty() {
        Ok(Contexts { listeners, backends })
    } else {
        Err(ConfigErrors(loader.errors))
    }
}

/// A client configuration for a lookup service (LDAP over TLS): certificates verified
/// against `ca` (PEM), or against the system's CA bundle. Built before the privilege drop.
pub fn lookup_client(ca: Option<&std::path::Path>) -> Result<Arc<ClientConfig>, String> {
    let bundle = match ca {
        Some(path) => path,
        None => SYSTEM_CA_BUNDLES
            .iter()
            .map(std::path::Path::new)
            .find(|p| p.exists())
            .ok_or("no system CA bundle found; set ca = FILE")?,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(bundle)
        .and_then(|iter| iter.collect())
        .map_err(|e| format!("{}: cannot read certificates: {}", bundle.display(), pem_error(e)))?;
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(certs);
    if roots.is_empty() {
        return Err(format!("{}: no usable CA certificate in it", bundle.display()));
    }
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(versions(TlsVersion::V1_2))
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Names the negotiated protocol and cipher suite, e.g. `TLSv1_3/TLS13_AES_256_GCM_SHA384`.
pub fn describe(conn: &rustls::CommonState) -> String {
    let version = conn.protocol_version().map_or("?".into(), |v| format!("{v:?}"));
    let suite = conn.negotiated_cipher_suite().map_or("?".into(), |s| format!("{:?}", s.suite()));
    format!("{version}/{suite}")
}

/// The subject of the peer's certificate, if it presented one.
pub fn peer_subject(conn: &rustls::CommonState) -> Option<String> {
    conn.peer_certificates()?.first().and_then(|c| x509::subject(c))
}

/// Protocol versions from the configured minimum up.
static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

fn versions(min: TlsVersion) -> &'static [&'static rustls::SupportedProtocolVersion] {
    match min {
        TlsVersion::V1_2 => rustls::ALL_VERSIONS,
        TlsVersion::V1_3 => TLS13_ONLY,
    }
}

struct Loader<'a> {
    config: &'a Config,
    errors: Vec<ConfigError>,
    provider: Arc<CryptoProvider>,
}

impl Loader<'_> {
    fn error(&mut self, file: &FileRef, problem: impl std::fmt::Display) {
        let msg = format!("{}: {problem}", file.path.display());
        self.errors.push(ConfigError { path: self.config.path.clone(), line: file.line, msg });
    }

    fn listener(&mut self, tls: &crate::config::ListenerTls) -> Option<ListenerTls> {
        let default = self.certified_key(&tls.cert, &tls.key);
        let mut by_name = Vec::new();
        for sni in &tls.sni {
            if let Some(key) = self.certified_key(&sni.cert, &sni.key) {
                by_name.push((sni.name.clone(), key));
            }
        }
        let builder = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(versions(tls.min_version))
            .ok()?;
        let builder = match (tls.client_cert, &tls.client_ca) {
            (ClientCertMode::None, _) | (_, None) => builder.with_no_client_auth(),
            (mode, Some(ca)) => {
                let roots = Arc::new(self.roots(ca)?);
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&self.provider));
                let verifier = match mode {
                    ClientCertMode::Request => verifier.allow_unauthenticated(),
                    _ => verifier,
                };
                match verifier.build() {
                    Ok(v) => builder.with_client_cert_verifier(v),
                    Err(e) => {
                        self.error(ca, format!("cannot verify client certificates with it: {e}"));
                        return None;
                    }
                }
            }
        };
        let resolver = SniResolver { default: default?, by_name };
        let mut config = builder.with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = vec![b"imap".to_vec()];
        Some(ListenerTls {
            mode: tls.mode,
            login_requires_tls: tls.login_requires_tls,
            config: Arc::new(config),
        })
    }

    fn backend(&mut self, backend: &crate::config::Backend) -> Option<BackendTls> {
        if backend.tls == TlsMode::None {
            return None;
        }
        let name = backend.tls_name.clone().unwrap_or_else(|| backend.host.clone());
        let server_name = match ServerName::try_from(name.clone()) {
            Ok(n) => n,
            Err(e) => {
                let at = FileRef {
                    path: format!("[backend {}]", backend.name).into(),
                    line: backend.line,
                };
                self.error(&at, format!("\"{name}\" cannot be checked against a certificate: {e}"));
                return None;
            }
        };
        let builder = ClientConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(versions(backend.tls_min_version))
            .ok()?;
        let config = if backend.tls_insecure_skip_verify {
            let algorithms = self.provider.signature_verification_algorithms;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(algorithms)))
        } else {
            let roots = match &backend.ca {
                Some(ca) => self.roots(ca)?,
                None => self.system_roots(backend)?,
            };
            builder.with_root_certificates(roots)
        };
        let mut config = config.with_no_client_auth();
        config.alpn_protocols = vec![b"imap".to_vec()];
        Some(BackendTls { mode: backend.tls, server_name, config: Arc::new(config) })
    }

    fn certificates(&mut self, file: &FileRef) -> Option<Vec<CertificateDer<'static>>> {
        let chain: Result<Vec<_>, _> = match CertificateDer::pem_file_iter(&file.path) {
            Ok(iter) => iter.collect(),
            Err(e) => Err(e),
        };
        match chain {
            Ok(chain) if chain.is_empty() => self.error(file, "no PEM certificate in it"),
            Ok(chain) => return Some(chain),
            Err(e) => self.error(file, format!("cannot read certificates: {}", pem_error(e))),
        }
        None
    }

    fn certified_key(&mut self, cert: &FileRef, key: &FileRef) -> Option<Arc<CertifiedKey>> {
        let chain = self.certificates(cert);
        let private = match PrivateKeyDer::from_pem_file(&key.path) {
            Ok(k) => Some(k),
            Err(e) => {
                self.error(key, format!("cannot read the private key: {}", pem_error(e)));
                None
            }
        };
        let (chain, private) = (chain?, private?);
        self.check_validity(cert, &chain[0]);
        match CertifiedKey::from_der(chain, private, &self.provider) {
            Ok(ck) => Some(Arc::new(ck)),
            Err(e) => {
                self.error(
                    key,
                    format!("does not fit the certificate in {}: {e}", cert.path.display()),
                );
                None
            }
        }
    }

    fn check_validity(&mut self, file: &FileRef, cert: &CertificateDer<'_>) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        match x509::validity(cert) {
            None => self.error(file, "the first certificate is not a valid X.509 certificate"),
            Some(v) if v.not_after < now => self.error(file, "the certificate has expired"),
            Some(v) if v.not_before > now => self.error(file, "the certificate is not valid yet"),
            Some(_) => {}
        }
    }

    fn roots(&mut self, file: &FileRef) -> Option<RootCertStore> {
        let mut roots = RootCertStore::empty();
        for cert in self.certificates(file)? {
            if let Err(e) = roots.add(cert) {
                self.error(file, format!("not a usable CA certificate: {e}"));
                return None;
            }
        }
        Some(roots)
    }

    fn system_roots(&mut self, backend: &crate::config::Backend) -> Option<RootCertStore> {
        let Some(bundle) = SYSTEM_CA_BUNDLES.iter().find(|p| std::path::Path::new(p).exists())
        else {
            let at =
                FileRef { path: format!("[backend {}]", backend.name).into(), line: backend.line };
            self.error(&at, "no system CA bundle found; set ca = FILE");
            return None;
        };
        // Problems with the system bundle are reported at the backend that needs it.
        let file = FileRef { path: bundle.into(), line: backend.line };
        let mut roots = RootCertStore::empty();
        let (_, ignored) = roots.add_parsable_certificates(self.certificates(&file)?);
        if ignored > 0 {
            log::debug!("{bundle}: {ignored} certificates ignored");
        }
        Some(roots)
    }
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("{other:?}"),
    }
}

/// Picks the certificate for the name the client asked for (SNI), else the default.
#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    by_name: Vec<(String, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name().map(str::to_ascii_lowercase) else {
            return Some(Arc::clone(&self.default));
        };
        let exact = self.by_name.iter().find(|(n, _)| *n == name);
        let wildcard = || {
            let parent = name.split_once('.')?.1;
            self.by_name.iter().find(|(n, _)| n.strip_prefix("*.") == Some(parent))
        };
        let key = exact.or_else(wildcard).map_or(&self.default, |(_, k)| k);
        Some(Arc::clone(key))
    }
}

/// `tls_insecure_skip_verify = yes`: accepts any certificate, but still checks that the
/// handshake is signed by the key in it (so the session is at least encrypted to someone).
#[derive(Debug)]
struct NoVerification(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
