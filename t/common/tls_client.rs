//! A rustls client for the tests: configurations (trusting the test CA, with or
//! without a client certificate, or trusting anything to inspect what a server
//! presents), a handshake bounded by socket timeouts, and [`TlsConn`], which
//! plugs a TLS stream into the harness's [`Client`](super::Client).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};

use super::client::Conn;
use super::WAIT;

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

pub fn load_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
}

pub fn load_key(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
}

/// A client configuration trusting only the CA in `ca`, presenting the
/// certificate and key in `client` if given.
pub fn client_config(ca: &Path, client: Option<(&Path, &Path)>) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(ca) {
        roots.add(c).expect("add CA certificate");
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert), load_key(key))
            .expect("client certificate and key"),
    };
    Arc::new(config)
}

/// A client configuration that accepts any server certificate (still checking
/// the handshake signature): for looking at what a server presents.
pub fn accept_any_config() -> Arc<ClientConfig> {
    let p = provider();
    let verifier = AcceptAny(p.signature_verification_algorithms);
    let config = ClientConfig::builder_with_provider(p)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Arc::new(config)
}

#[derive(Debug)]
struct AcceptAny(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAny {
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

/// `name` as a rustls server name: a DNS name (sent as SNI) or an IP address
/// (no SNI is sent for those).
pub fn server_name(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_string()).expect("valid server name")
}

type Stream = StreamOwned<ClientConnection, TcpStream>;

/// A TLS client connection; clones share the one stream (the harness client
/// reads and writes from a single thread, one call at a time).
#[derive(Clone)]
pub struct TlsConn(Arc<Mutex<Stream>>);

impl TlsConn {
    /// Runs the client handshake on `sock`, bounded by [`WAIT`].
    pub fn handshake(
        sock: TcpStream,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<TlsConn> {
        sock.set_read_timeout(Some(WAIT))?;
        sock.set_write_timeout(Some(WAIT))?;
        let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut stream = StreamOwned::new(conn, sock);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(TlsConn(Arc::new(Mutex::new(stream))))
    }

    /// Connects to `127.0.0.1:port` and runs the handshake (implicit TLS).
    pub fn connect(
        port: u16,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<TlsConn> {
        let sa = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let sock = TcpStream::connect_timeout(&sa, Duration::from_secs(10))?;
        sock.set_nodelay(true).ok();
        TlsConn::handshake(sock, config, name)
    }

    fn lock(&self) -> MutexGuard<'_, Stream> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// DER of the certificate the server presented (first of its chain).
    pub fn peer_cert(&self) -> Vec<u8> {
        let s = self.lock();
        let certs = s.conn.peer_certificates().expect("server presented no certificate");
        certs[0].as_ref().to_vec()
    }

    /// Reads with `timeout`: Ok(bytes) (empty on EOF) or the error.
    pub fn read_some(&self, timeout: Duration) -> io::Result<Vec<u8>> {
        let mut s = self.lock();
        s.sock.set_read_timeout(Some(timeout))?;
        let mut buf = vec![0u8; 16 * 1024];
        let r = s.read(&mut buf);
        s.sock.set_read_timeout(Some(WAIT))?;
        let n = r?;
        buf.truncate(n);
        Ok(buf)
    }

    pub fn write_all_now(&self, b: &[u8]) -> io::Result<()> {
        let mut s = self.lock();
        s.write_all(b)?;
        s.flush()
    }
}

impl Read for TlsConn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.lock().read(buf)
    }
}

impl Write for TlsConn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.lock().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.lock().flush()
    }
}

impl Conn for TlsConn {
    fn try_clone_box(&self) -> io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.clone()))
    }
    fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        let s = self.lock();
        s.sock.set_read_timeout(t)?;
        s.sock.set_write_timeout(t)
    }
}

/// Reads one CRLF-terminated line from a plaintext socket a byte at a time, so
/// nothing after it (a TLS handshake) is consumed. Panics on EOF or timeout.
pub fn read_plain_line(sock: &mut TcpStream) -> Vec<u8> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\n") {
        match sock.read(&mut b) {
            Ok(0) => panic!("EOF after {:?}", String::from_utf8_lossy(&line)),
            Ok(_) => line.push(b[0]),
            Err(e) => panic!("read failed after {:?}: {e}", String::from_utf8_lossy(&line)),
        }
        assert!(line.len() < 64 * 1024, "line too long");
    }
    line
}
