//! The Kafka wire: framing, request/response header peeks and a bounds-checked cursor over
//! primitive types.
//!
//! Everything here is pure and synchronous: it never awaits, never allocates per frame beyond the
//! frame's own buffer, and reports malformed input as typed errors instead of panicking.

mod codec;
mod cursor;
mod encode;
mod header;
mod splice;
mod walker;

pub use codec::{FrameCodec, FrameError, FrameErrorKind, holds_whole_frame};
pub use cursor::{DecodeError, Reader, Writer};
pub use encode::{CLIENT_ID, EncodeError, encode_request, encode_response};
pub use header::{
    RequestHeader, api_name, error_name, peek_request_header, response_body_offset, response_correlation_id,
    response_error_code, top_level_error_offset, with_request_correlation_id, with_response_correlation_id,
};
pub use splice::Splices;
pub use walker::Walker;
