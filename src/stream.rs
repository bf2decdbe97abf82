//! A connection the sidecar reads and writes frames on: plain TCP, or TLS in either direction
//! (towards a broker, or from a client on a TLS listener). `tokio_util`'s `Either` forwards reads
//! and (vectored) writes to whichever it is.

use tokio::net::TcpStream;
use tokio_rustls::TlsStream;
use tokio_util::either::Either;

pub type Stream = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// A plain TCP connection.
pub fn plain(tcp: TcpStream) -> Stream {
    Either::Left(tcp)
}

/// A TLS connection, client or server side.
pub fn tls(tls: impl Into<TlsStream<TcpStream>>) -> Stream {
    Either::Right(Box::new(tls.into()))
}
