//! Request frames in, response frames out, through the `kafka-protocol` codec. A frame here is
//! the bytes after the 4-byte size prefix; responses come back with their prefix.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::{api_versions, wire_guard};

pub struct DecodedRequest {
    pub header: RequestHeader,
    pub api_key: ApiKey,
    pub body: RequestKind,
}

/// What to do with a frame that cannot be served.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeFailure {
    /// ApiVersions at a version we do not know: answer v0 with UNSUPPORTED_VERSION (KIP-511).
    ApiVersionsTooNew { correlation_id: i32 },
    /// Anything else: log the reason and close the connection, as Kafka does.
    Close(String),
}

fn peek_i16(frame: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([frame[at], frame[at + 1]])
}

pub fn decode_request(frame: Bytes) -> Result<DecodedRequest, DecodeFailure> {
    decode_request_for(api_versions::SERVED_APIS, frame)
}

/// Decodes a frame for a listener that serves `table` (the broker's or the controller's).
pub fn decode_request_for(
    table: &'static [api_versions::ServedApi],
    mut frame: Bytes,
) -> Result<DecodedRequest, DecodeFailure> {
    if frame.len() < 8 {
        return Err(DecodeFailure::Close(format!("request frame of {} bytes is too short", frame.len())));
    }
    let key = peek_i16(&frame, 0);
    let version = peek_i16(&frame, 2);
    let correlation_id = i32::from_be_bytes(frame[4..8].try_into().expect("4 bytes"));
    let Ok(api_key) = ApiKey::try_from(key) else {
        return Err(DecodeFailure::Close(format!("unknown API key {key}")));
    };
    if api_key == ApiKey::ApiVersions && version > api_versions::served_in(table, api_key).map_or(0, |a| a.max) {
        return Err(DecodeFailure::ApiVersionsTooNew { correlation_id });
    }
    if !api_versions::accepts_in(table, api_key, version) {
        return Err(DecodeFailure::Close(format!("{api_key:?} version {version} is not supported")));
    }
    let header_version = api_key.request_header_version(version);
    let header = RequestHeader::decode(&mut frame, header_version)
        .map_err(|e| DecodeFailure::Close(format!("bad {api_key:?} v{version} request header: {e}")))?;
    // The crate allocates from counts it has not checked; refuse those first (see wire_guard).
    wire_guard::check_request_body(api_key, version, &frame)
        .map_err(|reason| DecodeFailure::Close(format!("bad {api_key:?} v{version} request body: {reason}")))?;
    let body = RequestKind::decode(api_key, &mut frame, version)
        .map_err(|e| DecodeFailure::Close(format!("bad {api_key:?} v{version} request body: {e}")))?;
    Ok(DecodedRequest { header, api_key, body })
}

/// Encodes a response with its header and 4-byte size prefix. The header version comes from the
/// message type (ApiVersions keeps header v0 even when its body is flexible).
pub fn encode_response(correlation_id: i32, version: i16, body: &ResponseKind) -> Result<Bytes, String> {
    let header_version = body.header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    header.encode(&mut buf, header_version).map_err(|e| format!("encode response header: {e}"))?;
    body.encode(&mut buf, version).map_err(|e| format!("encode response body: {e}"))?;
    let size = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

/// Encodes a request frame with its size prefix. Used by in-process clients (tests, simulation).
pub fn encode_request(header: &RequestHeader, body: &RequestKind) -> Result<Bytes, String> {
    let api_key = ApiKey::try_from(header.request_api_key).map_err(|_| "unknown api key".to_string())?;
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    header
        .encode(&mut buf, api_key.request_header_version(header.request_api_version))
        .map_err(|e| format!("encode request header: {e}"))?;
    body.encode(&mut buf, header.request_api_version).map_err(|e| format!("encode request body: {e}"))?;
    let size = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

/// Decodes a response frame (without its size prefix). Used by in-process clients.
pub fn decode_response(api_key: ApiKey, version: i16, mut frame: Bytes) -> Result<(i32, ResponseKind), String> {
    let header = ResponseHeader::decode(&mut frame, api_key.response_header_version(version))
        .map_err(|e| format!("decode response header: {e}"))?;
    let body = ResponseKind::decode(api_key, &mut frame, version).map_err(|e| format!("decode response: {e}"))?;
    Ok((header.correlation_id, body))
}
