//! Carries a broker's forwarded admin request to the active controller's listener and brings its
//! answer back (`Action::Forward` in, `Broker::handle_forwarded` out). One connection per request:
//! admin requests are rare, and a fresh connection never mixes up two answers.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// As long as Kafka's admin clients wait for a topic request by default.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);
/// An answer to a topic request is small; a larger size prefix is a broken peer.
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// Sends `frame` (size prefix included) to the controller and returns its answer frame without
/// the size prefix.
pub async fn forward(frame: Bytes, controller: Option<(String, u16)>) -> Result<Bytes, String> {
    let (host, port) = controller.ok_or_else(|| "no active controller is known".to_string())?;
    let exchange = async {
        let mut stream = connect(&host, port).await?;
        exchange(&mut stream, &frame).await
    };
    tokio::time::timeout(FORWARD_TIMEOUT, exchange)
        .await
        .map_err(|_| "the controller did not answer in time".to_string())?
}

pub async fn connect(host: &str, port: u16) -> Result<TcpStream, String> {
    let address = resolve(host, port).await?;
    let stream = TcpStream::connect(address).await.map_err(|e| format!("connect {address}: {e}"))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Writes one request frame (size prefix included) and reads one answer frame, returned
/// without its size prefix.
pub async fn exchange(stream: &mut TcpStream, frame: &[u8]) -> Result<Bytes, String> {
    stream.write_all(frame).await.map_err(|e| format!("write: {e}"))?;
    // A buffered stream (madsim's) sends nothing until flushed.
    stream.flush().await.map_err(|e| format!("flush: {e}"))?;
    let size = stream.read_i32().await.map_err(|e| format!("read: {e}"))?;
    let size = usize::try_from(size).ok().filter(|s| (4..=MAX_ANSWER_BYTES).contains(s));
    let size = size.ok_or_else(|| "the peer sent a bad frame size".to_string())?;
    let mut buf = BytesMut::zeroed(size);
    stream.read_exact(&mut buf).await.map_err(|e| format!("read: {e}"))?;
    Ok(buf.freeze())
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    let address = format!("{host}:{port}");
    if let Ok(parsed) = address.parse() {
        return Ok(parsed);
    }
    let mut found = tokio::net::lookup_host(address.as_str()).await.map_err(|e| format!("resolving {address}: {e}"))?;
    let first = found.next();
    first.ok_or_else(|| format!("{address} resolves to nothing"))
}
