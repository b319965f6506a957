//! Control datagrams sent from the UDP socket that carries a peer's QUIC endpoint: punches
//! (to open NAT mappings towards the other peer) and relay binds (so the relay learns which
//! source address is which party).
//!
//! They are shaped as QUIC long-header packets of an unassigned version (`"SONM"`) and shorter
//! than QUIC's 1200-byte minimum Initial, which RFC 9000 §5.2.2 makes a server drop without a
//! Version Negotiation reply. A QUIC endpoint that receives one therefore ignores it silently,
//! so no socket wrapper is needed to filter them out.

use alloy_primitives::Address;

use crate::msg::TOKEN_LEN;

/// First byte: long header form (0x80) and the fixed bit (0x40).
const FIRST: u8 = 0xc0;
/// Not an IETF QUIC version, nor a reserved greasing pattern (0x?a?a?a?a).
pub const VERSION: [u8; 4] = *b"SONM";
/// first byte, version, two zero connection-ID lengths, kind.
const HEADER: usize = 1 + 4 + 1 + 1 + 1;
const KIND_PUNCH: u8 = 1;
const KIND_BIND: u8 = 2;

/// A control datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// "I am punching towards you": opens the sender's NAT mapping; the content is only for logs.
    Punch { from: Address },
    /// Binds the sender's source address to a relay session's party holding `token`.
    Bind { token: [u8; TOKEN_LEN] },
}

impl Control {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + 20);
        out.push(FIRST);
        out.extend_from_slice(&VERSION);
        out.extend_from_slice(&[0, 0]);
        match self {
            Control::Punch { from } => {
                out.push(KIND_PUNCH);
                out.extend_from_slice(from.as_slice());
            }
            Control::Bind { token } => {
                out.push(KIND_BIND);
                out.extend_from_slice(token);
            }
        }
        out
    }

    /// Whether `datagram` claims to be a control datagram (anything else may be QUIC).
    pub fn is_control(datagram: &[u8]) -> bool {
        datagram.len() >= 5 && datagram[0] & 0x80 != 0 && datagram[1..5] == VERSION
    }

    /// Parses a control datagram; `None` for anything malformed or not ours.
    pub fn decode(datagram: &[u8]) -> Option<Self> {
        if !Self::is_control(datagram) || datagram.len() < HEADER || datagram[5..7] != [0, 0] {
            return None;
        }
        let body = &datagram[HEADER..];
        match datagram[HEADER - 1] {
            KIND_PUNCH => Some(Control::Punch {
                from: Address::from(<[u8; 20]>::try_from(body).ok()?),
            }),
            KIND_BIND => Some(Control::Bind {
                token: body.try_into().ok()?,
            }),
            _ => None,
        }
    }
}
