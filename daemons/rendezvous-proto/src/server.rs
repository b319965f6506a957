//! The rendezvous server's decisions, with no I/O: the caller passes in each request with the
//! connection it came on and the time, and carries out the [`Effect`]s.

use std::collections::HashMap;
use std::net::SocketAddr;

use alloy_primitives::Address;

use crate::bucket::{Rate, TokenBucket};
use crate::msg::{
    Candidates, Notify, PunchNotify, RecordError, Refusal, Request, Response, SignedRecord,
};

/// The server's limits (all in the caller's units: monotonic ms, Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// A record not refreshed within this is forgotten.
    pub record_ttl_ms: u64,
    /// Largest accepted difference between a record's timestamp and the server's clock.
    pub max_clock_skew_s: u64,
    pub max_records: usize,
    pub max_candidates: usize,
    /// Requests per peer (every kind costs one).
    pub requests: Rate,
    /// Peers with a live rate-limit bucket; a new peer beyond it is refused `Overloaded`.
    pub max_peers: usize,
    /// How long an introduction (a punch) allows relay requests between the pair.
    pub intro_ttl_ms: u64,
    /// Delay both sides wait before punching.
    pub punch_delay_ms: u32,
    pub max_relay_sessions: usize,
    pub max_relay_sessions_per_peer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            record_ttl_ms: 120_000,
            max_clock_skew_s: 300,
            max_records: 100_000,
            max_candidates: 8,
            requests: Rate {
                per_s: 20,
                burst: 40,
            },
            max_peers: 200_000,
            intro_ttl_ms: 30_000,
            punch_delay_ms: 50,
            max_relay_sessions: 1_000,
            max_relay_sessions_per_peer: 8,
        }
    }
}

/// Who sent a request, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctx {
    /// The connection's verified peer.
    pub peer: Address,
    /// The connection's current remote address as the server sees it.
    pub observed: SocketAddr,
    /// The caller's id for the connection (to route notifications, and to forget on close).
    pub conn: u64,
    /// Monotonic milliseconds.
    pub now_ms: u64,
    /// Wall clock, Unix seconds (only for record timestamps).
    pub unix_s: u64,
}

/// What the caller must do besides replying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Push `msg` to `to` on connection `conn`.
    Notify { to: Address, conn: u64, msg: Notify },
    /// Both parties asked: open relay session `session`, reply `RelayAllocated` to the requester
    /// and notify the peer. Call [`Server::relay_closed`] when the session ends (or fails to
    /// open), which frees its slot.
    AllocateRelay {
        session: u64,
        requester: Address,
        requester_conn: u64,
        peer: Address,
        peer_conn: u64,
    },
}

/// The reply (none when an `AllocateRelay` effect replies) and the effects.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    pub reply: Option<Response>,
    pub effects: Vec<Effect>,
}

impl Outcome {
    fn reply(r: Response) -> Self {
        Self {
            reply: Some(r),
            effects: Vec::new(),
        }
    }

    fn refuse(r: Refusal) -> Self {
        Self::reply(Response::Refused(r))
    }
}

#[derive(Debug, Clone)]
struct Stored {
    record: SignedRecord,
    observed: SocketAddr,
    conn: u64,
    expires_ms: u64,
}

#[derive(Debug, Clone, Copy)]
struct Watermark {
    seq: u64,
    forget_ms: u64,
}

#[derive(Debug, Clone, Copy)]
struct Ask {
    conn: u64,
    expires_ms: u64,
}

/// The server's state: see the crate README for the rules.
#[derive(Debug)]
pub struct Server {
    limits: Limits,
    records: HashMap<Address, Stored>,
    /// Highest accepted seq per address, kept past the record so a replay stays refused until
    /// the clock-skew window alone refuses it.
    watermarks: HashMap<Address, Watermark>,
    buckets: HashMap<Address, TokenBucket>,
    /// Unordered pairs (smaller address first) a punch introduced, with expiry.
    intros: HashMap<(Address, Address), u64>,
    /// (asker, peer) relay consents waiting for the peer's.
    asks: HashMap<(Address, Address), Ask>,
    sessions: HashMap<u64, (Address, Address)>,
    sessions_per_peer: HashMap<Address, usize>,
    next_session: u64,
}

fn pair(a: Address, b: Address) -> (Address, Address) {
    if a <= b { (a, b) } else { (b, a) }
}

