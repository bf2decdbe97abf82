//! Framing: a byte stream decodes to the same frames however it is split.

use bytes::{Bytes, BytesMut};
use kafka_sidecar::wire::FrameCodec;
use proptest::collection::vec;
use proptest::prelude::*;
use tokio_util::codec::Decoder;

/// Frames decoded from a stream fed in `pieces`, and how the stream ended (`None`: cleanly).
fn decode_stream(mut codec: FrameCodec, pieces: &[&[u8]]) -> (Vec<Bytes>, Option<String>) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return (frames, Some(format!("{}: {e}", e.kind()))),
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(format!("{}: {e}", e.kind()))),
        }
    }
}

/// A byte stream: whole frames (some too short or too long for the codec), then maybe garbage.
fn stream() -> impl Strategy<Value = (Vec<u8>, Vec<Bytes>)> {
    let frame = vec(any::<u8>(), 0..80).prop_map(|body| {
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        Bytes::from(frame)
    });
    let tail = prop_oneof![3 => Just(Vec::new()), 1 => vec(any::<u8>(), 1..12)];
    (vec(frame, 0..8), tail).prop_map(|(frames, tail)| {
        let mut bytes: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        bytes.extend_from_slice(&tail);
        (bytes, frames)
    })
}

proptest! {
    #[test]
    fn framing_does_not_depend_on_how_the_stream_is_split(
        (bytes, frames) in prop_oneof![3 => stream(), 1 => vec(any::<u8>(), 0..64).prop_map(|b| (b, Vec::new()))],
        cuts in vec(any::<proptest::sample::Index>(), 0..10),
        requests in any::<bool>(),
        max in prop_oneof![Just(1024usize), 4..100usize],
    ) {
        let codec = || if requests { FrameCodec::requests(max) } else { FrameCodec::responses(max) };
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut pieces = Vec::new();
        let mut at = 0;
        for cut in cuts.into_iter().chain([bytes.len()]) {
            pieces.push(&bytes[at..cut]);
            at = cut;
        }

        let whole = decode_stream(codec(), &[&bytes]);
        let split = decode_stream(codec(), &pieces);
        prop_assert_eq!(&split, &whole);
        // The frames decoded are those the stream was made of, length prefix included (garbage at
        // the end may happen to form one more).
        prop_assert!(whole.0.iter().zip(&frames).all(|(decoded, made)| decoded == made));
        if whole.1.is_none() {
            prop_assert_eq!(whole.0.iter().map(Bytes::len).sum::<usize>(), bytes.len());
        }
    }
}
