//! The frame codec and the header peeks on arbitrary bytes.
//!
//! Input: one control byte, then the byte stream. The control byte picks the request or response
//! codec, the frame size limit and the size of the chunks the stream arrives in. The stream is
//! decoded chunk by chunk and as a whole: both must give the same frames and the same error.
//! Every frame must be whole and within the limit, and every peek on it must return, not panic.

#![no_main]

use bytes::{Bytes, BytesMut};
use kafka_sidecar::wire::{
    FrameCodec, api_name, error_name, peek_request_header, response_correlation_id, response_error_code,
};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

/// Frames decoded from a stream and how the stream ended (`None`: cleanly).
fn decode(mut codec: FrameCodec, stream: &[u8], chunk: usize) -> (Vec<Bytes>, Option<String>) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in stream.chunks(chunk) {
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

fn check_frame(frame: &Bytes, min: usize, max: usize) {
    assert!(frame.len() >= 4 + min, "frame shorter than its header");
    let len = i32::from_be_bytes(frame[..4].try_into().unwrap());
    assert_eq!(len as usize, frame.len() - 4, "length prefix must match the frame");
    assert!(len as usize <= max, "frame above the limit");

    if let Ok(header) = peek_request_header(frame) {
        assert!(header.client_id.start <= header.client_id.end && header.client_id.end <= frame.len());
        if let Some(body) = header.body_offset {
            assert!(body >= 12 && body <= frame.len(), "body offset {body} outside the frame");
        }
        let _ = header.client_id(frame);
        let _ = header.expects_response(frame);
        let _ = api_name(header.api_key);
        let _ = response_error_code(header.api_key, header.api_version, frame);
    }
    let correlation_id = response_correlation_id(frame).expect("every frame has a correlation id");
    let _ = error_name(correlation_id as i16);
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let requests = control & 1 == 0;
    // Limits from 16 bytes to 64 KiB: small enough that the fuzzer hits them.
    let max = 16usize << ((control >> 1) & 0x0f).min(12);
    let chunk = usize::from(control >> 5) * 3 + 1;
    let codec = || if requests { FrameCodec::requests(max) } else { FrameCodec::responses(max) };
    let min = if requests { 8 } else { 4 };

    let (frames, end) = decode(codec(), stream, chunk);
    for frame in &frames {
        check_frame(frame, min, max);
    }
    let (whole_frames, whole_end) = decode(codec(), stream, stream.len().max(1));
    assert_eq!(frames, whole_frames, "chunked and whole decoding must give the same frames");
    assert_eq!(end, whole_end, "chunked and whole decoding must end alike");
    if end.is_none() {
        assert_eq!(frames.iter().map(Bytes::len).sum::<usize>(), stream.len(), "a clean end consumes every byte");
    }
});
