//! Connecting to a backend and logging in there with the client's credentials.
//!
//! This runs while the client waits for its LOGIN answer, so it uses blocking I/O bounded
//! by the backend's `connect_timeout` and `timeout`. Responses are read whole with the
//! server-side framer, so a literal in an untagged response cannot desynchronise us.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{self, BackendLogin, LoginMethod, TlsMode};
use crate::imap::bearer::Bearer;
use crate::imap::capability;
use crate::imap::command::push_quoted;
use crate::imap::framer::{Event, Framer, Side};
use crate::imap::response::{self, Kind};
use crate::imap::sasl::{self, Secret};
use crate::net::tls::{self, BackendTls};
use crate::net::transport::Transport;

/// A logged-in backend connection, ready for the relay.
#[derive(Debug)]
pub struct Session {
    /// The connection, still in blocking mode.
    pub stream: Transport,
    /// Bytes the backend sent after its login answer; they belong to the relay.
    pub leftover: Vec<u8>,
    /// The backend's capabilities after login.
    pub capabilities: Vec<String>,
    /// The backend's capabilities before login.
    pub pre_login: Vec<String>,
    /// The text of the backend's tagged OK.
    pub ok_text: String,
    /// Protocol and cipher suite when the backend connection is TLS.
    pub tls: Option<String>,
    /// The link to the backend is compressed (COMPRESS=DEFLATE).
    pub compressed: bool,
}

/// Why a login on the backend did not succeed.
#[derive(Debug)]
pub enum LoginError {
    /// The backend could not be used: unreachable, timed out, refused us, spoke nonsense.
    Unavailable(String),
    /// The backend rejected the credentials; holds its `NO [code] text` without the tag.
    Rejected(String),
    /// The backend is fine but cannot take this login (it no longer offers the client's
    /// bearer-token mechanism): the next backend of a pool may, nothing is marked down.
    Unsupported(String),
    /// The client did not answer the backend's challenge with a response that can be
    /// sent on (the session knows why); the backend connection is dropped.
    Cancelled,
}

/// How imapgate proves the user's identity to a backend.
#[derive(Debug, Clone, Copy)]
pub enum Proof<'a> {
    /// A password: LOGIN or AUTHENTICATE PLAIN, as the backend's `login_method` says.
    Password(&'a Secret),
    /// The client's bearer token, in its own mechanism.
    Bearer(&'a Bearer),
    /// A master user's login on behalf of the user: AUTHENTICATE PLAIN with the user as
    /// authorization identity (Dovecot's master passdb, Cyrus's proxy authorization).
    Master { user: &'a str, password: &'a Secret },
}

/// Passes a challenge the backend sent during a bearer-token login (its error report)
/// to the client and returns the client's response line, or `None` to give up.
pub type Challenges<'a> = dyn FnMut(&[u8]) -> Option<Secret> + 'a;

/// At most this many challenges in one bearer-token login (RFC 7628 has one).
const MAX_CHALLENGES: usize = 3;

impl fmt::Display for LoginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoginError::Unavailable(why) => write!(f, "backend unavailable: {why}"),
            LoginError::Rejected(answer) => write!(f, "backend said {answer}"),
            LoginError::Unsupported(why) => write!(f, "backend cannot take this login: {why}"),
            LoginError::Cancelled => write!(f, "the client cancelled the login"),
        }
    }
}

fn unavailable(why: impl Into<String>) -> LoginError {
    LoginError::Unavailable(why.into())
}

/// Tags imapgate uses on the backend before handing the session to the client.
const TAG_CAPABILITY: &str = "ig0";
const TAG_LOGIN: &str = "ig1";
const TAG_CAPABILITY_AFTER: &str = "ig2";

const TAG_STARTTLS: &str = "ig3";
const TAG_ID: &str = "ig4";
const TAG_LOGOUT: &str = "ig5";
const TAG_COMPRESS: &str = "ig6";

/// What a backend may learn about the client before login.
#[derive(Debug, Default)]
pub struct ClientInfo<'a> {
    /// The client's ID parameters, when it sent ID.
    pub id: Option<&'a [(String, Option<String>)]>,
    /// The client's address, when it has one.
    pub addr: Option<SocketAddr>,
    /// The session id, for `x-session-id`.
    pub session: u64,
}

/// RFC 2971 allows 30 field-value pairs in one ID command.
const ID_MAX_PAIRS: usize = 30;

