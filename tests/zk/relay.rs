//! One front end of the fixture: its accept loop and, per client connection, a relay to its own
//! connection to Tansu.
//!
//! Requests are read in order. A controller-only request is answered by the front end itself
//! when it is not the controller (NOT_CONTROLLER) and, on the controller, when it is
//! CreatePartitions; every other request goes to Tansu. Replies reach the client in request
//! order: the reader queues either a ready reply or a note that Tansu owes one, and the writer
//! takes them in turn (rewriting Tansu's replies, see `rewrite`). Produce with acks=0 owes none.
//!
//! Any failure (a peer closing, a malformed frame, a version the fixture cannot decode) ends
//! that one connection, with a line on stderr.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::Shared;
use super::answers::{self, CONTROLLER_ONLY};
use super::rewrite::{self, Advertised};
use super::wire::{
    RequestHead, produce_expects_response, read_frame, request_body, response_correlation_id, write_frame,
};

/// A front end: node `node_id` of the cluster in `shared`.
#[derive(Clone)]
pub struct FrontEnd {
    pub node_id: i32,
    pub shared: Arc<Shared>,
}

/// What the writer sends next: a reply the front end made, or the one Tansu owes for `head`.
enum Pending {
    Ready(Bytes),
    FromUpstream(RequestHead),
}

impl FrontEnd {
    /// Accepts clients until the runtime shuts down.
    pub async fn serve(self, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((client, _)) => {
                    let now = std::time::Instant::now();
                    self.shared.accepted.lock().unwrap_or_else(|p| p.into_inner()).push((self.node_id, now));
                    tokio::spawn(self.clone().serve_client(client));
                }
                Err(e) => {
                    self.log(format_args!("accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn log(&self, message: std::fmt::Arguments<'_>) {
        eprintln!("[zk fixture: broker {}] {message}", self.node_id);
    }

    async fn serve_client(self, client: TcpStream) {
        if let Err(e) = self.relay(client).await {
            self.log(format_args!("connection closed: {e:#}"));
        }
    }

    async fn relay(&self, client: TcpStream) -> Result<()> {
        let upstream = TcpStream::connect(&self.shared.upstream)
            .await
            .with_context(|| format!("connect to Tansu at {}", self.shared.upstream))?;
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let (client_in, client_out) = client.into_split();
        let (upstream_in, upstream_out) = upstream.into_split();
        let (queue, pending) = mpsc::unbounded_channel();
        let writer = self.write_replies(pending, upstream_in, client_out);
        tokio::pin!(writer);
        tokio::select! {
            // The client has sent everything: deliver what is still owed, then close.
            read = self.read_requests(client_in, upstream_out, queue) => {
                read?;
                writer.await
            }
            written = &mut writer => written,
        }
    }

    /// Reads the client's requests until it closes, answering or forwarding each.
    async fn read_requests(
        &self,
        mut client_in: OwnedReadHalf,
        mut upstream_out: OwnedWriteHalf,
        queue: mpsc::UnboundedSender<Pending>,
    ) -> Result<()> {
        while let Some(frame) = read_frame(&mut client_in).await.context("client")? {
            let head = RequestHead::parse(&frame)?;
            let pending = match self.own_answer(head, &frame)? {
                Some(reply) => Some(Pending::Ready(reply)),
                None => {
                    write_frame(&mut upstream_out, &frame).await.context("write to Tansu")?;
                    expects_response(head, &frame)?.then_some(Pending::FromUpstream(head))
                }
            };
            if let Some(pending) = pending {
                queue.send(pending).ok().context("reply writer stopped")?;
            }
        }
        Ok(())
    }

    /// The front end's own reply to a request, if it does not go to Tansu.
    fn own_answer(&self, head: RequestHead, frame: &Bytes) -> Result<Option<Bytes>> {
        let Some(key) = head.key().filter(|key| CONTROLLER_ONLY.contains(key)) else { return Ok(None) };
        if !self.shared.controller.is_controller(self.node_id) {
            let answer = answers::not_controller(key, head, frame)?;
            self.shared.not_controller_answers.fetch_add(answer.not_controller_entries, Ordering::Relaxed);
            return Ok(Some(answer.frame));
        }
        if key == ApiKey::CreatePartitions {
            return Ok(Some(answers::controller_create_partitions(head, frame)?.frame));
        }
        Ok(None)
    }

    /// Sends the replies in request order until the reader is done and nothing is owed.
    async fn write_replies(
        &self,
        mut pending: mpsc::UnboundedReceiver<Pending>,
        mut upstream_in: OwnedReadHalf,
        mut client_out: OwnedWriteHalf,
    ) -> Result<()> {
        while let Some(next) = pending.recv().await {
            let reply = match next {
                Pending::Ready(reply) => reply,
                Pending::FromUpstream(head) => self.upstream_reply(head, &mut upstream_in).await?,
            };
            write_frame(&mut client_out, &reply).await.context("write to client")?;
        }
        Ok(())
    }

    /// Tansu's reply to `head`, as the fixture's clients see it.
    async fn upstream_reply(&self, head: RequestHead, upstream_in: &mut OwnedReadHalf) -> Result<Bytes> {
        let frame = read_frame(upstream_in).await.context("Tansu")?.context("Tansu closed the connection")?;
        let correlation_id = response_correlation_id(&frame)?;
        ensure!(
            correlation_id == head.correlation_id,
            "Tansu answered correlation id {correlation_id}, {} was expected",
            head.correlation_id
        );
        let cluster = Advertised { ports: &self.shared.ports, controller: self.shared.controller.reported() };
        rewrite::response(head, frame, &cluster)
    }
}

/// Whether Tansu answers this request: all but Produce with acks=0 do.
fn expects_response(head: RequestHead, frame: &Bytes) -> Result<bool> {
    if head.key() != Some(ApiKey::Produce) {
        return Ok(true);
    }
    let body = request_body(ApiKey::Produce, head.version, frame)?;
    produce_expects_response(head.version, &body)
}
