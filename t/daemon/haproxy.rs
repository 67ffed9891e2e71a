//! Behind a real HAProxy (Debian's haproxy, started privately here) sending PROXY v2:
//! imapgate logs the client's address, not HAProxy's.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::*;

#[test]
fn behind_haproxy_with_send_proxy_v2_the_real_client_address_is_logged() {
    let bin = require_tool("haproxy", "haproxy");
    let dv = Dovecot::start();
    let px = Proxy::start(&config(dv.port, "", "proxy_protocol = yes\nproxy_trusted = 127.0.0.1"));
    let dir = TempDir::new("haproxy");
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port();
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
                 listen imap\n  bind 127.0.0.1:{port}\n  server gate 127.0.0.1:{} send-proxy-v2\n",
                px.port
            ),
        )
        .unwrap();
        let err = std::fs::File::create(dir.join("haproxy.err")).unwrap();
        let mut hp = Command::new(&bin)
            .args(["-db", "-f"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("run haproxy");
        if wait_for_port(port, &mut hp, Duration::from_secs(10)) {
            // wait_for_port's probe connection shows up as a session from 127.0.0.1.
            let mut c = client_on(connect_from("127.0.0.2", port));
            assert!(c.greeting.starts_with(b"* OK"), "{}", text(&c.greeting));
            c.login("alice", "secret");
            c.cmd_ok("S", "SELECT INBOX");
            c.logout();
            stop_child(&mut hp, Duration::from_secs(5));
            px.wait_for_log(r"SESSION-START id=\d+ client=127\.0\.0\.2:\d+ listener=imap");
            px.wait_for_log(r"SESSION-END id=\d+ user=alice .*reason=logout");
            return;
        }
        stop_child(&mut hp, Duration::from_secs(5));
        last = std::fs::read_to_string(dir.join("haproxy.err")).unwrap_or_default();
    }
    panic!("haproxy did not start:\n{last}");
}