/// The ID command for a backend. imapgate's own fields (for a backend that trusts it) come
/// first, so no number of client fields can push them out; client fields that a trusting
/// backend would take for imapgate's (`x-originating-*`, `x-connected-*`, `x-proxy-*`,
/// `x-session-*`, `x-forward-*`) are dropped, and the rest fill the remaining room.
fn id_command(client: &ClientInfo<'_>, forward: bool, trusted: bool) -> Vec<u8> {
    let mut params: Vec<(String, String)> = Vec::new();
    if trusted {
        if let Some(addr) = client.addr {
            params.push(("x-originating-ip".into(), addr.ip().to_string()));
            params.push(("x-originating-port".into(), addr.port().to_string()));
        }
        params.push(("x-session-id".into(), format!("imapgate-{}", client.session)));
    }
    let reserved = |key: &str| {
        let key = key.to_ascii_lowercase();
        ["x-originating-", "x-connected-", "x-proxy-", "x-session-", "x-forward-"]
            .iter()
            .any(|p| key.starts_with(p))
    };
    if forward {
        let fields = client.id.unwrap_or_default().iter();
        let fields = fields.filter(|(k, _)| !reserved(k));
        params.extend(fields.filter_map(|(k, v)| Some((k.clone(), v.clone()?))));
    }
    let mut pairs = Vec::new();
    for (k, v) in &params {
        let (k, v) = (&k.as_bytes()[..k.len().min(30)], &v.as_bytes()[..v.len().min(1024)]);
        // Pairs that cannot be quoted are left out rather than sent as literals.
        let mut pair = Vec::new();
        if push_quoted(&mut pair, k) && {
            pair.push(b' ');
            push_quoted(&mut pair, v)
        } {
            pairs.push(pair);
        }
        if pairs.len() == ID_MAX_PAIRS {
            break;
        }
    }
    let mut line = format!("{TAG_ID} ID ").into_bytes();
    if pairs.is_empty() {
        line.extend_from_slice(b"NIL");
    } else {
        line.push(b'(');
        line.extend_from_slice(&pairs.join(&b' '));
        line.push(b')');
    }
    line.extend_from_slice(b"\r\n");
    line
}

/// A backend connection that greeted us, before login.
pub struct Greeted {
    conn: Conn,
    /// The backend's capabilities before login (after STARTTLS, when used).
    pub capabilities: Vec<String>,
}

/// Connects to `backend`, with TLS as configured, and reads its greeting and capabilities.
/// A PROXY v2 header naming `client` goes first when the backend asks for one.
pub fn greet(
    backend: &config::Backend,
    tls: Option<&BackendTls>,
    client: Option<SocketAddr>,
) -> Result<Greeted, LoginError> {
    let deadline = Instant::now() + backend.timeout;
    let sock = connect(backend)?;
    if let (true, Some(src), Ok(dst)) = (backend.send_proxy_protocol, client, sock.peer_addr()) {
        let header = crate::net::proxy_protocol::encode_v2(src, dst);
        (&sock).write_all(&header).map_err(|e| unavailable(format!("PROXY header: {e}")))?;
    }
    let mut stream = Transport::plain(sock);
    if let Some(tls) = tls.filter(|t| t.mode == TlsMode::Implicit) {
        stream
            .connect_tls(Arc::clone(&tls.config), tls.server_name.clone(), deadline)
            .map_err(|e| unavailable(format!("TLS: {e}")))?;
    }
    let mut conn = Conn {
        name: backend.name.clone(),
        stream,
        buf: Vec::new(),
        deadline,
        framer: Framer::new(Side::Server),
    };
    let greeting = conn.read_message()?;
    let status = response::status(&greeting);
    match status.as_ref().map(|s| s.status.as_str()) {
        Some("OK") => {}
        Some("BYE") => return Err(unavailable(format!("greeted with {}", printable(&greeting)))),
        _ => return Err(unavailable(format!("unexpected greeting {}", printable(&greeting)))),
    }
    let mut caps = match response::capabilities(&greeting) {
        Some(caps) => caps,
        None => conn.capabilities(TAG_CAPABILITY)?,
    };
    if let Some(tls) = tls.filter(|t| t.mode == TlsMode::Starttls) {
        conn.starttls(tls, &caps)?;
        // RFC 9051 §6.2.1: capabilities learned before TLS must be discarded.
        caps = conn.capabilities(TAG_CAPABILITY)?;
    }
    Ok(Greeted { conn, capabilities: caps })
}

