//! A token introspection endpoint (RFC 7662) for a test's Dovecot oauth2 passdb: a
//! small HTTP/1.1 responder on a loopback port that knows a fixed set of tokens. A
//! known token is `{"active":true,"username":USER}`, any other `{"active":false}`.
//! It records every token it was asked about, so a test can tell which reached it.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct Introspection {
    pub port: u16,
    stop: Arc<AtomicBool>,
    asked: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Introspection {
    /// Starts the endpoint with `tokens`: token → user name.
    pub fn start(tokens: &[(&str, &str)]) -> Introspection {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind introspection port");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let port = listener.local_addr().expect("local addr").port();
        let known: HashMap<String, String> =
            tokens.iter().map(|(t, u)| (t.to_string(), u.to_string())).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(Mutex::new(Vec::new()));
        let (stop2, asked2) = (Arc::clone(&stop), Arc::clone(&asked));
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => answer(conn, &known, &asked2),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Introspection { port, stop, asked, thread: Some(thread) }
    }

    /// The URL for Dovecot's `introspection_url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/introspect", self.port)
    }

    /// Every token asked about so far, in order.
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl Drop for Introspection {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request (headers, then a body of Content-Length bytes, all within 5 s) and
/// answers it; the connection is closed after the answer.
fn answer(mut conn: TcpStream, known: &HashMap<String, String>, asked: &Mutex<Vec<String>>) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let body_start = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match conn.read(&mut chunk) {
            Ok(n) if n > 0 && Instant::now() < deadline => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    };
    let head = String::from_utf8_lossy(&buf[..body_start]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < body_start + length {
        match conn.read(&mut chunk) {
            Ok(n) if n > 0 && Instant::now() < deadline => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    }
    let body = String::from_utf8_lossy(&buf[body_start..body_start + length]).into_owned();
    let token = body
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(percent_decode)
        .unwrap_or_default();
    asked.lock().unwrap().push(token.clone());
    let json = match known.get(&token) {
        Some(user) => format!("{{\"active\":true,\"username\":\"{user}\"}}"),
        None => "{\"active\":false}".to_string(),
    };
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{json}",
        json.len()
    );
    let _ = conn.write_all(response.as_bytes());
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1..i + 3)) {
            (b'%', Some(hex)) => {
                let v = u8::from_str_radix(&String::from_utf8_lossy(hex), 16).unwrap_or(b'?');
                out.push(v);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
