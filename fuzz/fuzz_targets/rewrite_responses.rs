//! Every response rewriter on arbitrary bytes.
//!
//! Input: a byte choosing the api (ApiVersions, Metadata, FindCoordinator, DescribeCluster), a
//! byte choosing the version (a few past each api's range included), two bytes for the port base,
//! then the frame after its length prefix (correlation id, header, body), which the target adds
//! as the frame codec would. `rewrite::response` must return, not panic; when it succeeds the
//! frame's length prefix must match, the correlation id must be kept, every learned broker must
//! have a sidecar port, and rewriting the result again must change nothing.

#![no_main]

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use kafka_sidecar::rewrite::{self, Advertised, Rewritten};
use libfuzzer_sys::fuzz_target;

const APIS: [(ApiKey, i16); 4] =
    [(ApiKey::ApiVersions, 4), (ApiKey::Metadata, 13), (ApiKey::FindCoordinator, 6), (ApiKey::DescribeCluster, 2)];

fn check(rewritten: &Rewritten, original: &Bytes, advertised: &Advertised) {
    let frame = &rewritten.frame;
    assert!(frame.len() >= 8);
    let len = i32::from_be_bytes(frame[..4].try_into().unwrap());
    assert_eq!(len as usize, frame.len() - 4, "length prefix must match the rewritten frame");
    assert_eq!(frame[4..8], original[4..8], "correlation id must be kept");
    for broker in &rewritten.brokers {
        assert!(broker.node_id >= 0, "negative node ids are never learned");
        advertised.port_for(broker.node_id).expect("a learned broker has a sidecar port");
    }
}

fuzz_target!(|data: &[u8]| {
    let [api, version, base_hi, base_lo, rest @ ..] = data else {
        return;
    };
    let (key, max_version) = APIS[usize::from(*api) % APIS.len()];
    // -1 ..= max + 2: versions past the range must be refused or passed, never crash.
    let version = i16::from(*version) % (max_version + 4) - 1;
    let advertised = Advertised {
        host: if api & 0x80 == 0 { "127.0.0.1".into() } else { "sidecar.local".into() },
        port_base: u16::from_be_bytes([*base_hi, *base_lo]),
    };

    let mut frame = BytesMut::with_capacity(rest.len() + 4);
    frame.put_i32(rest.len() as i32);
    frame.put_slice(rest);
    let frame = frame.freeze();

    let Ok(Some(rewritten)) = rewrite::response(key as i16, version, &frame, &advertised) else {
        return;
    };
    check(&rewritten, &frame, &advertised);

    // The rewrite is idempotent: a response already pointing at the sidecar stays as it is.
    let again = rewrite::response(key as i16, version, &rewritten.frame, &advertised)
        .expect("a rewritten response must rewrite again")
        .expect("a rewritten response is still rewritten");
    check(&again, &rewritten.frame, &advertised);
    assert_eq!(again.frame, rewritten.frame, "rewriting twice must equal rewriting once");
    assert_eq!(again.controller_id, rewritten.controller_id);
    assert_eq!(again.brokers.len(), rewritten.brokers.len());
    for (learned, original) in again.brokers.iter().zip(&rewritten.brokers) {
        assert_eq!(learned.node_id, original.node_id);
        assert_eq!(learned.host, advertised.host);
        assert_eq!(learned.port, i32::from(advertised.port_for(original.node_id).unwrap()));
    }
});