impl Greeted {
    /// Sends ID (RFC 2971) with the client's parameters and, for a backend that trusts
    /// imapgate, the client's address and the session id (Dovecot's
    /// login_trusted_networks convention), so the backend logs the real client.
    pub fn send_id(
        &mut self,
        client: &ClientInfo<'_>,
        forward: bool,
        trusted: bool,
    ) -> Result<(), LoginError> {
        if !capability::has(&self.capabilities, "ID") || !(forward || trusted) {
            return Ok(());
        }
        let line = id_command(client, forward, trusted);
        self.conn.send(&line)?;
        self.conn.read_tagged(TAG_ID).map(drop)
    }

    /// Logs in as `user`: with a password the way the backend's `login_method` and
    /// `sasl_ir` say; with a bearer token in the client's own mechanism, passing any
    /// challenge through `challenges`.
    pub fn login(
        mut self,
        how: &BackendLogin,
        user: &str,
        proof: Proof<'_>,
        challenges: &mut Challenges<'_>,
    ) -> Result<Session, LoginError> {
        let caps = &self.capabilities;
        let conn = &mut self.conn;
        let sasl_ir = how.sasl_ir && capability::has(caps, "SASL-IR");
        let answer = match proof {
            Proof::Password(password) => {
                let plain = match how.method {
                    LoginMethod::Auto => capability::has(caps, "LOGINDISABLED"),
                    LoginMethod::Login => false,
                    LoginMethod::AuthenticatePlain => true,
                };
                if plain {
                    if !capability::has(caps, "AUTH=PLAIN") {
                        return Err(unavailable("the backend offers no AUTH=PLAIN"));
                    }
                    conn.authenticate_plain(None, user, password, sasl_ir)?
                } else {
                    if capability::has(caps, "LOGINDISABLED") {
                        return Err(unavailable(
                            "login_method = login but the backend says LOGINDISABLED",
                        ));
                    }
                    conn.login(user, password, caps)?
                }
            }
            Proof::Bearer(token) => {
                let cap = token.mechanism.capability();
                if !capability::has(caps, &cap) {
                    return Err(LoginError::Unsupported(format!("the backend offers no {cap}")));
                }
                conn.authenticate_bearer(token, user, sasl_ir, challenges)?
            }
            Proof::Master { user: master, password } => {
                if !capability::has(caps, "AUTH=PLAIN") {
                    return Err(LoginError::Unsupported(
                        "a master-user login needs AUTH=PLAIN, which the backend does not offer"
                            .into(),
                    ));
                }
                conn.authenticate_plain(Some(user), master, password, sasl_ir)?
            }
        };
        let status =
            response::status(&answer).ok_or_else(|| unavailable("malformed login answer"))?;
        match status.status.as_str() {
            "OK" => {}
            "NO" => {
                let text = String::from_utf8_lossy(&answer[status.tag.len() + 1..]);
                return Err(LoginError::Rejected(text.trim_end().to_string()));
            }
            _ => {
                return Err(LoginError::Rejected(
                    "NO [AUTHENTICATIONFAILED] Authentication failed.".into(),
                ))
            }
        }
        let ok_text = String::from_utf8_lossy(status.text).into_owned();
        let capabilities = match response::capabilities(&answer) {
            Some(caps) => caps,
            None => conn.capabilities(TAG_CAPABILITY_AFTER)?,
        };
        let compressed = how.compress
            && capability::has(&capabilities, "COMPRESS=DEFLATE")
            && conn.compress()?;
        let tls = conn.stream.tls_state().map(tls::describe);
        let pre_login = std::mem::take(&mut self.capabilities);
        let conn = self.conn;
        Ok(Session {
            stream: conn.stream,
            leftover: conn.buf,
            capabilities,
            pre_login,
            ok_text,
            tls,
            compressed,
        })
    }

    /// Ends a connection that will not be used (discovery).
    pub fn logout(mut self) {
        let _ = self.conn.send(format!("{TAG_LOGOUT} LOGOUT\r\n").as_bytes());
        let _ = self.conn.read_tagged(TAG_LOGOUT);
    }
}

