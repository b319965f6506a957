//! The relay's data path: one UDP socket per session, forwarding datagrams between the two
//! source addresses that proved a party's token. It never parses what it forwards (QUIC with
//! end-to-end TLS between the peers), so it cannot read or alter it undetected.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use smol::Async;
use sonm_rendezvous_proto::{Control, Rate, TOKEN_LEN, TokenBucket};

/// Called with each datagram the relay forwards (diagnostics; tests use it to show that the
/// relay only ever sees ciphertext).
pub type PacketTap = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// The relay's data-path limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayLimits {
    /// Bytes per second each party may send through a session; excess datagrams are dropped
    /// (QUIC's congestion control backs off, as on a lossy path).
    pub bytes_per_s: u64,
    pub burst_bytes: u64,
    /// A session with no datagram for this long closes and frees its socket. The relay cannot
    /// see a QUIC close (it is encrypted), so this is also how long a finished session holds
    /// its slot; clients' keep-alive (10 s) keeps live sessions above it.
    pub idle_timeout_ms: u64,
    /// Datagrams held for a party that has not bound yet (its peer's first QUIC Initials).
    pub max_pending: usize,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            bytes_per_s: 8 * 1024 * 1024,
            burst_bytes: 1024 * 1024,
            idle_timeout_ms: 30_000,
            max_pending: 16,
        }
    }
}

/// Counters shared by every session.
#[derive(Debug, Default)]
pub struct RelayCounters {
    pub forwarded_datagrams: AtomicU64,
    pub forwarded_bytes: AtomicU64,
    /// Datagrams from unbound sources, bad control datagrams, over-rate or overflow drops.
    pub dropped_datagrams: AtomicU64,
}

/// One side of a session.
#[derive(Debug)]
struct Party {
    token: [u8; TOKEN_LEN],
    addr: Option<SocketAddr>,
    bucket: TokenBucket,
}

/// Tokens compared without an early exit, so timing does not reveal a prefix.
fn token_eq(a: &[u8; TOKEN_LEN], b: &[u8; TOKEN_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A bound but not yet running session.
#[derive(Debug)]
pub(crate) struct Session {
    socket: Async<UdpSocket>,
    tokens: [[u8; TOKEN_LEN]; 2],
}

impl Session {
    pub(crate) fn bind(
        ip: std::net::IpAddr,
        tokens: [[u8; TOKEN_LEN]; 2],
    ) -> std::io::Result<Self> {
        let socket = Async::<UdpSocket>::bind(SocketAddr::new(ip, 0))?;
        Ok(Self { socket, tokens })
    }

    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.get_ref().local_addr()
    }

    /// Forwards until the session has been idle for `limits.idle_timeout_ms`.
    pub(crate) async fn run(
        self,
        limits: RelayLimits,
        counters: Arc<RelayCounters>,
        tap: Option<PacketTap>,
    ) {
        let rate = Rate {
            per_s: limits.bytes_per_s,
            burst: limits.burst_bytes,
        };
        let start = Instant::now();
        let now_ms = || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut parties = self.tokens.map(|token| Party {
            token,
            addr: None,
            bucket: TokenBucket::full(rate, 0),
        });
        // (from side, datagram) held until the other side binds.
        let mut pending: VecDeque<(usize, Vec<u8>)> = VecDeque::new();
        let idle = Duration::from_millis(limits.idle_timeout_ms);
        let drop_one = || counters.dropped_datagrams.fetch_add(1, Ordering::Relaxed);
        let mut buf = vec![0u8; 65_536];
        loop {
            let received = smol::future::or(
                async { Some(self.socket.recv_from(&mut buf).await) },
                async {
                    smol::Timer::after(idle).await;
                    None
                },
            )
            .await;
            let (len, src) = match received {
                None => break,
                Some(Ok(r)) => r,
                // ICMP errors surface here on Linux; they say nothing about the session.
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "relay recv error");
                    continue;
                }
            };
            let datagram = &buf[..len];
            if Control::is_control(datagram) {
                match Control::decode(datagram) {
                    Some(Control::Bind { token }) => {
                        let Some(side) = parties.iter().position(|p| token_eq(&p.token, &token))
                        else {
                            drop_one();
                            continue;
                        };
                        if parties[side].addr != Some(src) {
                            tracing::debug!(%src, side, "relay party bound");
                        }
                        // Rebinding is allowed: only the token's holder can do it (NAT rebinding).
                        parties[side].addr = Some(src);
                        // Flush what its peer sent before it was there.
                        if parties[1 - side].addr.is_some() {
                            while let Some((from, d)) = pending.pop_front() {
                                if from == 1 - side {
                                    self.forward(&d, src, &counters, tap.as_ref()).await;
                                }
                            }
                        }
                    }
                    _ => {
                        drop_one();
                    }
                }
                continue;
            }
            let Some(side) = parties.iter().position(|p| p.addr == Some(src)) else {
                drop_one();
                continue;
            };
            let cost = u64::try_from(len).unwrap_or(u64::MAX);
            if parties[side].bucket.try_take(rate, now_ms(), cost).is_err() {
                drop_one();
                continue;
            }
            match parties[1 - side].addr {
                Some(dst) => self.forward(datagram, dst, &counters, tap.as_ref()).await,
                None if pending.len() < limits.max_pending => {
                    pending.push_back((side, datagram.to_vec()));
                }
                None => {
                    drop_one();
                }
            }
        }
        tracing::debug!(local = ?self.local_addr().ok(), "relay session idle, closed");
    }

    async fn forward(
        &self,
        datagram: &[u8],
        dst: SocketAddr,
        counters: &RelayCounters,
        tap: Option<&PacketTap>,
    ) {
        if let Some(tap) = tap {
            tap(datagram);
        }
        match self.socket.send_to(datagram, dst).await {
            Ok(_) => {
                counters.forwarded_datagrams.fetch_add(1, Ordering::Relaxed);
                counters
                    .forwarded_bytes
                    .fetch_add(datagram.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!(error = %e, %dst, "relay send failed");
                counters.dropped_datagrams.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
