//! Messages of the rendezvous protocol (ALPN `sonm-rv/1`), carried as sonm-net frames.
//!
//! A client opens a stream per [`Request`] and reads one [`Response`]. The server pushes a
//! [`Notify`] on a stream it opens and reads one [`NotifyAck`]. The peer of every message is the
//! connection's verified Ethereum address: nothing in a message says who sends it.

use std::net::SocketAddr;

use alloy_primitives::{Address, Signature};
use serde::{Deserialize, Serialize};

/// The protocol's ALPN.
pub const ALPN: &[u8] = b"sonm-rv/1";

/// Domain tag of a record signature (the NUL ends it, so no other tag extends it).
pub const RECORD_DOMAIN: &[u8] = b"sonm-rendezvous record v1\0";

/// Length of a relay party's secret token.
pub const TOKEN_LEN: usize = 16;

/// What a worker publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub address: Address,
    /// Strictly increasing per address: the server refuses any seq it has seen.
    pub seq: u64,
    /// Unix seconds when signed; the server refuses a record outside its clock-skew window, so a
    /// replay that outlives the server's memory of `seq` is refused too.
    pub timestamp: u64,
    /// Addresses the worker can be reached at on its own network (LAN, VPN).
    pub private: Vec<SocketAddr>,
}

impl Record {
    /// The signed bytes: domain tag, address, seq, timestamp (u64 BE), then each private
    /// address as (4|6, IP bytes, port BE), preceded by their count (u16 BE).
    pub fn signing_message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(RECORD_DOMAIN.len() + 38 + self.private.len() * 19);
        m.extend_from_slice(RECORD_DOMAIN);
        m.extend_from_slice(self.address.as_slice());
        m.extend_from_slice(&self.seq.to_be_bytes());
        m.extend_from_slice(&self.timestamp.to_be_bytes());
        let count = u16::try_from(self.private.len()).unwrap_or(u16::MAX);
        m.extend_from_slice(&count.to_be_bytes());
        for addr in self.private.iter().take(usize::from(count)) {
            match addr {
                SocketAddr::V4(a) => {
                    m.push(4);
                    m.extend_from_slice(&a.ip().octets());
                }
                SocketAddr::V6(a) => {
                    m.push(6);
                    m.extend_from_slice(&a.ip().octets());
                }
            }
            m.extend_from_slice(&addr.port().to_be_bytes());
        }
        m
    }

    /// Signs with `sign`, an EIP-191 personal-message signer (sonm-net's `EthKey::sign_message`).
    pub fn sign(self, sign: impl FnOnce(&[u8]) -> Signature) -> SignedRecord {
        let signature = sign(&self.signing_message()).as_bytes().to_vec();
        SignedRecord {
            record: self,
            signature,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("signature is malformed")]
    Malformed,
    #[error("record claims {claimed} but is signed by {signer}")]
    WrongSigner { claimed: Address, signer: Address },
}

/// A record with its author's signature, so that a customer can check what the server hands it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRecord {
    pub record: Record,
    /// 65 bytes, r || s || v. (serde has no impl for `[u8; 65]`.)
    pub signature: Vec<u8>,
}

impl SignedRecord {
    /// Checks that `record.address` signed the record.
    pub fn verify(&self) -> Result<(), RecordError> {
        let raw: [u8; 65] = self
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| RecordError::Malformed)?;
        let sig = Signature::from_raw_array(&raw).map_err(|_| RecordError::Malformed)?;
        let signer = sig
            .recover_address_from_msg(self.record.signing_message())
            .map_err(|_| RecordError::Malformed)?;
        if signer != self.record.address {
            return Err(RecordError::WrongSigner {
                claimed: self.record.address,
                signer,
            });
        }
        Ok(())
    }
}

/// Where a peer may be reached: what it says (private) and what the server saw (observed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidates {
    pub observed: SocketAddr,
    pub private: Vec<SocketAddr>,
}

impl Candidates {
    /// Every distinct candidate, private ones first (a shared LAN beats a hairpin).
    pub fn all(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = Vec::with_capacity(self.private.len() + 1);
        for a in self.private.iter().chain(std::iter::once(&self.observed)) {
            if !out.contains(a) {
                out.push(*a);
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Publish (or refresh) the connection's peer's record.
    Publish(SignedRecord),
    /// Where is this worker?
    Resolve { address: Address },
    /// Introduce me to `target` and tell us both each other's candidates (PunchRequest).
    Punch {
        target: Address,
        private: Vec<SocketAddr>,
    },
    /// I agree to a relay with `peer`; allocated once both have asked (RelayRequest).
    Relay { peer: Address },
}

/// Tells a peer whom to punch towards, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PunchNotify {
    pub peer: Address,
    pub candidates: Candidates,
    /// Start punching this long after receipt: the server sends both notices at once, so both
    /// sides start within about one path delay of each other, with no clock agreement needed.
    pub start_in_ms: u32,
}

/// A relay session: send `Control::Bind { token }` to `relay` from the QUIC socket, then speak
/// QUIC to `relay` as if it were the peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayAllocated {
    pub peer: Address,
    pub relay: SocketAddr,
    pub token: [u8; TOKEN_LEN],
    /// The session closes after this long without traffic.
    pub idle_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// Over the peer's request rate; try again later.
    RateLimited {
        retry_after_ms: u64,
    },
    /// The record is for another address than the connection's peer.
    Forged {
        claimed: Address,
    },
    /// The record's signature is not by its address.
    BadSignature,
    /// A seq at or below one already accepted.
    Replayed {
        last_seq: u64,
    },
    /// The record's timestamp is outside the server's clock-skew window.
    ClockSkew {
        server_unix: u64,
    },
    TooManyCandidates {
        max: u32,
    },
    /// A punch or relay towards oneself.
    SelfTarget,
    /// A relay for a peer the server never introduced us to (no punch between us lately).
    NotIntroduced,
    /// The server's tables (or this peer's relay sessions) are full.
    Overloaded,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Published {
        /// Publish again before this (the client library refreshes at a third of it).
        ttl_ms: u64,
        observed: SocketAddr,
    },
    Resolved {
        record: SignedRecord,
        observed: SocketAddr,
    },
    NotFound,
    Punch(PunchNotify),
    /// Recorded; the peer has not asked yet. A `Notify::RelayAllocated` follows if it does.
    RelayPending,
    RelayAllocated(RelayAllocated),
    Refused(Refusal),
}

/// Pushed by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Notify {
    Punch(PunchNotify),
    RelayAllocated(RelayAllocated),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyAck;