/// Connects to `backend`, tells it about the client as configured, and logs in as `user`.
pub fn login(
    backend: &config::Backend,
    tls: Option<&BackendTls>,
    client: &ClientInfo<'_>,
    user: &str,
    proof: Proof<'_>,
    challenges: &mut Challenges<'_>,
) -> Result<Session, LoginError> {
    let mut greeted = greet(backend, tls, client.addr)?;
    greeted.send_id(client, backend.login.forward_id, backend.login.trusted)?;
    greeted.login(&backend.login, user, proof, challenges)
}

fn connect(backend: &config::Backend) -> Result<TcpStream, LoginError> {
    let addrs = (backend.host.as_str(), backend.port)
        .to_socket_addrs()
        .map_err(|e| unavailable(format!("cannot resolve {}: {e}", backend.host)))?;
    let mut last = unavailable(format!("{} has no address", backend.host));
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, backend.connect_timeout) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = unavailable(format!("connect to {addr}: {e}")),
        }
    }
    Err(last)
}

/// Printable form of a backend line for logs (never holds credentials: only responses).
fn printable(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\r\n").unwrap_or(line);
    line.iter().take(200).map(|&b| b.escape_ascii().to_string()).collect()
}

struct Conn {
    /// The backend's section name, for log lines.
    name: String,
    stream: Transport,
    buf: Vec<u8>,
    deadline: Instant,
    framer: Framer,
}

impl Conn {
    /// Reads one whole response (line plus literals).
    fn read_message(&mut self) -> Result<Vec<u8>, LoginError> {
        let mut pos = 0;
        loop {
            while pos < self.buf.len() {
                let step = self.framer.advance(&self.buf[pos..]);
                pos += step.consumed;
                if step.event == Some(Event::LineEnd(None)) {
                    let rest = self.buf.split_off(pos);
                    return Ok(std::mem::replace(&mut self.buf, rest));
                }
            }
            if self.buf.len() > 1 << 20 {
                return Err(unavailable("response longer than 1 MiB during login"));
            }
            self.fill()?;
        }
    }

