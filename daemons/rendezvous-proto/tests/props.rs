//! Property tests of the rendezvous state machine, token buckets and control datagrams.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::LazyLock;

use proptest::prelude::*;
use sonm_net::EthKey;
use sonm_rendezvous_proto::{
    Address, Control, Ctx, Effect, Limits, Notify, Rate, Record, Refusal, Request, Response,
    Server, SignedRecord, TokenBucket,
};

const PEERS: usize = 4;
const UNIX_BASE: u64 = 1_800_000_000;

static KEYS: LazyLock<Vec<EthKey>> = LazyLock::new(|| {
    (1..=PEERS as u8)
        .map(|i| EthKey::from_bytes(&[i; 32]).unwrap())
        .collect()
});

fn addr(i: usize) -> Address {
    KEYS[i].address()
}

fn sock(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40_000 + i as u16))
}

fn ctx(peer: usize, now_ms: u64) -> Ctx {
    Ctx {
        peer: addr(peer),
        observed: sock(peer),
        conn: peer as u64,
        now_ms,
        unix_s: UNIX_BASE + now_ms / 1000,
    }
}

fn record(author: usize, claimed: usize, seq: u64, unix: u64) -> SignedRecord {
    Record {
        address: addr(claimed),
        seq,
        timestamp: unix,
        private: vec![sock(author)],
    }
    .sign(|m| KEYS[author].sign_message(m))
}

