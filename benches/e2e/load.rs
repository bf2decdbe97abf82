//! Many busy connections: each keeps `--depth` Produce requests (acks=1) of about
//! `--frame-bytes` in flight until `--seconds` have passed, then waits for its last answers.
//! Runs on one thread, so it takes at most one core from the proxy it loads.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to connect (`host:port`).
    #[arg(long)]
    addr: String,
    #[arg(long, default_value_t = 1)]
    connections: usize,
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Size of each Produce request frame (one batch of 1 KiB records).
    #[arg(long, default_value_t = 16 * 1024)]
    frame_bytes: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 4)]
    depth: usize,
    #[arg(long, default_value = "bench-load")]
    topic: String,
}

#[derive(Debug, Default)]
struct Moved {
    requests: u64,
    sent: u64,
    received: u64,
}

pub fn run(args: Args) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let records = common::produce_frame_of(7, args.frame_bytes);
        // One frame per in-flight slot, each with its own correlation id.
        let frames: Vec<Bytes> = (0..args.depth)
            .map(|i| {
                let mut frame = records.to_vec();
                frame[8..12].copy_from_slice(&(i as i32).to_be_bytes());
                Bytes::from(frame)
            })
            .collect();
        let streams = connect_all(&args.addr, args.connections).await?;
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(args.seconds);
        let tasks: Vec<_> =
            streams.into_iter().map(|stream| tokio::spawn(connection(stream, frames.clone(), deadline))).collect();
        let mut total = Moved::default();
        for task in tasks {
            let moved = task.await??;
            total.requests += moved.requests;
            total.sent += moved.sent;
            total.received += moved.received;
        }
        let elapsed = start.elapsed().as_secs_f64();
        println!(
            "{{\"connections\": {}, \"frame_bytes\": {}, \"depth\": {}, \"requests\": {}, \"bytes_sent\": {}, \
             \"bytes_received\": {}, \"elapsed\": {elapsed:.3}, \"requests_per_s\": {:.1}, \"mb_per_s\": {:.2}}}",
            args.connections,
            frames[0].len(),
            args.depth,
            total.requests,
            total.sent,
            total.received,
            total.requests as f64 / elapsed,
            (total.sent + total.received) as f64 / elapsed / 1e6,
        );
        Ok(())
    })
}

async fn connection(mut stream: TcpStream, frames: Vec<Bytes>, deadline: Instant) -> Result<Moved> {
    let mut moved = Moved::default();
    let mut response = Vec::with_capacity(1024);
    for frame in &frames {
        stream.write_all(frame).await?;
        moved.sent += frame.len() as u64;
    }
    let mut in_flight = frames.len();
    let mut next = 0usize;
    while in_flight > 0 {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await.context("read response length")?;
        let len = u32::from_be_bytes(len) as usize;
        response.resize(len, 0);
        stream.read_exact(&mut response).await.context("read response")?;
        let correlation_id = i32::from_be_bytes(response[..4].try_into().expect("4 bytes"));
        if correlation_id != next as i32 {
            bail!("response to correlation id {correlation_id}, expected {next}");
        }
        moved.requests += 1;
        moved.received += 4 + len as u64;
        in_flight -= 1;
        if Instant::now() < deadline {
            let frame = &frames[next];
            stream.write_all(frame).await?;
            moved.sent += frame.len() as u64;
            in_flight += 1;
        }
        next = (next + 1) % frames.len();
    }
    Ok(moved)
}

/// Opens `connections` connections to `addr`, with Nagle off, before any load starts.
pub async fn connect_all(addr: &str, connections: usize) -> Result<Vec<TcpStream>> {
    let mut streams = Vec::with_capacity(connections);
    for _ in 0..connections {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        streams.push(stream);
    }
    Ok(streams)
}
