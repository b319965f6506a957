//! The daemons' HTTP/1.1 servers (the node's API, the DWH's queries, the keepers' signatures):
//! one place that owns the server library, so that what every daemon must get right about
//! untrusted requests is written once.
//!
//! - [`serve`] answers from `threads` threads until `stop` is set; a handler sees a
//!   [`Request`] and returns a [`Reply`].
//! - A body is read only when the handler asks, and only within a bound: a larger declared
//!   length is refused before a byte is read ([`BodyError::TooLarge`]), a longer chunked body
//!   after one byte past the bound. A body left unread (a `GET` that declares one, a refused
//!   post) is drained by the server through a small fixed buffer, whatever length it declares:
//!   tiny_http 0.12 allocated the whole declared length there, so one request declaring a
//!   petabyte aborted the daemon (the `tiny_http_fork` release used here drains in 4 KiB steps;
//!   `tests/hostile.rs` checks it).
//! - A connection silent for [`IO_TIMEOUT`] is dropped, so a client that stalls mid-request
//!   frees its thread; a slow answer still reaches a client that waits for it.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use thiserror::Error;

/// A listening server. Dropping it closes the listening socket (the port is free again once
/// its accept thread has seen the close).
pub struct Server {
    inner: Option<tiny_http::Server>,
    addr: SocketAddr,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).finish()
    }
}

impl Server {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn inner(&self) -> &tiny_http::Server {
        self.inner.as_ref().expect("only taken on drop")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The library sets its close flag on drop, but its accept thread, blocked in accept(),
        // sees the flag (and drops the socket) only at the next connection: make one, or a
        // restarted daemon could not bind the port again.
        drop(self.inner.take());
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        if let Ok(s) = std::net::TcpStream::connect_timeout(&wake, Duration::from_secs(1)) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Why no server listens.
#[derive(Debug, Error)]
#[error("listening on {addr}: {reason}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub reason: String,
}

/// How long a connection may go without sending (mid-request, or idle between kept-alive
/// requests) or accepting a byte of its answer before it is dropped.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A server listening on `addr` (port 0: any free one), and the address it is bound to.
pub fn bind(addr: SocketAddr) -> Result<(Server, SocketAddr), BindError> {
    bind_with_timeout(addr, IO_TIMEOUT)
}

/// As [`bind`], dropping connections silent for `timeout`. The library sets no timeout of its
/// own, so without one a client that declares a body and stalls holds a handler thread for
/// ever (the unread body is drained before the thread takes the next request). Accepted sockets
/// inherit the listening socket's receive and send timeouts (Linux copies socket options to
/// the accepted socket), so they are set there, once.
pub fn bind_with_timeout(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<(Server, SocketAddr), BindError> {
    let fail = |reason: String| BindError { addr, reason };
    let listener = std::net::TcpListener::bind(addr).map_err(|e| fail(e.to_string()))?;
    for which in [
        rustix::net::sockopt::Timeout::Recv,
        rustix::net::sockopt::Timeout::Send,
    ] {
        rustix::net::sockopt::set_socket_timeout(&listener, which, Some(timeout))
            .map_err(|e| fail(format!("setting the socket timeout: {e}")))?;
    }
    let bound = listener.local_addr().map_err(|e| fail(e.to_string()))?;
    let config = tiny_http::ServerConfig {
        addr: tiny_http::ConfigListenAddr::from_socket_addrs(bound)
            .map_err(|e| fail(e.to_string()))?,
        ssl: None,
        min_threads: None,
        max_threads: None,
    };
    let server =
        tiny_http::Server::from_listener(listener, tiny_http::ListenAddr::IP(bound), config)
            .map_err(|e| fail(e.to_string()))?;
    Ok((
        Server {
            inner: Some(server),
            addr: bound,
        },
        bound,
    ))
}

/// Why a request's body was not read.
#[derive(Debug, Error)]
pub enum BodyError {
    #[error("the body is over {0} bytes")]
    TooLarge(usize),
    #[error("reading the body: {0}")]
    Read(#[from] std::io::Error),
}

/// A request being answered.
pub struct Request<'r> {
    inner: &'r mut tiny_http::Request,
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method())
            .field("url", &self.url())
            .finish()
    }
}

impl Request<'_> {
    /// `GET`, `POST`, ...
    pub fn method(&self) -> &str {
        self.inner.method().as_str()
    }

    /// The path and query string, as sent.
    pub fn url(&self) -> &str {
        self.inner.url()
    }

    /// The body, at most `max` bytes.
    pub fn body(&mut self, max: usize) -> Result<Vec<u8>, BodyError> {
        if self.inner.body_length().is_some_and(|n| n > max) {
            return Err(BodyError::TooLarge(max));
        }
        let mut body = Vec::new();
        self.inner
            .as_reader()
            .take(max as u64 + 1)
            .read_to_end(&mut body)?;
        if body.len() > max {
            return Err(BodyError::TooLarge(max));
        }
        Ok(body)
    }
}

/// An answer: status, content type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    /// A JSON answer.
    pub fn json(status: u16, body: String) -> Self {
        Reply {
            status,
            content_type: "application/json",
            body,
        }
    }
}

/// Answers requests on `server` with `handle`, from `threads` threads (at least one), until
/// `stop` is set (seen within 100 ms).
pub fn serve<H>(server: &Server, threads: usize, stop: &AtomicBool, handle: H)
where
    H: Fn(&mut Request<'_>) -> Reply + Sync,
{
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    match server.inner().recv_timeout(Duration::from_millis(100)) {
                        Ok(Ok(Some(mut request))) => {
                            let reply = handle(&mut Request {
                                inner: &mut request,
                            });
                            respond(request, reply);
                        }
                        Ok(Ok(None)) => {}
                        // A client that does not speak HTTP: its connection is dropped.
                        Ok(Err(e)) => tracing::debug!(error = %e, "a malformed request"),
                        Err(e) => {
                            tracing::warn!(error = %e, "accepting a request failed");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            });
        }
    });
}

fn respond(request: tiny_http::Request, reply: Reply) {
    let mut response = tiny_http::Response::from_string(reply.body).with_status_code(reply.status);
    if let Ok(h) =
        tiny_http::Header::from_bytes(&b"Content-Type"[..], reply.content_type.as_bytes())
    {
        response = response.with_header(h);
    }
    if let Err(e) = request.respond(response) {
        tracing::debug!(error = %e, "the client went away");
    }
}
