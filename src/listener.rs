//! Standalone mode: bind every listener, accept, and give each connection its own thread
//! with a bounded stack. A session that panics ends its own thread only.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::config::Config;
use crate::session::{self, Origin};
use crate::Runtime;

/// A bound listening socket and the listener section it belongs to.
pub struct Bound {
    socket: TcpListener,
    listener: usize,
    addr: SocketAddr,
}

/// Binds all addresses of all listeners, before anything else can fail later.
pub fn bind(config: &Config) -> Result<Vec<Bound>, String> {
    let mut bound = Vec::new();
    for (index, listener) in config.listeners.iter().enumerate() {
        for addr in &listener.listen {
            let socket = TcpListener::bind(addr)
                .map_err(|e| format!("listener {}: cannot listen on {addr}: {e}", listener.name))?;
            bound.push(Bound { socket, listener: index, addr: *addr });
        }
    }
    Ok(bound)
}

/// Accepts connections forever, one thread per listening socket.
pub fn run(runtime: Arc<Runtime>, bound: Vec<Bound>) {
    let mut acceptors = Vec::new();
    for b in bound {
        let runtime = Arc::clone(&runtime);
        log::info!(
            "listening on {} (listener {})",
            b.addr,
            runtime.config.listeners[b.listener].name
        );
        let spawned = thread::Builder::new()
            .name(format!("accept-{}", b.addr))
            .spawn(move || accept_loop(runtime, b));
        match spawned {
            Ok(handle) => acceptors.push(handle),
            Err(e) => log::error!("cannot start the accept thread: {e}"),
        }
    }
    for handle in acceptors {
        let _ = handle.join();
    }
}

fn accept_loop(runtime: Arc<Runtime>, bound: Bound) {
    loop {
        match bound.socket.accept() {
            Ok((stream, peer)) => spawn_session(&runtime, bound.listener, stream, peer),
            Err(e) => {
                // EMFILE and friends: wait a little instead of spinning on the error.
                log::error!("accept on {}: {e}", bound.addr);
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn spawn_session(runtime: &Arc<Runtime>, listener: usize, stream: TcpStream, peer: SocketAddr) {
    let id = session::next_id();
    let origin = Origin { id, client: peer.to_string(), listener };
    let runtime_for_thread = Arc::clone(runtime);
    let stream_for_refusal = stream.try_clone();
    let spawned = thread::Builder::new()
        .name(format!("conn-{id}"))
        .stack_size(runtime.config.global.thread_stack_size)
        .spawn(move || session::serve(runtime_for_thread, origin, stream));
    if let Err(e) = spawned {
        log::error!("cannot start a thread for session id={id} from {peer}: {e}");
        if let Ok(mut s) = stream_for_refusal {
            let _ = s.write_all(b"* BYE [UNAVAILABLE] Server overloaded, try again later.\r\n");
        }
    }
}
