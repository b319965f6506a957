//! Property tests of the I/O-free frame decoder.

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use sonm_net::codec::{HEADER_LEN, decode_message, encode_frame};
use sonm_net::{Decoded, FrameDecoder, FrameError};

const MAX: u32 = 1 << 16;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Msg {
    Unit,
    Num(u64, i32),
    Text(String),
    Blob(Vec<u8>),
    Nested {
        tag: Option<String>,
        items: Vec<(u16, bool)>,
    },
}

fn msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        Just(Msg::Unit),
        (any::<u64>(), any::<i32>()).prop_map(|(a, b)| Msg::Num(a, b)),
        ".{0,64}".prop_map(Msg::Text),
        prop::collection::vec(any::<u8>(), 0..2048).prop_map(Msg::Blob),
        (
            prop::option::of(".{0,16}"),
            prop::collection::vec(any::<(u16, bool)>(), 0..32)
        )
            .prop_map(|(tag, items)| Msg::Nested { tag, items }),
    ]
}

/// Feeds `chunks` in order, collecting every frame; stops at the first error.
fn feed(decoder: &mut FrameDecoder, chunks: &[&[u8]]) -> Result<Vec<Vec<u8>>, FrameError> {
    let mut frames = Vec::new();
    for chunk in chunks {
        let mut rest = *chunk;
        loop {
            let (used, decoded) = decoder.decode(rest)?;
            assert!(used <= rest.len());
            rest = &rest[used..];
            match decoded {
                Decoded::Frame(f) => frames.push(f),
                Decoded::NeedMore => {
                    // NeedMore means the decoder took everything it was offered.
                    assert!(rest.is_empty());
                    break;
                }
            }
            if rest.is_empty() {
                break;
            }
        }
    }
    Ok(frames)
}

/// Splits `bytes` at the given cut points (taken modulo the length, sorted).
fn split<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for c in cuts {
        out.push(&bytes[start..c]);
        start = c;
    }
    out.push(&bytes[start..]);
    out
}

proptest! {
    #[test]
    fn messages_round_trip_in_any_chunking(
        msgs in prop::collection::vec(msg(), 1..8),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let wire: Vec<u8> = msgs.iter().flat_map(|m| encode_frame(m, MAX).unwrap()).collect();
        let mut decoder = FrameDecoder::new(MAX);
        let frames = feed(&mut decoder, &split(&wire, &cuts)).unwrap();
        let decoded: Vec<Msg> = frames.iter().map(|f| decode_message(f).unwrap()).collect();
        prop_assert_eq!(decoded, msgs);
        prop_assert!(decoder.is_idle());
        prop_assert_eq!(decoder.end_of_stream(), None);
    }

    #[test]
    fn truncated_input_needs_more_and_never_panics(
        m in msg(),
        keep in any::<usize>(),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let wire = encode_frame(&m, MAX).unwrap();
        let keep = keep % wire.len(); // strictly shorter than the frame
        let mut decoder = FrameDecoder::new(MAX);
        let frames = feed(&mut decoder, &split(&wire[..keep], &cuts)).unwrap();
        prop_assert!(frames.is_empty());
        prop_assert_eq!(decoder.pending(), keep);
        // Ending the stream here is a truncation, unless nothing arrived at all.
        prop_assert_eq!(decoder.end_of_stream().is_some(), keep > 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..4096),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
        max in 0u32..4096,
    ) {
        let mut decoder = FrameDecoder::new(max);
        match feed(&mut decoder, &split(&bytes, &cuts)) {
            Ok(frames) => {
                for f in &frames {
                    prop_assert!(f.len() <= max as usize);
                    // Decoding garbage as a message may fail, but must not panic.
                    let _ = decode_message::<Msg>(f);
                }
            }
            Err(FrameError::TooLarge { len, max: m }) => {
                prop_assert_eq!(m, max);
                prop_assert!(len > u64::from(max));
                prop_assert_eq!(decoder.reserved(), 0);
            }
            Err(e) => prop_assert!(false, "unexpected error {e:?}"),
        }
    }

    #[test]
    fn any_declared_length_over_the_limit_is_refused_from_the_header(
        // Weighted towards the boundary, where an off-by-one would hide.
        len in prop_oneof![Just(MAX + 1), (MAX + 1)..=MAX * 2, (MAX + 1)..=u32::MAX],
    ) {
        let mut decoder = FrameDecoder::new(MAX);
        let header = len.to_be_bytes();
        prop_assert_eq!(decoder.decode(&header[..HEADER_LEN - 1]).unwrap(), (3, Decoded::NeedMore));
        prop_assert_eq!(
            decoder.decode(&header[HEADER_LEN - 1..]),
            Err(FrameError::TooLarge { len: u64::from(len), max: MAX })
        );
        prop_assert_eq!(decoder.reserved(), 0);
    }
}