impl Server {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            records: HashMap::new(),
            watermarks: HashMap::new(),
            buckets: HashMap::new(),
            intros: HashMap::new(),
            asks: HashMap::new(),
            sessions: HashMap::new(),
            sessions_per_peer: HashMap::new(),
            next_session: 1,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Handles one request from `ctx.peer`.
    pub fn handle(&mut self, ctx: Ctx, req: Request) -> Outcome {
        if let Err(refusal) = self.charge(ctx) {
            return Outcome::refuse(refusal);
        }
        match req {
            Request::Publish(record) => self.publish(ctx, record),
            Request::Resolve { address } => Outcome::reply(match self.live(address, ctx.now_ms) {
                Some(s) => Response::Resolved {
                    record: s.record.clone(),
                    observed: s.observed,
                },
                None => Response::NotFound,
            }),
            Request::Punch { target, private } => self.punch(ctx, target, private),
            Request::Relay { peer } => self.relay(ctx, peer),
        }
    }

    fn charge(&mut self, ctx: Ctx) -> Result<(), Refusal> {
        let rate = self.limits.requests;
        if !self.buckets.contains_key(&ctx.peer) && self.buckets.len() >= self.limits.max_peers {
            // Idle peers' buckets are full: forgetting them changes no decision.
            self.buckets.retain(|_, b| !b.is_full(rate, ctx.now_ms));
            if self.buckets.len() >= self.limits.max_peers {
                return Err(Refusal::Overloaded);
            }
        }
        self.buckets
            .entry(ctx.peer)
            .or_insert_with(|| TokenBucket::full(rate, ctx.now_ms))
            .try_take(rate, ctx.now_ms, 1)
            .map_err(|retry_after_ms| Refusal::RateLimited { retry_after_ms })
    }

    fn live(&self, address: Address, now_ms: u64) -> Option<&Stored> {
        self.records.get(&address).filter(|s| s.expires_ms > now_ms)
    }

    fn publish(&mut self, ctx: Ctx, signed: SignedRecord) -> Outcome {
        let record = &signed.record;
        // The connection is the authentication; the signature lets customers check the record.
        if record.address != ctx.peer {
            return Outcome::refuse(Refusal::Forged {
                claimed: record.address,
            });
        }
        if record.private.len() > self.limits.max_candidates {
            return Outcome::refuse(Refusal::TooManyCandidates {
                max: u32::try_from(self.limits.max_candidates).unwrap_or(u32::MAX),
            });
        }
        match signed.verify() {
            Ok(()) => {}
            Err(RecordError::Malformed | RecordError::WrongSigner { .. }) => {
                return Outcome::refuse(Refusal::BadSignature);
            }
        }
        if record.timestamp.abs_diff(ctx.unix_s) > self.limits.max_clock_skew_s {
            return Outcome::refuse(Refusal::ClockSkew {
                server_unix: ctx.unix_s,
            });
        }
        if let Some(w) = self.watermarks.get(&ctx.peer)
            && w.forget_ms > ctx.now_ms
            && record.seq <= w.seq
        {
            return Outcome::refuse(Refusal::Replayed { last_seq: w.seq });
        }
        if !self.records.contains_key(&ctx.peer) && self.records.len() >= self.limits.max_records {
            self.expire(ctx.now_ms);
            if self.records.len() >= self.limits.max_records {
                return Outcome::refuse(Refusal::Overloaded);
            }
        }
        // Kept until the skew window alone refuses the record: a timestamp accepted at unix
        // time u is >= u - skew, so after 2 * skew + 1 s it is more than skew old.
        let retention_ms = self
            .limits
            .record_ttl_ms
            .max((2 * self.limits.max_clock_skew_s + 1) * 1000);
        self.watermarks.insert(
            ctx.peer,
            Watermark {
                seq: record.seq,
                forget_ms: ctx.now_ms + retention_ms,
            },
        );
        self.records.insert(
            ctx.peer,
            Stored {
                record: signed,
                observed: ctx.observed,
                conn: ctx.conn,
                expires_ms: ctx.now_ms + self.limits.record_ttl_ms,
            },
        );
        Outcome::reply(Response::Published {
            ttl_ms: self.limits.record_ttl_ms,
            observed: ctx.observed,
        })
    }

    fn punch(&mut self, ctx: Ctx, target: Address, private: Vec<std::net::SocketAddr>) -> Outcome {
        if target == ctx.peer {
            return Outcome::refuse(Refusal::SelfTarget);
        }
        if private.len() > self.limits.max_candidates {
            return Outcome::refuse(Refusal::TooManyCandidates {
                max: u32::try_from(self.limits.max_candidates).unwrap_or(u32::MAX),
            });
        }
        let Some(stored) = self.live(target, ctx.now_ms) else {
            return Outcome::reply(Response::NotFound);
        };
        let to_customer = PunchNotify {
            peer: target,
            candidates: Candidates {
                observed: stored.observed,
                private: stored.record.record.private.clone(),
            },
            start_in_ms: self.limits.punch_delay_ms,
        };
        let target_conn = stored.conn;
        let key = pair(ctx.peer, target);
        if !self.intros.contains_key(&key) && self.intros.len() >= self.limits.max_peers {
            self.expire(ctx.now_ms);
            if self.intros.len() >= self.limits.max_peers {
                return Outcome::refuse(Refusal::Overloaded);
            }
        }
        self.intros
            .insert(key, ctx.now_ms + self.limits.intro_ttl_ms);
        Outcome {
            reply: Some(Response::Punch(to_customer)),
            effects: vec![Effect::Notify {
                to: target,
                conn: target_conn,
                msg: Notify::Punch(PunchNotify {
                    peer: ctx.peer,
                    candidates: Candidates {
                        observed: ctx.observed,
                        private,
                    },
                    start_in_ms: self.limits.punch_delay_ms,
                }),
            }],
        }
    }

