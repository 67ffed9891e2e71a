//! A fake IMAP backend in a test thread on a loopback port, for what a real
//! server will not do: it offers STARTTLS and then either answers the STARTTLS
//! with an OK followed, in the same write, by a plaintext injection (a fake
//! capability and a fake `ig1 OK` to imapgate's LOGIN tag), or refuses it.
//! After TLS it is a minimal server: CAPABILITY, LOGIN with a password check,
//! NOOP, LOGOUT. It records what it saw, in order, for the test to check.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection, StreamOwned};

use super::tls_client::{load_certs, load_key, provider};
use super::WAIT;

/// The bytes the fake sends in one write as its answer to `ig3 STARTTLS`.
pub const INJECTED_OK: &str = "ig3 OK Begin TLS\r\n\
    * OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] injected\r\n\
    ig1 OK injected login\r\n";

/// The password the fake accepts after TLS (for any user).
pub const FAKE_PASSWORD: &str = "right-password";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StartTls {
    /// `ig3 OK` plus injected plaintext in one write, then a real handshake.
    OkWithInjection,
    /// `TAG NO`: the session stays plaintext (imapgate must give up).
    Refuse,
}

pub struct FakeBackend {
    pub port: u16,
    stop: Arc<AtomicBool>,
    events: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeBackend {
    /// Listens on 127.0.0.1 (port 0) and serves each connection in its own thread.
    pub fn start(cert: &Path, key: &Path, mode: StartTls) -> FakeBackend {
        let config = Arc::new(
            ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_no_client_auth()
                .with_single_cert(load_certs(cert), load_key(key))
                .expect("fake backend certificate"),
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake backend");
        let port = listener.local_addr().expect("local_addr").port();
        listener.set_nonblocking(true).expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let events = Arc::new(Mutex::new(Vec::new()));
        let (stop2, events2) = (Arc::clone(&stop), Arc::clone(&events));
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        let (config, events) = (Arc::clone(&config), Arc::clone(&events2));
                        // Detached: every read is bounded by WAIT, so it ends on its own.
                        std::thread::spawn(move || {
                            let note = |e: String| events.lock().unwrap().push(e);
                            if let Err(e) = serve(sock, config, mode, &note) {
                                note(format!("error: {e}"));
                            }
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FakeBackend { port, stop, events, thread: Some(thread) }
    }

    /// What the fake saw so far, e.g. `plain: ig3 STARTTLS`, `tls: LOGIN "u"`.
    pub fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    mut sock: TcpStream,
    config: Arc<ServerConfig>,
    mode: StartTls,
    note: &dyn Fn(String),
) -> io::Result<()> {
    sock.set_nonblocking(false)?;
    sock.set_read_timeout(Some(WAIT))?;
    sock.set_write_timeout(Some(WAIT))?;
    note("connected".into());
    sock.write_all(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] fake\r\n")?;
    // Plaintext phase: one byte at a time, so no TLS bytes are read as IMAP.
    loop {
        let Some(line) = read_line_bytewise(&mut sock)? else {
            note("plain: EOF".into());
            return Ok(());
        };
        note(format!("plain: {}", redact(&line)));
        let (tag, cmd) = split(&line);
        match cmd.to_ascii_uppercase().as_str() {
            "CAPABILITY" => write!(sock, "* CAPABILITY IMAP4rev1 STARTTLS\r\n{tag} OK done\r\n")?,
            "STARTTLS" if mode == StartTls::OkWithInjection => {
                sock.write_all(INJECTED_OK.as_bytes())?; // one write
                break;
            }
            "STARTTLS" => write!(sock, "{tag} NO STARTTLS not available today\r\n")?,
            "LOGIN" | "AUTHENTICATE" => {
                // A proxy that sends credentials here has used a plaintext backend.
                write!(sock, "{tag} OK plaintext login accepted\r\n")?
            }
            "LOGOUT" => {
                write!(sock, "* BYE fake\r\n{tag} OK done\r\n")?;
                return Ok(());
            }
            _ => write!(sock, "{tag} BAD unexpected before TLS\r\n")?,
        }
    }

    let conn = ServerConnection::new(config).map_err(io::Error::other)?;
    let mut tls = StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    note("tls: handshake done".into());
    let mut reader = BufReader::new(TlsRef(&mut tls));
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line)? == 0 {
            note("tls: EOF".into());
            return Ok(());
        }
        let line = String::from_utf8_lossy(&line).trim_end().to_string();
        note(format!("tls: {}", redact(&line)));
        let (tag, cmd) = split(&line);
        let verb = cmd.split(' ').next().unwrap_or("").to_ascii_uppercase();
        let answer = match verb.as_str() {
            "CAPABILITY" => format!("* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n{tag} OK done\r\n"),
            "LOGIN" => {
                let pass = cmd.rsplit(' ').next().unwrap_or("").trim_matches('"');
                if pass == FAKE_PASSWORD {
                    format!("{tag} OK [CAPABILITY IMAP4rev1 IDLE] fake: logged in after TLS\r\n")
                } else {
                    format!("{tag} NO [AUTHENTICATIONFAILED] fake: wrong password\r\n")
                }
            }
            "LOGOUT" => format!("* BYE fake\r\n{tag} OK done\r\n"),
            _ => format!("{tag} OK {verb} done by fake\r\n"),
        };
        let w = reader.get_mut();
        w.0.write_all(answer.as_bytes())?;
        w.0.flush()?;
        if verb == "LOGOUT" {
            w.0.conn.send_close_notify();
            let _ = w.0.flush();
            return Ok(());
        }
    }
}

struct TlsRef<'a>(&'a mut StreamOwned<ServerConnection, TcpStream>);

impl Read for TlsRef<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

fn read_line_bytewise(sock: &mut TcpStream) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\n") {
        if sock.read(&mut b)? == 0 {
            return Ok(None);
        }
        line.push(b[0]);
        if line.len() > 8192 {
            return Err(io::Error::other("line too long"));
        }
    }
    Ok(Some(String::from_utf8_lossy(&line).trim_end().to_string()))
}

fn split(line: &str) -> (&str, &str) {
    line.split_once(' ').unwrap_or((line, ""))
}

/// A LOGIN line without its password.
fn redact(line: &str) -> String {
    let (tag, cmd) = split(line);
    if cmd.to_ascii_uppercase().starts_with("LOGIN ") {
        let user = cmd.split(' ').nth(1).unwrap_or("");
        format!("{tag} LOGIN {user}")
    } else {
        line.to_string()
    }
}
