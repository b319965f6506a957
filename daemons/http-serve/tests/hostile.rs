//! Hostile requests against a real server on a loopback socket: each is answered (or refused)
//! and the server goes on answering.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use sonm_http_serve::{BodyError, Reply, bind, serve};

const MAX: usize = 16;

/// A server whose `/echo` answers with the body it read (at most `MAX` bytes) and every other
/// path with "ok" without reading the body.
struct Running {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    fn start() -> Self {
        let (server, addr) = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                serve(&server, 2, &stop, |request| {
                    if request.url() != "/echo" {
                        return Reply::json(200, "\"ok\"".into());
                    }
                    match request.body(MAX) {
                        Ok(body) => Reply::json(200, String::from_utf8_lossy(&body).into_owned()),
                        Err(BodyError::TooLarge(_)) => Reply::json(413, "\"too large\"".into()),
                        Err(BodyError::Read(e)) => Reply::json(400, format!("{e:?}")),
                    }
                });
            })
        };
        Running {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// Sends `raw` on a new connection, closes its sending side, and returns the answer.
    fn exchange(&self, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(raw).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    }

    fn alive(&self) -> bool {
        self.exchange(b"GET /status HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .starts_with("HTTP/1.1 200")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// tiny_http 0.12 drained an unread body into one buffer of the declared length: this request
/// aborted the process (and so this test binary) when its answer was sent.
#[test]
fn a_petabyte_declared_and_left_unread_is_drained_and_the_server_lives() {
    let server = Running::start();
    let answer = server.exchange(
        b"GET /status HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000000000000\r\n\r\nabc",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(server.alive(), "the server stopped answering");
}

#[test]
fn a_body_over_the_bound_is_refused_whether_declared_or_chunked() {
    let server = Running::start();
    let declared = server
        .exchange(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000000000000\r\n\r\nabc");
    assert!(declared.starts_with("HTTP/1.1 413"), "{declared}");
    let chunked = server.exchange(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          10\r\n0123456789abcdef\r\n1\r\nX\r\n0\r\n\r\n",
    );
    assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");
    assert!(server.alive());
}

#[test]
fn a_body_within_the_bound_is_read_whole() {
    let server = Running::start();
    let answer = server.exchange(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 16\r\nConnection: close\r\n\r\n0123456789abcdef",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("0123456789abcdef"), "{answer}");
}

#[test]
fn garbage_on_the_wire_is_dropped_and_the_server_lives() {
    let server = Running::start();
    for raw in [
        &b"\x00\xff\xfe garbage \r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: t\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999999\r\n\r\n",
    ] {
        let _ = server.exchange(raw);
        assert!(server.alive(), "the server stopped answering after {raw:?}");
    }
}

/// A daemon restarted in process (as the keepers' tests do) binds the same port again.
#[test]
fn a_dropped_server_frees_its_port() {
    let (server, addr) = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let stop = AtomicBool::new(true);
    serve(&server, 1, &stop, |_| Reply::json(200, String::new()));
    drop(server);
    let start = std::time::Instant::now();
    while let Err(e) = bind(addr) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the port is still taken: {e}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client that declares a body, sends part of it and stalls holds the one handler thread
/// (the unread rest is drained before it takes the next request) until the socket timeout
/// drops it: then the next client is answered.
#[test]
fn a_stalled_client_is_dropped_after_the_timeout() {
    let (server, addr) =
        sonm_http_serve::bind_with_timeout("127.0.0.1:0".parse().unwrap(), Duration::from_secs(1))
            .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            serve(&server, 1, &stop, |_| Reply::json(200, "\"ok\"".into()));
        })
    };
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled
        .write_all(b"GET /a HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\nabc")
        .unwrap();
    // Kept open, silent. The next client waits for the handler, then is answered.
    let start = std::time::Instant::now();
    let mut next = TcpStream::connect(addr).unwrap();
    next.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    next.write_all(b"GET /b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = next.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "not answered in {:?} while a client stalled: {answer:?}",
        start.elapsed()
    );
    drop(stalled);
    stop.store(true, Ordering::Relaxed);
    thread.join().unwrap();
}

/// The timeout is for a silent peer, not a slow answer: a handler that works longer than it
/// (the node uploading a job to a worker, say) still answers its waiting client.
#[test]
fn a_slow_answer_outlives_the_timeout() {
    let (server, addr) =
        sonm_http_serve::bind_with_timeout("127.0.0.1:0".parse().unwrap(), Duration::from_secs(1))
            .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            serve(&server, 1, &stop, |_| {
                std::thread::sleep(Duration::from_secs(3));
                Reply::json(200, "\"late\"".into())
            });
        })
    };
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = s.read(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.ends_with("\"late\""), "{answer:?}");
    stop.store(true, Ordering::Relaxed);
    thread.join().unwrap();
}
