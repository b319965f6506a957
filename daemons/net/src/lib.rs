//! `sonm-net`: QUIC transport whose peers are Ethereum addresses.
//!
//! - [`identity`]: Ethereum keys, the certificate binding, its verification.
//! - [`codec`]: I/O-free length-prefixed frames of postcard-encoded messages.
//! - [`Endpoint`]/[`Connection`]: quinn on smol with verifiers that expose the peer's address;
//!   framed streams and request/response with timeouts.
//!
//! See README.md for the identity scheme and the wire format.

pub mod codec;
mod endpoint;
pub mod identity;
mod verify;

pub use alloy_primitives::Address;
pub use codec::{DEFAULT_MAX_FRAME, Decoded, FrameDecoder, FrameError};
pub use endpoint::{
    Connection, Endpoint, EndpointConfig, FramedRecv, FramedSend, Incoming, NetError, Responder,
    STREAM_ERR_BAD_FRAME, with_timeout,
};
pub use identity::{Binding, EthKey, Identity, IdentityError, VerifiedPeer};
