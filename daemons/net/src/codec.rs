//! Length-prefixed frames, I/O-free.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of a postcard-encoded
//! message. [`FrameDecoder`] is a state machine fed whatever bytes arrive; it checks a declared
//! length against the limit as soon as the 4 header bytes are in, before reserving anything,
//! and then grows its buffer only as body bytes actually arrive.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Default largest frame body: big enough for any control message; bulk data goes in chunks.
pub const DEFAULT_MAX_FRAME: u32 = 1 << 20;

/// The most a decoder reserves up front for a body; the rest is reserved as bytes arrive, so a
/// peer that declares a large frame and sends nothing costs us little.
const INITIAL_RESERVE: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: u64, max: u32 },
    #[error("stream ended {have} bytes into a {need}-byte frame")]
    Truncated { have: usize, need: usize },
    #[error("cannot encode message: {0}")]
    Encode(String),
    #[error("cannot decode message: {0}")]
    Decode(String),
}

/// Encodes `msg` as one frame (header and body), refusing bodies over `max`.
pub fn encode_frame<T: Serialize + ?Sized>(msg: &T, max: u32) -> Result<Vec<u8>, FrameError> {
    let out = postcard::to_extend(msg, vec![0u8; HEADER_LEN])
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    let len = out.len() - HEADER_LEN;
    let len32 = u32::try_from(len)
        .ok()
        .filter(|l| *l <= max)
        .ok_or(FrameError::TooLarge {
            len: len as u64,
            max,
        })?;
    let mut out = out;
    out[..HEADER_LEN].copy_from_slice(&len32.to_be_bytes());
    Ok(out)
}

/// Decodes one frame body as a `T`; trailing bytes are an error (one message per frame).
pub fn decode_message<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let (msg, rest) =
        postcard::take_from_bytes(body).map_err(|e| FrameError::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Decode(format!(
            "{} trailing bytes after message",
            rest.len()
        )));
    }
    Ok(msg)
}

/// What one [`FrameDecoder::decode`] step produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Every byte offered was taken; a frame needs more.
    NeedMore,
    /// A whole frame body.
    Frame(Vec<u8>),
}

#[derive(Debug)]
enum State {
    Header { buf: [u8; HEADER_LEN], have: usize },
    Body { need: usize, buf: Vec<u8> },
    // A bad header leaves the stream unsynchronised: every later call repeats the error.
    Failed(FrameError),
}

/// The frame decoder state machine.
#[derive(Debug)]
pub struct FrameDecoder {
    max: u32,
    state: State,
}

impl FrameDecoder {
    pub fn new(max: u32) -> Self {
        Self {
            max,
            state: State::Header {
                buf: [0; HEADER_LEN],
                have: 0,
            },
        }
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    /// True between frames: a stream may end here without truncating anything.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Header { have: 0, .. })
    }

    /// Bytes of the current, unfinished frame received so far (header included).
    pub fn pending(&self) -> usize {
        match &self.state {
            State::Header { have, .. } => *have,
            State::Body { buf, .. } => HEADER_LEN + buf.len(),
            State::Failed(_) => 0,
        }
    }

    /// Bytes currently reserved for the frame body (to check that nothing is allocated ahead).
    pub fn reserved(&self) -> usize {
        match &self.state {
            State::Body { buf, .. } => buf.capacity(),
            _ => 0,
        }
    }

    /// The error for a stream that ends now: `None` if it ends between frames.
    pub fn end_of_stream(&self) -> Option<FrameError> {
        match &self.state {
            State::Header { have: 0, .. } => None,
            State::Header { have, .. } => Some(FrameError::Truncated {
                have: *have,
                need: HEADER_LEN,
            }),
            State::Body { need, buf } => Some(FrameError::Truncated {
                have: HEADER_LEN + buf.len(),
                need: HEADER_LEN + need,
            }),
            State::Failed(e) => Some(e.clone()),
        }
    }

