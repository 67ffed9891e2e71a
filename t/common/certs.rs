//! Test certificates made with the `openssl` CLI into a temp dir, fresh for each
//! test: a private CA, server certificates (for `localhost` + 127.0.0.1, for an
//! SNI name, for a wrong name), an expired one, and a client certificate.
//! All keys are ECDSA P-256 (fast to make, accepted by rustls and Dovecot).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{require_tool, run_with_timeout, TempDir};

/// The SNI name that has its own certificate on SNI-enabled listeners.
pub const SNI_NAME: &str = "mail.example.test";
/// The only name the "wrong" certificate is valid for.
pub const WRONG_NAME: &str = "wrong.example.test";
/// The client certificate's subject as imapgate logs it.
pub const CLIENT_SUBJECT: &str = "CN=test-client.example";

const OPENSSL_CNF: &str = r#"
[req]
distinguished_name = dn
prompt = no

[dn]
CN = placeholder

[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash

[server_localhost]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[server_sni]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:mail.example.test
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[server_wrong]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:wrong.example.test
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[ca]
default_ca = ca_default

[ca_default]
database = index.txt
new_certs_dir = newcerts
serial = serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none

[policy_any]
commonName = supplied
"#;

/// Paths of the generated PEM files (all inside `dir`).
pub struct Certs {
    dir: TempDir,
    pub ca: PathBuf,
    /// For `localhost` and IP 127.0.0.1: listeners' default, Dovecot's.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// For [`SNI_NAME`] only.
    pub sni_cert: PathBuf,
    pub sni_key: PathBuf,
    /// For [`WRONG_NAME`] only.
    pub wrong_cert: PathBuf,
    pub wrong_key: PathBuf,
    /// For `localhost`, valid from 2019-01-01 to 2020-01-01.
    pub expired_cert: PathBuf,
    pub expired_key: PathBuf,
    /// Client certificate ([`CLIENT_SUBJECT`]) signed by the CA.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Certs {
    pub fn generate() -> Certs {
        let dir = TempDir::new("certs");
        let d = dir.path();
        std::fs::write(d.join("openssl.cnf"), OPENSSL_CNF).expect("write openssl.cnf");
        std::fs::write(d.join("index.txt"), "").expect("write index.txt");
        std::fs::write(d.join("serial"), "1000\n").expect("write serial");
        std::fs::create_dir_all(d.join("newcerts")).expect("mkdir newcerts");

        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-config",
                "openssl.cnf",
                "-extensions",
                "v3_ca",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "30",
                "-subj",
                "/CN=imapgate test CA",
            ],
        );
        let signed = |name: &str, subject: &str, ext: &str| {
            csr(&dir, name, subject);
            openssl(
                &dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-set_serial",
                    &serial(),
                    "-days",
                    "30",
                    "-sha256",
                    "-extfile",
                    "openssl.cnf",
                    "-extensions",
                    ext,
                    "-out",
                    &format!("{name}.pem"),
                ],
            );
        };
        signed("server", "/CN=localhost", "server_localhost");
        signed("sni", &format!("/CN={SNI_NAME}"), "server_sni");
        signed("wrong", &format!("/CN={WRONG_NAME}"), "server_wrong");
        signed("client", "/CN=test-client.example", "client");

        // `openssl x509` (3.0) cannot set dates in the past; `openssl ca` can.
        csr(&dir, "expired", "/CN=localhost");
        openssl(
            &dir,
            &[
                "ca",
                "-batch",
                "-config",
                "openssl.cnf",
                "-cert",
                "ca.pem",
                "-keyfile",
                "ca.key",
                "-in",
                "expired.csr",
                "-out",
                "expired.pem",
                "-notext",
                "-startdate",
                "20190101000000Z",
                "-enddate",
                "20200101000000Z",
                "-extensions",
                "server_localhost",
                "-extfile",
                "openssl.cnf",
            ],
        );

        let p = |n: &str| d.join(n);
        let certs = Certs {
            ca: p("ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server.key"),
            sni_cert: p("sni.pem"),
            sni_key: p("sni.key"),
            wrong_cert: p("wrong.pem"),
            wrong_key: p("wrong.key"),
            expired_cert: p("expired.pem"),
            expired_key: p("expired.key"),
            client_cert: p("client.pem"),
            client_key: p("client.key"),
            dir,
        };
        for f in [&certs.ca, &certs.server_cert, &certs.expired_cert, &certs.client_cert] {
            let pem = std::fs::read_to_string(f).unwrap_or_default();
            assert!(pem.contains("BEGIN CERTIFICATE"), "{} is not a PEM certificate", f.display());
        }
        certs
    }

    /// The directory holding the files (and room for more).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn serial() -> String {
    format!("{}", 0x1000 + super::unique())
}

fn csr(dir: &TempDir, name: &str, subject: &str) {
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-config",
            "openssl.cnf",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            subject,
        ],
    );
}

/// Runs `openssl ARGS` in the certs dir; panics with its output on failure.
fn openssl(dir: &TempDir, args: &[&str]) {
    let bin = require_tool("openssl", "openssl");
    let mut cmd = Command::new(bin);
    cmd.args(args).current_dir(dir.path());
    let out = run_with_timeout(cmd, dir, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "openssl {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout_text(),
        out.stderr_text()
    );
}

/// The DER bytes of the first certificate in a PEM file.
pub fn first_cert_der(path: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let cert = CertificateDer::pem_file_iter(path)
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
        .next()
        .unwrap_or_else(|| panic!("{}: no certificate", path.display()))
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
    cert.as_ref().to_vec()
}
