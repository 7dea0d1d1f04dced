//! What one client, and all of them together, may hold of the broker: each limit a named
//! setting with what a client meets at it. Kafka's names are given where Kafka has the setting.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// Largest request frame; a larger size prefix closes the connection
    /// (`socket.request.max.bytes`).
    pub max_request_bytes: usize,
    /// Bytes of request frames over 64 KiB buffered across all connections, partial ones
    /// included (`queued.max.request.bytes`). A connection whose frame does not fit waits to
    /// read it; smaller frames are bounded by the connection count instead.
    pub max_buffered_request_bytes: usize,
    /// Connections open at once (`max.connections`); one more is closed on accept.
    pub max_connections: usize,
    /// Connections open at once from one address (`max.connections.per.ip`).
    pub max_connections_per_ip: usize,
    /// A connection with nothing in flight and nothing received for this long is closed
    /// (`connections.max.idle.ms`).
    pub idle_timeout: Duration,
    /// Once a frame's size prefix has arrived, the rest must arrive within this time.
    pub frame_timeout: Duration,
    /// Requests of one connection read but not yet answered; past it the connection is not read
    /// until answers go out (Kafka reads one request at a time per connection).
    pub max_in_flight_requests: usize,
    /// Bytes of answers waiting for a client to read them; past it the connection is not read.
    pub max_queued_response_bytes: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_request_bytes: 100 << 20,
            max_buffered_request_bytes: 512 << 20,
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            idle_timeout: Duration::from_secs(600),
            frame_timeout: Duration::from_secs(60),
            max_in_flight_requests: 100,
            max_queued_response_bytes: 64 << 20,
        }
    }
}