    /// Takes bytes from the front of `input`, stopping at the end of a frame, and returns how
    /// many it took and whether a frame is complete. Call again with the rest of `input`.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Decoded), FrameError> {
        let mut used = 0;
        loop {
            match &mut self.state {
                State::Failed(e) => return Err(e.clone()),
                State::Header { buf, have } => {
                    let take = (HEADER_LEN - *have).min(input.len() - used);
                    buf[*have..*have + take].copy_from_slice(&input[used..used + take]);
                    *have += take;
                    used += take;
                    if *have < HEADER_LEN {
                        return Ok((used, Decoded::NeedMore));
                    }
                    let len = u32::from_be_bytes(*buf);
                    if len > self.max {
                        let err = FrameError::TooLarge {
                            len: u64::from(len),
                            max: self.max,
                        };
                        self.state = State::Failed(err.clone());
                        return Err(err);
                    }
                    let need = len as usize;
                    // Bounded by the limit just checked, and by INITIAL_RESERVE.
                    let buf = Vec::with_capacity(need.min(INITIAL_RESERVE));
                    self.state = State::Body { need, buf };
                }
                State::Body { need, buf } => {
                    let take = (*need - buf.len()).min(input.len() - used);
                    if buf.capacity() < buf.len() + take {
                        // Grow geometrically, never past the declared length.
                        let target = (buf.capacity() * 2).max(buf.len() + take).min(*need);
                        buf.reserve_exact(target - buf.len());
                    }
                    buf.extend_from_slice(&input[used..used + take]);
                    used += take;
                    if buf.len() < *need {
                        return Ok((used, Decoded::NeedMore));
                    }
                    let frame = std::mem::take(buf);
                    self.state = State::Header {
                        buf: [0; HEADER_LEN],
                        have: 0,
                    };
                    return Ok((used, Decoded::Frame(frame)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_header_fails_before_reserving() {
        let mut d = FrameDecoder::new(1024);
        let header = u32::MAX.to_be_bytes();
        assert_eq!(d.decode(&header[..3]).unwrap(), (3, Decoded::NeedMore));
        assert_eq!(
            d.decode(&header[3..]),
            Err(FrameError::TooLarge {
                len: u64::from(u32::MAX),
                max: 1024
            })
        );
        assert_eq!(d.reserved(), 0);
        // Poisoned: the stream cannot be resynchronised.
        assert!(d.decode(&[0, 0, 0, 0]).is_err());
    }

    #[test]
    fn limit_is_inclusive() {
        let mut d = FrameDecoder::new(3);
        assert_eq!(
            d.decode(&[0, 0, 0, 3, 1, 2, 3]).unwrap(),
            (7, Decoded::Frame(vec![1, 2, 3]))
        );
        assert_eq!(
            d.decode(&[0, 0, 0, 4]),
            Err(FrameError::TooLarge { len: 4, max: 3 })
        );
    }

    #[test]
    fn body_reserve_grows_with_arrivals_not_declaration() {
        let max = 1 << 20;
        let mut d = FrameDecoder::new(max);
        d.decode(&max.to_be_bytes()).unwrap();
        assert!(d.reserved() <= INITIAL_RESERVE);
        assert_eq!(
            d.end_of_stream(),
            Some(FrameError::Truncated {
                have: 4,
                need: 4 + max as usize
            })
        );
    }

    #[test]
    fn empty_body_is_a_frame() {
        let mut d = FrameDecoder::new(8);
        assert_eq!(
            d.decode(&[0, 0, 0, 0, 9]).unwrap(),
            (4, Decoded::Frame(Vec::new()))
        );
        assert!(d.is_idle());
    }

    #[test]
    fn encode_refuses_over_limit() {
        let big = vec![0u8; 100];
        assert!(matches!(
            encode_frame(&big, 50),
            Err(FrameError::TooLarge { max: 50, .. })
        ));
        let ok = encode_frame(&big, 200).unwrap();
        assert_eq!(decode_message::<Vec<u8>>(&ok[HEADER_LEN..]).unwrap(), big);
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        assert!(matches!(
            decode_message::<u8>(&[1, 2]),
            Err(FrameError::Decode(_))
        ));
    }
}
