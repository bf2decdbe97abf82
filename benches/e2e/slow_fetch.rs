//! Large frames and slow readers, for the memory phase: each of `--connections` connections
//! sends one Produce request (acks=1) whose frame is exactly `--frame-bytes` long (length prefix
//! excluded), waits for its answer, then sends a Fetch for the topic `answer-<frame bytes>`, which
//! the broker stand-in answers with a frame of exactly that size, and reads that answer slowly:
//! at most `--read-bytes` a read with `--read-pause-ms` between reads, for up to `--slow-seconds`
//! after the Fetch went out (so at most `--read-bytes` per pause), then as fast as it comes. A proxy in between must hold the broker
//! back or buffer what the client has not read yet.
//!
//! Every answer is checked (correlation id, Fetch answer size, every byte of it read); the
//! client never holds more than one read's worth of an answer. Runs on one thread.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common;
use crate::load::connect_all;

const PRODUCE_ID: i32 = 1;
const FETCH_ID: i32 = 2;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to connect (`host:port`).
    #[arg(long)]
    addr: String,
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Size of the Produce request and of the Fetch answer, length prefix excluded.
    #[arg(long, default_value_t = 1024 * 1024)]
    frame_bytes: usize,
    /// Bytes of the Fetch answer one read takes while reading slowly.
    #[arg(long, default_value_t = 256 * 1024)]
    read_bytes: usize,
    /// Pause after each slow read, in milliseconds.
    #[arg(long, default_value_t = 20)]
    read_pause_ms: u64,
    /// How long after sending its Fetch a connection reads slowly; then it reads at full speed.
    #[arg(long, default_value_t = 2.0)]
    slow_seconds: f64,
}

#[derive(Debug, Default)]
struct Moved {
    sent: u64,
    received: u64,
    /// Bytes of the Fetch answer read while reading slowly.
    read_slowly: u64,
}

/// How a connection reads its Fetch answer.
#[derive(Debug, Clone, Copy)]
struct Pace {
    read_bytes: usize,
    pause: Duration,
    slow_for: Duration,
}

pub fn run(args: Args) -> Result<()> {
    let topic = format!("answer-{}", args.frame_bytes);
    let produce = common::produce_frame_exactly(7, PRODUCE_ID, &topic, args.frame_bytes)
        .with_context(|| format!("no Produce request of exactly {} bytes", args.frame_bytes))?;
    let fetch = common::fetch_request(12, FETCH_ID, &topic, 0);
    let pace = Pace {
        read_bytes: args.read_bytes.max(1),
        pause: Duration::from_millis(args.read_pause_ms),
        slow_for: Duration::from_secs_f64(args.slow_seconds),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let streams = connect_all(&args.addr, args.connections).await?;
        let start = Instant::now();
        let tasks: Vec<_> = streams
            .into_iter()
            .map(|stream| tokio::spawn(connection(stream, produce.clone(), fetch.clone(), args.frame_bytes, pace)))
            .collect();
        let mut total = Moved::default();
        for task in tasks {
            let moved = task.await??;
            total.sent += moved.sent;
            total.received += moved.received;
            total.read_slowly += moved.read_slowly;
        }
        let elapsed = start.elapsed().as_secs_f64();
        println!(
            "{{\"connections\": {}, \"frame_bytes\": {}, \"requests\": {}, \"bytes_sent\": {}, \
             \"bytes_received\": {}, \"bytes_read_slowly\": {}, \"elapsed\": {elapsed:.3}, \"mb_per_s\": {:.2}}}",
            args.connections,
            args.frame_bytes,
            2 * args.connections,
            total.sent,
            total.received,
            total.read_slowly,
            (total.sent + total.received) as f64 / elapsed / 1e6,
        );
        Ok(())
    })
}

async fn connection(
    mut stream: TcpStream,
    produce: Bytes,
    fetch: Bytes,
    frame_bytes: usize,
    pace: Pace,
) -> Result<Moved> {
    let mut moved = Moved::default();
    let mut buf = vec![0u8; pace.read_bytes.max(64 * 1024)];
    stream.write_all(&produce).await?;
    moved.sent += produce.len() as u64;
    let (received, _) = read_answer(&mut stream, PRODUCE_ID, &mut buf, None).await.context("Produce answer")?;
    moved.received += received;
    stream.write_all(&fetch).await?;
    moved.sent += fetch.len() as u64;
    let slowly = (pace, Instant::now() + pace.slow_for);
    let (received, read_slowly) =
        read_answer(&mut stream, FETCH_ID, &mut buf, Some(slowly)).await.context("Fetch answer")?;
    if received != 4 + frame_bytes as u64 {
        bail!("Fetch answer of {} bytes, asked for {frame_bytes}", received - 4);
    }
    moved.received += received;
    moved.read_slowly += read_slowly;
    Ok(moved)
}

/// Reads one answer, length prefix included, through `buf`, slowly until the deadline of `slow`
/// if given; checks its correlation id. Returns the bytes read, and how many of them slowly.
async fn read_answer(
    stream: &mut TcpStream,
    correlation_id: i32,
    buf: &mut [u8],
    slow: Option<(Pace, Instant)>,
) -> Result<(u64, u64)> {
    let mut head = [0u8; 8];
    stream.read_exact(&mut head).await.context("read the answer's length and correlation id")?;
    let [l0, l1, l2, l3, c0, c1, c2, c3] = head;
    let len = usize::try_from(i32::from_be_bytes([l0, l1, l2, l3])).context("negative answer length")?;
    let id = i32::from_be_bytes([c0, c1, c2, c3]);
    if id != correlation_id {
        bail!("answer to correlation id {id}, expected {correlation_id}");
    }
    let (mut left, mut read_slowly) = (len.checked_sub(4).context("answer shorter than its header")?, 0u64);
    while left > 0 {
        let pacing = slow.filter(|(_, until)| Instant::now() < *until);
        let n = match pacing {
            Some((pace, _)) => {
                let n = pace.read_bytes.min(buf.len()).min(left);
                stream.read_exact(&mut buf[..n]).await.context("read the answer")?;
                read_slowly += n as u64;
                tokio::time::sleep(pace.pause).await;
                n
            }
            None => {
                let most = buf.len().min(left);
                stream.read(&mut buf[..most]).await?
            }
        };
        if n == 0 {
            bail!("connection closed with {left} of {len} bytes of the answer unread");
        }
        left -= n;
    }
    Ok((4 + len as u64, read_slowly))
}
