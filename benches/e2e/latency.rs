//! Request latency at a fixed, moderate rate: one connection, one request at a time, sent on a
//! fixed schedule (`--rate` per second), each timed from the first byte written to the last byte
//! of its response read.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{ApiKey, MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::common;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Request {
    /// Produce v7, acks=1, one record (`--value-bytes`): forwarded as it is.
    Produce,
    /// Metadata v12 for the topic: the response is rewritten by the sidecar.
    Metadata,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to connect (`host:port`).
    #[arg(long)]
    addr: String,
    #[arg(long, value_enum, default_value = "produce")]
    request: Request,
    #[arg(long, default_value = "bench-latency")]
    topic: String,
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Requests per second.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Measured duration.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Unmeasured requests first (connection set-up, caches).
    #[arg(long, default_value_t = 200)]
    warm_up: u32,
    /// Also write every latency (µs, one a line) to this file.
    #[arg(long)]
    samples: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    let mut stream = TcpStream::connect(&args.addr).with_context(|| format!("connect {}", args.addr))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let template = match args.request {
        Request::Produce => common::produce_request(7, 0, 1, &args.topic, common::record_batch(1, args.value_bytes, 0)),
        Request::Metadata => {
            let body = MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(args.topic.clone())))),
            ]));
            common::request_frame(ApiKey::Metadata, 12, 0, &body)
        }
    };
    let mut frame = template.to_vec();
    let mut response = Vec::with_capacity(64 * 1024);
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let measured = (args.seconds * f64::from(args.rate)).round() as usize;
    let total = args.warm_up as usize + measured;
    let mut latencies = Vec::with_capacity(measured);
    let start = Instant::now();
    for i in 0..total {
        let due = start + interval * i as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let correlation_id = i as i32;
        frame[8..12].copy_from_slice(&correlation_id.to_be_bytes());
        let sent = Instant::now();
        stream.write_all(&frame)?;
        read_frame(&mut stream, &mut response)?;
        let elapsed = sent.elapsed();
        let answered = i32::from_be_bytes(response[..4].try_into().expect("4 bytes"));
        if answered != correlation_id {
            bail!("response to correlation id {answered}, expected {correlation_id}");
        }
        if i >= args.warm_up as usize {
            latencies.push(elapsed);
        }
    }
    let wall = start.elapsed();
    if let Some(path) = &args.samples {
        let mut out = BufWriter::new(File::create(path).with_context(|| format!("create {path}"))?);
        for latency in &latencies {
            writeln!(out, "{:.1}", latency.as_secs_f64() * 1e6)?;
        }
        out.flush()?;
    }
    let mut sorted = latencies.clone();
    sorted.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let pct = |p: f64| us(sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]);
    let mean = sorted.iter().map(|d| us(*d)).sum::<f64>() / sorted.len() as f64;
    println!(
        "{{\"requests\": {}, \"rate\": {:.1}, \"mean_us\": {mean:.1}, \"p50_us\": {:.1}, \"p90_us\": {:.1}, \
         \"p99_us\": {:.1}, \"p999_us\": {:.1}, \"max_us\": {:.1}, \"response_bytes\": {}}}",
        sorted.len(),
        total as f64 / wall.as_secs_f64(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        us(*sorted.last().expect("samples")),
        response.len() + 4,
    );
    Ok(())
}

/// Reads one response frame into `buf` (without its length prefix).
fn read_frame(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<()> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).context("read response length")?;
    let len = u32::from_be_bytes(len) as usize;
    buf.resize(len, 0);
    stream.read_exact(buf).context("read response")?;
    Ok(())
}