    fn relay(&mut self, ctx: Ctx, peer: Address) -> Outcome {
        if peer == ctx.peer {
            return Outcome::refuse(Refusal::SelfTarget);
        }
        let introduced = self
            .intros
            .get(&pair(ctx.peer, peer))
            .is_some_and(|&exp| exp > ctx.now_ms);
        if !introduced {
            return Outcome::refuse(Refusal::NotIntroduced);
        }
        let theirs = self
            .asks
            .get(&(peer, ctx.peer))
            .copied()
            .filter(|a| a.expires_ms > ctx.now_ms);
        let Some(theirs) = theirs else {
            // Consent recorded; it lasts as long as the introduction.
            if !self.asks.contains_key(&(ctx.peer, peer))
                && self.asks.len() >= self.limits.max_peers
            {
                return Outcome::refuse(Refusal::Overloaded);
            }
            self.asks.insert(
                (ctx.peer, peer),
                Ask {
                    conn: ctx.conn,
                    expires_ms: ctx.now_ms + self.limits.intro_ttl_ms,
                },
            );
            return Outcome::reply(Response::RelayPending);
        };
        let per_peer = self.limits.max_relay_sessions_per_peer;
        let count = |a: &Address| self.sessions_per_peer.get(a).copied().unwrap_or(0);
        if self.sessions.len() >= self.limits.max_relay_sessions
            || count(&ctx.peer) >= per_peer
            || count(&peer) >= per_peer
        {
            return Outcome::refuse(Refusal::Overloaded);
        }
        self.asks.remove(&(peer, ctx.peer));
        self.asks.remove(&(ctx.peer, peer));
        let session = self.next_session;
        self.next_session += 1;
        self.sessions.insert(session, (ctx.peer, peer));
        *self.sessions_per_peer.entry(ctx.peer).or_default() += 1;
        *self.sessions_per_peer.entry(peer).or_default() += 1;
        Outcome {
            reply: None,
            effects: vec![Effect::AllocateRelay {
                session,
                requester: ctx.peer,
                requester_conn: ctx.conn,
                peer,
                peer_conn: theirs.conn,
            }],
        }
    }

    /// A relay session ended (or could not be opened): frees its slots.
    pub fn relay_closed(&mut self, session: u64) {
        if let Some((a, b)) = self.sessions.remove(&session) {
            for p in [a, b] {
                if let Some(n) = self.sessions_per_peer.get_mut(&p) {
                    *n -= 1;
                    if *n == 0 {
                        self.sessions_per_peer.remove(&p);
                    }
                }
            }
        }
    }

    /// A connection closed: its record and relay consents go (a newer connection's stay).
    pub fn disconnected(&mut self, peer: Address, conn: u64) {
        if self.records.get(&peer).is_some_and(|s| s.conn == conn) {
            self.records.remove(&peer);
        }
        self.asks
            .retain(|(asker, _), a| !(*asker == peer && a.conn == conn));
    }

    /// Forgets whatever has expired; call it periodically (each call is O(state)).
    pub fn expire(&mut self, now_ms: u64) {
        let rate = self.limits.requests;
        self.records.retain(|_, s| s.expires_ms > now_ms);
        self.watermarks.retain(|_, w| w.forget_ms > now_ms);
        self.intros.retain(|_, &mut exp| exp > now_ms);
        self.asks.retain(|_, a| a.expires_ms > now_ms);
        self.buckets.retain(|_, b| !b.is_full(rate, now_ms));
    }

    /// Sizes of the tables, for metrics and for tests that check the state stays bounded.
    pub fn stats(&self) -> Stats {
        Stats {
            records: self.records.len(),
            watermarks: self.watermarks.len(),
            buckets: self.buckets.len(),
            intros: self.intros.len(),
            asks: self.asks.len(),
            relay_sessions: self.sessions.len(),
        }
    }
}

/// Table sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub records: usize,
    pub watermarks: usize,
    pub buckets: usize,
    pub intros: usize,
    pub asks: usize,
    pub relay_sessions: usize,
}
