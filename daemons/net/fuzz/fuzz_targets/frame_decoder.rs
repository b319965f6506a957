//! The frame decoder on arbitrary bytes in arbitrary chunks: it must never panic, never take
//! more than it was given, never hold more than a frame's worth of memory, never hand out a
//! frame over the limit, and once it fails it must keep failing the same way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use sonm_net::codec::decode_message;
use sonm_net::{Decoded, FrameDecoder};

/// Small, so that frames past it are common in the input.
const MAX: u32 = 4096;

/// Something with nested, variable-length fields for the message decoder to chew on.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
enum Msg {
    Ping,
    Text(String),
    Blob {
        id: u64,
        bytes: Vec<u8>,
        tags: Vec<(u32, String)>,
    },
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size, so one input explores many splittings.
    let Some((&chunk, mut rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut decoder = FrameDecoder::new(MAX);
    while !rest.is_empty() {
        let piece = &rest[..chunk.min(rest.len())];
        match decoder.decode(piece) {
            Ok((used, decoded)) => {
                assert!(used <= piece.len(), "took {used} of {} bytes", piece.len());
                assert!(used > 0 || piece.is_empty(), "made no progress");
                assert!(
                    decoder.reserved() <= MAX as usize + 4,
                    "holds {}",
                    decoder.reserved()
                );
                if let Decoded::Frame(body) = decoded {
                    assert!(body.len() <= MAX as usize, "frame of {} bytes", body.len());
                    let _ = decode_message::<Msg>(&body);
                }
                rest = &rest[used..];
            }
            Err(first) => {
                // A broken stream stays broken, with the same error.
                let again = decoder
                    .decode(rest)
                    .expect_err("a failed decoder recovered");
                assert_eq!(first.to_string(), again.to_string());
                return;
            }
        }
    }
    let _ = decoder.end_of_stream();
});
