//! A small Kafka wire client over TCP using the broker's own codec: the CLI's transport, and the
//! simulator's clients (under madsim the same code runs over simulated TCP).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};
use kafka_protocol::protocol::{Request, StrBytes};
use spool_core::codec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Client {
    stream: TcpStream,
    correlation: i32,
    timeout: Duration,
    client_id: &'static str,
}

impl Client {
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Client, String> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| format!("connect: {e}"))?;
        Ok(Client { stream, correlation: 0, timeout, client_id: "spool" })
    }

    pub fn with_client_id(mut self, client_id: &'static str) -> Self {
        self.client_id = client_id;
        self
    }

    /// A request frame with the next correlation id.
    fn frame<R: Request + Into<RequestKind>>(&mut self, version: i16, body: R) -> Result<bytes::Bytes, String> {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str(self.client_id)));
        codec::encode_request(&header, &body.into())
    }

    async fn write(&mut self, frame: &[u8]) -> Result<(), String> {
        self.stream.write_all(frame).await.map_err(|e| format!("write: {e}"))?;
        self.stream.flush().await.map_err(|e| format!("flush: {e}"))
    }

    /// One request that gets no response (produce with acks=0): written and flushed only.
    pub async fn send_only<R: Request + Into<RequestKind>>(&mut self, version: i16, body: R) -> Result<(), String> {
        let frame = self.frame(version, body)?;
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.write(&frame)).await.map_err(|_| "write timed out".to_string())?
    }

    /// One request and its response, or an error on timeout, a broken connection or a bad frame.
    pub async fn call<R: Request + Into<RequestKind>>(
        &mut self,
        version: i16,
        body: R,
    ) -> Result<ResponseKind, String> {
        let frame = self.frame(version, body)?;
        let (correlation, timeout) = (self.correlation, self.timeout);
        let exchange = async {
            self.write(&frame).await?;
            let size = self.stream.read_i32().await.map_err(|e| format!("read: {e}"))?;
            let mut buf = BytesMut::zeroed(size.max(0) as usize);
            self.stream.read_exact(&mut buf).await.map_err(|e| format!("read: {e}"))?;
            let key = ApiKey::try_from(R::KEY).map_err(|_| "unknown key".to_string())?;
            let (got, response) = codec::decode_response(key, version, buf.freeze())?;
            if got != correlation {
                return Err(format!("correlation id {got}, expected {correlation}"));
            }
            Ok(response)
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| "request timed out".to_string())?
    }
}
