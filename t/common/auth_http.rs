//! An nginx mail `auth_http` service for tests, written to nginx's documented protocol
//! (<https://nginx.org/en/docs/mail/ngx_mail_auth_http_module.html>): a GET whose
//! `Auth-*` and `Client-*` headers describe the login, answered by headers only. It
//! knows a table of users: the right password gets `Auth-Status: OK` with the user's
//! `Auth-Server`/`Auth-Port` (and `Auth-User`/`Auth-Pass` when set), anything else
//! `Auth-Status: Invalid login or password` with `Auth-Wait: 1`. Every request's headers
//! are recorded.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How one user is answered: its password, and the headers of an OK.
#[derive(Clone, Debug)]
pub struct Account {
    pub password: String,
    pub answer: Vec<(String, String)>,
}

pub struct AuthHttp {
    pub port: u16,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<HashMap<String, String>>>>,
    thread: Option<JoinHandle<()>>,
}

fn unescape(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() + 1 {
            if let Some(x) = b
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())
            {
                out.push(x);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl AuthHttp {
    /// Serves `accounts` (login → account) on a free loopback port.
    pub fn start(accounts: HashMap<String, Account>) -> AuthHttp {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind auth_http port");
        listener.set_nonblocking(true).expect("non-blocking");
        let port = listener.local_addr().unwrap().port();
        AuthHttp::serve(listener, port, accounts)
    }

    fn serve(listener: TcpListener, port: u16, accounts: HashMap<String, Account>) -> AuthHttp {
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (stop2, requests2) = (Arc::clone(&stop), Arc::clone(&requests));
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => answer(conn, &accounts, &requests2),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        AuthHttp { port, stop, requests, thread: Some(thread) }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mail/auth", self.port)
    }

    /// The headers of every request so far.
    pub fn requests(&self) -> Vec<HashMap<String, String>> {
        self.requests.lock().unwrap().clone()
    }

    /// Stops answering: the port closes.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AuthHttp {
    fn drop(&mut self) {
        self.stop();
    }
}

fn answer(
    mut conn: TcpStream,
    accounts: &HashMap<String, Account>,
    requests: &Mutex<Vec<HashMap<String, String>>>,
) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut chunk) {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut headers: HashMap<String, String> = HashMap::new();
    headers.insert(":request".into(), request_line);
    for line in lines.take_while(|l| !l.is_empty()) {
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    requests.lock().unwrap().push(headers.clone());
    let user = unescape(headers.get("Auth-User").map(String::as_str).unwrap_or(""));
    let pass = unescape(headers.get("Auth-Pass").map(String::as_str).unwrap_or(""));
    let mut out = String::from("HTTP/1.0 200 OK\r\n");
    match accounts.get(&user).filter(|a| a.password == pass) {
        Some(account) => {
            out.push_str("Auth-Status: OK\r\n");
            for (k, v) in &account.answer {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        None => out.push_str("Auth-Status: Invalid login or password\r\nAuth-Wait: 1\r\n"),
    }
    out.push_str("\r\n");
    let _ = conn.write_all(out.as_bytes());
}