fn limits() -> Limits {
    Limits {
        record_ttl_ms: 10_000,
        max_clock_skew_s: 5,
        // Rate limits are tested on their own; here they would hide the rules.
        requests: Rate {
            per_s: 1_000_000,
            burst: 1_000_000,
        },
        intro_ttl_ms: 5_000,
        max_relay_sessions: 3,
        max_relay_sessions_per_peer: 2,
        ..Limits::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Over any window, a bucket gives at most burst + rate × elapsed, and a refusal's
    /// retry-after is enough.
    #[test]
    fn bucket_never_exceeds_its_rate(
        per_s in 1u64..1000,
        burst in 1u64..100,
        ops in prop::collection::vec((0u64..200, 1u64..10), 1..200),
    ) {
        let rate = Rate { per_s, burst };
        let mut b = TokenBucket::full(rate, 0);
        let mut now = 0u64;
        let mut taken = 0u64;
        for (dt, cost) in ops {
            now += dt;
            match b.try_take(rate, now, cost) {
                Ok(()) => taken += cost,
                Err(retry) if cost <= burst => {
                    let mut probe = b.clone();
                    prop_assert!(probe.try_take(rate, now + retry, cost).is_ok());
                    if retry > 1 {
                        let mut early = b.clone();
                        prop_assert!(early.try_take(rate, now + retry - 1, cost).is_err());
                    }
                }
                Err(retry) => prop_assert_eq!(retry, u64::MAX),
            }
            prop_assert!(taken * 1000 <= burst * 1000 + per_s * now);
        }
    }

    /// Publish and resolve against a model: forged records are refused, no accepted record is
    /// ever accepted again, and resolve returns exactly the newest live accepted record.
    #[test]
    fn publish_resolve_follow_the_model(
        ops in prop::collection::vec(
            prop_oneof![
                // (author, claimed, seq, timestamp offset in s)
                (0..PEERS, 0..PEERS, 0u64..20, -8i64..8).prop_map(|(a, c, s, t)| Op::Publish(a, c, s, t)),
                (0..PEERS).prop_map(Op::Resolve),
                (0usize..100).prop_map(Op::Replay),
                (0u64..6_000).prop_map(Op::Advance),
                (0..PEERS).prop_map(Op::Disconnect),
            ],
            1..80,
        ),
    ) {
        let limits = limits();
        let mut server = Server::new(limits.clone());
        let mut now = 0u64;
        let mut accepted: Vec<SignedRecord> = Vec::new();
        // address -> (record, accepted at) of the newest live one
        let mut live: HashMap<Address, (SignedRecord, u64)> = HashMap::new();
        for op in ops {
            match op {
                Op::Publish(author, claimed, seq, dt) => {
                    let unix = (UNIX_BASE + now / 1000).saturating_add_signed(dt);
                    let rec = record(author, claimed, seq, unix);
                    let out = server.handle(ctx(author, now), Request::Publish(rec.clone()));
                    let reply = out.reply.unwrap();
                    if author != claimed {
                        prop_assert_eq!(reply, Response::Refused(Refusal::Forged { claimed: addr(claimed) }));
                        continue;
                    }
                    if let Response::Published { observed, .. } = reply {
                        prop_assert_eq!(observed, sock(author));
                        prop_assert!(!accepted.contains(&rec), "a record was accepted twice");
                        prop_assert!(dt.unsigned_abs() <= limits.max_clock_skew_s);
                        accepted.push(rec.clone());
                        live.insert(addr(author), (rec, now));
                    }
                }
                Op::Replay(i) => {
                    if accepted.is_empty() { continue; }
                    let rec = accepted[i % accepted.len()].clone();
                    let author = KEYS.iter().position(|k| k.address() == rec.record.address).unwrap();
                    let reply = server.handle(ctx(author, now), Request::Publish(rec)).reply.unwrap();
                    prop_assert!(
                        matches!(reply, Response::Refused(Refusal::Replayed { .. } | Refusal::ClockSkew { .. })),
                        "replay got {:?}", reply
                    );
                }
                Op::Resolve(target) => {
                    let reply = server.handle(ctx(0, now), Request::Resolve { address: addr(target) }).reply.unwrap();
                    let expect = live.get(&addr(target)).filter(|(_, at)| now < at + limits.record_ttl_ms);
                    match (reply, expect) {
                        (Response::Resolved { record, observed }, Some((rec, _))) => {
                            prop_assert_eq!(&record, rec);
                            prop_assert_eq!(observed, sock(target));
                            prop_assert!(record.verify().is_ok());
                        }
                        (Response::NotFound, None) => {}
                        (reply, expect) => prop_assert!(false, "resolve {:?}, model {:?}", reply, expect),
                    }
                }
                Op::Advance(dt) => {
                    now += dt;
                    server.expire(now);
                }
                Op::Disconnect(p) => {
                    server.disconnected(addr(p), p as u64);
                    live.remove(&addr(p));
                }
            }
        }
        // Everything but relay sessions is forgotten once it is all old enough.
        server.expire(now + 1_000_000);
        let stats = server.stats();
        prop_assert_eq!((stats.records, stats.watermarks, stats.buckets, stats.intros, stats.asks), (0, 0, 0, 0, 0));
    }

    /// A relay is allocated only for a pair that was introduced and where both asked, and the
    /// session limits hold.
    #[test]
    fn relay_needs_both_consents(
        ops in prop::collection::vec(
            prop_oneof![
                (0..PEERS, 0..PEERS).prop_map(|(a, b)| ROp::Punch(a, b)),
                (0..PEERS, 0..PEERS).prop_map(|(a, b)| ROp::Relay(a, b)),
                (0u64..3_000).prop_map(ROp::Advance),
                (0usize..8).prop_map(ROp::Close),
            ],
            1..80,
        ),
    ) {
        let limits = limits();
        let mut server = Server::new(limits.clone());
        let mut now = 0u64;
        for p in 0..PEERS {
            let out = server.handle(ctx(p, now), Request::Publish(record(p, p, 1, UNIX_BASE)));
            let published = matches!(out.reply, Some(Response::Published { .. }));
            prop_assert!(published);
        }
        // Model: when each pair was introduced, and live asks (asker, peer) -> asked at.
        let mut intro: HashMap<(usize, usize), u64> = HashMap::new();
        let mut asks: HashMap<(usize, usize), u64> = HashMap::new();
        let mut sessions: Vec<(u64, usize, usize)> = Vec::new();
        let key = |a: usize, b: usize| (a.min(b), a.max(b));
        for op in ops {
            match op {
                ROp::Punch(a, b) => {
                    let out = server.handle(ctx(a, now), Request::Punch { target: addr(b), private: vec![] });
                    if a == b {
                        prop_assert_eq!(out.reply, Some(Response::Refused(Refusal::SelfTarget)));
                        continue;
                    }
                    // Records live for 10 s and are not refreshed here.
                    if now >= limits.record_ttl_ms {
                        prop_assert_eq!(out.reply, Some(Response::NotFound));
                        continue;
                    }
                    let Some(Response::Punch(p)) = out.reply else {
                        prop_assert!(false, "punch reply {:?}", out.reply);
                        unreachable!()
                    };
                    prop_assert_eq!(p.peer, addr(b));
                    prop_assert_eq!(p.candidates.observed, sock(b));
                    // The target hears about the requester, with the requester's observed address.
                    let notified = matches!(
                        out.effects.as_slice(),
                        [Effect::Notify { to, conn, msg: Notify::Punch(n) }]
                            if *to == addr(b) && *conn == b as u64 && n.peer == addr(a)
                                && n.candidates.observed == sock(a)
                    );
                    prop_assert!(notified);
                    intro.insert(key(a, b), now);
                }
                ROp::Relay(a, b) => {
                    let out = server.handle(ctx(a, now), Request::Relay { peer: addr(b) });
                    if a == b {
                        prop_assert_eq!(out.reply, Some(Response::Refused(Refusal::SelfTarget)));
                        continue;
                    }
                    let introduced = intro.get(&key(a, b)).is_some_and(|&t| now < t + limits.intro_ttl_ms);
                    if !introduced {
                        prop_assert_eq!(out.reply, Some(Response::Refused(Refusal::NotIntroduced)));
                        continue;
                    }
                    let theirs = asks.get(&(b, a)).is_some_and(|&t| now < t + limits.intro_ttl_ms);
                    match (out.reply, out.effects.as_slice()) {
                        (Some(Response::RelayPending), []) => {
                            prop_assert!(!theirs, "pending although the peer had asked");
                            asks.insert((a, b), now);
                        }
                        (None, [Effect::AllocateRelay { session, requester, peer, .. }]) => {
                            prop_assert!(theirs, "allocated without the peer's consent");
                            prop_assert_eq!((*requester, *peer), (addr(a), addr(b)));
                            asks.remove(&(a, b));
                            asks.remove(&(b, a));
                            sessions.push((*session, a, b));
                        }
                        (Some(Response::Refused(Refusal::Overloaded)), []) => {
                            prop_assert!(theirs);
                            let per = |p: usize| sessions.iter().filter(|s| s.1 == p || s.2 == p).count();
                            prop_assert!(
                                sessions.len() >= limits.max_relay_sessions
                                    || per(a) >= limits.max_relay_sessions_per_peer
                                    || per(b) >= limits.max_relay_sessions_per_peer
                            );
                        }
                        other => prop_assert!(false, "relay outcome {:?}", other),
                    }
                }
                ROp::Advance(dt) => {
                    now += dt;
                    server.expire(now);
                }
                ROp::Close(i) => {
                    if !sessions.is_empty() {
                        let (id, _, _) = sessions.remove(i % sessions.len());
                        server.relay_closed(id);
                    }
                }
            }
            prop_assert_eq!(server.stats().relay_sessions, sessions.len());
            prop_assert!(sessions.len() <= limits.max_relay_sessions);
        }
    }

    /// One peer's storm never costs another peer its own budget.
    #[test]
    fn rate_limits_are_per_peer(
        storm in 1usize..300,
        others in prop::collection::vec((1..PEERS, 0u64..50), 1..40),
    ) {
        let mut l = limits();
        l.requests = Rate { per_s: 10, burst: 5 };
        let mut server = Server::new(l);
        let mut now = 0;
        let mut refused = 0;
        for _ in 0..storm {
            let r = server.handle(ctx(0, now), Request::Resolve { address: addr(1) }).reply.unwrap();
            if matches!(r, Response::Refused(Refusal::RateLimited { .. })) {
                refused += 1;
            }
        }
        prop_assert_eq!(refused, storm.saturating_sub(5));
        // Each other peer sends at most one request per 100 ms: always within its budget.
        let mut last: HashMap<usize, u64> = HashMap::new();
        for (p, dt) in others {
            now += dt;
            if last.get(&p).is_some_and(|&t| now < t + 100) { continue; }
            last.insert(p, now);
            let r = server.handle(ctx(p, now), Request::Resolve { address: addr(0) }).reply.unwrap();
            prop_assert_eq!(r, Response::NotFound);
        }
    }

    /// Control datagrams: arbitrary bytes never panic, and what decodes re-encodes to itself.
    #[test]
    fn control_datagrams_round_trip(bytes in prop::collection::vec(any::<u8>(), 0..64), token in any::<[u8; 16]>(), who in 0..PEERS) {
        if let Some(c) = Control::decode(&bytes) {
            prop_assert_eq!(c.encode(), bytes);
        }
        for c in [Control::Bind { token }, Control::Punch { from: addr(who) }] {
            let e = c.encode();
            prop_assert!(Control::is_control(&e));
            // Short enough that QUIC drops it without a version negotiation reply.
            prop_assert!(e.len() < 1200);
            prop_assert_eq!(Control::decode(&e), Some(c));
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Publish(usize, usize, u64, i64),
    Resolve(usize),
    Replay(usize),
    Advance(u64),
    Disconnect(usize),
}

#[derive(Debug, Clone)]
enum ROp {
    Punch(usize, usize),
    Relay(usize, usize),
    Advance(u64),
    Close(usize),
}

/// A record whose signature is by another key than its address is refused, even from the
/// address's own connection.
#[test]
fn bad_signature_is_refused() {
    let mut server = Server::new(limits());
    let mut rec = record(1, 0, 1, UNIX_BASE);
    let out = server.handle(ctx(0, 0), Request::Publish(rec.clone()));
    assert_eq!(out.reply, Some(Response::Refused(Refusal::BadSignature)));
    rec.signature.truncate(10);
    let out = server.handle(ctx(0, 0), Request::Publish(rec));
    assert_eq!(out.reply, Some(Response::Refused(Refusal::BadSignature)));
    assert_eq!(server.stats().records, 0);
}

/// Messages survive postcard (the wire format) unchanged.
#[test]
fn messages_round_trip_through_postcard() {
    let reqs = [
        Request::Publish(record(0, 0, 7, UNIX_BASE)),
        Request::Resolve { address: addr(1) },
        Request::Punch {
            target: addr(2),
            private: vec![sock(1), "[::1]:9".parse().unwrap()],
        },
        Request::Relay { peer: addr(3) },
    ];
    let mut seen = HashSet::new();
    for r in reqs {
        let bytes = postcard::to_allocvec(&r).unwrap();
        assert!(seen.insert(bytes.clone()));
        assert_eq!(postcard::from_bytes::<Request>(&bytes).unwrap(), r);
    }
}