    fn fill(&mut self) -> Result<(), LoginError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(unavailable("timed out"));
        }
        let _ = self.stream.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        // Read straight into the heap buffer: a stack array would leave its pages
        // resident in every session thread's stack for the life of the session.
        let len = self.buf.len();
        self.buf.resize(len + 4096, 0);
        let read = self.stream.read(&mut self.buf[len..]);
        self.buf.truncate(len + *read.as_ref().unwrap_or(&0));
        match read {
            Ok(0) => Err(unavailable("connection closed")),
            Ok(_) => Ok(()),
            Err(e) if is_timeout(&e) => Err(unavailable("timed out")),
            Err(e) => Err(unavailable(format!("read: {e}"))),
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), LoginError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let _ = self.stream.set_write_timeout(Some(left.max(Duration::from_millis(1))));
        let sent = self.stream.write_all(bytes).and_then(|()| self.stream.flush());
        sent.map_err(|e| unavailable(format!("write: {e}")))
    }

    /// Upgrades to TLS. Whatever the backend sent after its OK and before the handshake
    /// is discarded (the STARTTLS injection defence, CVE-2011-0411 class); a backend that
    /// does not offer or refuses STARTTLS is not used at all, never in plaintext.
    fn starttls(&mut self, tls: &BackendTls, caps: &[String]) -> Result<(), LoginError> {
        if !capability::has(caps, "STARTTLS") {
            return Err(unavailable("STARTTLS is configured but the backend does not offer it"));
        }
        self.send(format!("{TAG_STARTTLS} STARTTLS\r\n").as_bytes())?;
        let answer = self.read_tagged(TAG_STARTTLS)?;
        if response::status(&answer).is_none_or(|s| s.status != "OK") {
            return Err(unavailable(format!("STARTTLS refused: {}", printable(&answer))));
        }
        if !self.buf.is_empty() {
            log::warn!(
                "backend {}: discarded {} bytes sent after its STARTTLS OK and before TLS",
                self.name,
                self.buf.len()
            );
            self.buf.clear();
        }
        self.framer = Framer::new(Side::Server);
        let name = tls.server_name.clone();
        self.stream
            .connect_tls(Arc::clone(&tls.config), name, self.deadline)
            .map_err(|e| unavailable(format!("TLS after STARTTLS: {e}")))
    }

    /// COMPRESS DEFLATE on imapgate's own link (RFC 4978): after the backend's OK both
    /// directions are deflate. A refusal leaves the link as it was.
    fn compress(&mut self) -> Result<bool, LoginError> {
        self.send(format!("{TAG_COMPRESS} COMPRESS DEFLATE\r\n").as_bytes())?;
        let answer = self.read_tagged(TAG_COMPRESS)?;
        if response::status(&answer).is_none_or(|s| s.status != "OK") {
            log::warn!("backend {}: COMPRESS refused: {}", self.name, printable(&answer));
            return Ok(false);
        }
        let started = self.stream.start_deflate().and_then(|()| {
            // What the backend sent after its OK is already compressed.
            self.stream.start_inflate(&self.buf)
        });
        started.map_err(|e| unavailable(format!("COMPRESS: {e}")))?;
        self.buf.clear();
        self.framer = Framer::new(Side::Server);
        Ok(true)
    }

    /// Reads responses until the one tagged `tag`, which it returns. Untagged `BYE` means
    /// the backend is going away; other untagged data is not the client's business yet.
    fn read_tagged(&mut self, tag: &str) -> Result<Vec<u8>, LoginError> {
        loop {
            let msg = self.read_message()?;
            match response::kind(&msg) {
                Kind::Tagged(t) if t == tag.as_bytes() => return Ok(msg),
                Kind::Untagged if response::status(&msg).is_some_and(|s| s.status == "BYE") => {
                    return Err(unavailable(format!("said {}", printable(&msg))));
                }
                _ => {}
            }
        }
    }

    /// Reads until a continuation request (`Ok(None)`) or the tagged answer (`Ok(Some)`).
    fn read_continuation(&mut self, tag: &str) -> Result<Option<Vec<u8>>, LoginError> {
        self.read_step(tag).map(|step| match step {
            Step::Continue(_) => None,
            Step::Answer(answer) => Some(answer),
        })
    }

    /// Reads until a continuation request or the tagged answer, and returns it.
    fn read_step(&mut self, tag: &str) -> Result<Step, LoginError> {
        loop {
            let msg = self.read_message()?;
            match response::kind(&msg) {
                Kind::Continuation => return Ok(Step::Continue(msg)),
                Kind::Tagged(t) if t == tag.as_bytes() => return Ok(Step::Answer(msg)),
                _ => {}
            }
        }
    }

    fn capabilities(&mut self, tag: &str) -> Result<Vec<String>, LoginError> {
        self.send(format!("{tag} CAPABILITY\r\n").as_bytes())?;
        let mut caps = None;
        loop {
            let msg = self.read_message()?;
            if let Some(found) = response::capabilities(&msg) {
                caps = Some(found);
            }
            if response::kind(&msg) == Kind::Tagged(tag.as_bytes()) {
                return caps.ok_or_else(|| unavailable("no CAPABILITY answer"));
            }
        }
    }

    /// `LOGIN user password`, each as a quoted string when printable ASCII, else as a
    /// literal: non-synchronizing when the backend has LITERAL+, else synchronizing.
    fn login(
        &mut self,
        user: &str,
        password: &Secret,
        caps: &[String],
    ) -> Result<Vec<u8>, LoginError> {
        let literal_plus = capability::has(caps, "LITERAL+");
        let mut line = Secret::new(format!("{TAG_LOGIN} LOGIN").into_bytes());
        for value in [user.as_bytes(), password.expose()] {
            let buf = line.bytes_mut();
            buf.push(b' ');
            if push_quoted(buf, value) {
                continue;
            }
            let plus = if literal_plus { "+" } else { "" };
            buf.extend_from_slice(format!("{{{}{plus}}}\r\n", value.len()).as_bytes());
            if !literal_plus {
                self.send(line.expose())?;
                if let Some(answer) = self.read_continuation(TAG_LOGIN)? {
                    return Ok(answer);
                }
                line.bytes_mut().clear();
            }
            line.bytes_mut().extend_from_slice(value);
        }
        line.bytes_mut().extend_from_slice(b"\r\n");
        self.send(line.expose())?;
        self.read_tagged(TAG_LOGIN)
    }

    /// AUTHENTICATE PLAIN as `user`, on behalf of `authzid` when given.
    fn authenticate_plain(
        &mut self,
        authzid: Option<&str>,
        user: &str,
        password: &Secret,
        sasl_ir: bool,
    ) -> Result<Vec<u8>, LoginError> {
        let response = sasl::encode_plain(authzid.map(str::as_bytes), user.as_bytes(), password);
        match self.authenticate("PLAIN", &response, sasl_ir)? {
            Some(answer) => Ok(answer),
            None => self.read_tagged(TAG_LOGIN),
        }
    }

    /// Sends `AUTHENTICATE MECHANISM` and the first response: as an initial response
    /// (SASL-IR), or after the backend's `+`. `Some` is the backend's tagged answer when
    /// it answered instead of asking.
    fn authenticate(
        &mut self,
        mechanism: &str,
        response: &Secret,
        sasl_ir: bool,
    ) -> Result<Option<Vec<u8>>, LoginError> {
        let mut line = Secret::new(format!("{TAG_LOGIN} AUTHENTICATE {mechanism}").into_bytes());
        if sasl_ir {
            line.bytes_mut().push(b' ');
        } else {
            line.bytes_mut().extend_from_slice(b"\r\n");
            self.send(line.expose())?;
            if let Some(answer) = self.read_continuation(TAG_LOGIN)? {
                return Ok(Some(answer));
            }
            line.bytes_mut().clear();
        }
        line.bytes_mut().extend_from_slice(response.expose());
        line.bytes_mut().extend_from_slice(b"\r\n");
        self.send(line.expose())?;
        Ok(None)
    }

    /// `AUTHENTICATE XOAUTH2` or `OAUTHBEARER` with imapgate's encoding of the client's
    /// message for `user`. A challenge (the backend's error report, RFC 7628 §3.2.2)
    /// goes to the client as the backend sent it, and the client's response back, until
    /// the backend answers the command.
    fn authenticate_bearer(
        &mut self,
        token: &Bearer,
        user: &str,
        sasl_ir: bool,
        challenges: &mut Challenges<'_>,
    ) -> Result<Vec<u8>, LoginError> {
        let data = token
            .encode(user)
            .ok_or_else(|| LoginError::Unsupported("the routed user name cannot be sent".into()))?;
        if let Some(answer) = self.authenticate(token.mechanism.name(), &data, sasl_ir)? {
            return Ok(answer);
        }
        for _ in 0..MAX_CHALLENGES {
            let challenge = match self.read_step(TAG_LOGIN)? {
                Step::Answer(answer) => return Ok(answer),
                Step::Continue(challenge) => challenge,
            };
            // Only a plain line goes to the client: the backend's words, not its framing.
            let body = challenge.strip_suffix(b"\r\n").unwrap_or(&[]);
            if body.is_empty() || !body.iter().all(|&b| (0x20..0x7f).contains(&b)) {
                return Err(unavailable(format!("malformed challenge {}", printable(&challenge))));
            }
            let response = challenges(&challenge).ok_or(LoginError::Cancelled)?;
            let mut line = Secret::new(response.expose().to_vec());
            line.bytes_mut().extend_from_slice(b"\r\n");
            self.send(line.expose())?;
        }
        Err(unavailable("too many challenges"))
    }
}
/// What came back in an AUTHENTICATE exchange.
enum Step {
    /// A continuation request, whole.
    Continue(Vec<u8>),
    /// The tagged answer.
    Answer(Vec<u8>),
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imapgate_fields_in_id_survive_any_number_of_client_fields() {
        let mut id: Vec<(String, Option<String>)> =
            (0..40).map(|i| (format!("x-field{i}"), Some("v".to_string()))).collect();
        id.insert(0, ("X-Originating-IP".into(), Some("10.9.9.9".into())));
        id.insert(0, ("name".into(), Some("Mutt".into())));
        let client = ClientInfo {
            id: Some(&id),
            addr: Some("192.0.2.7:4242".parse().unwrap()),
            session: 12,
        };
        let line = String::from_utf8(id_command(&client, true, true)).unwrap();
        assert!(
            line.starts_with(
                "ig4 ID (\"x-originating-ip\" \"192.0.2.7\" \"x-originating-port\" \"4242\" \
                 \"x-session-id\" \"imapgate-12\" \"name\" \"Mutt\""
            ),
            "{line}"
        );
        assert!(!line.contains("10.9.9.9"), "a client may not claim an address: {line}");
        assert_eq!(line.matches('"').count(), 4 * ID_MAX_PAIRS, "{line}");
        let untrusted = String::from_utf8(id_command(&client, true, false)).unwrap();
        assert!(!untrusted.contains("x-originating"), "{untrusted}");
        let none = ClientInfo { id: None, addr: None, session: 1 };
        assert_eq!(id_command(&none, true, false), b"ig4 ID NIL\r\n");
    }
}
