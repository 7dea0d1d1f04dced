//! Links to the other brokers of a cluster, for a follower's fetches from its leaders
//! (`Action::Forward` to `Peer::Broker`): one connection per peer, kept open, one request at a
//! time (the core keeps at most one fetch in flight per leader). A failed exchange drops the
//! connection; the next request opens a new one.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Longer than any fetch waits at a leader (500 ms): past it the leader is taken as gone.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// One request for a peer: where it listens now, the frame, and where its answer goes.
struct Request {
    address: (String, u16),
    frame: Bytes,
    answer: Box<dyn FnOnce(Result<Bytes, String>) + Send>,
}

#[derive(Default)]
pub struct PeerLinks {
    links: BTreeMap<i32, mpsc::UnboundedSender<Request>>,
}

impl PeerLinks {
    /// Sends `frame` to broker `peer` at `address`; `answer` gets its answer (exactly once).
    pub fn send(
        &mut self,
        peer: i32,
        address: (String, u16),
        frame: Bytes,
        answer: impl FnOnce(Result<Bytes, String>) + Send + 'static,
    ) {
        let link = self.links.entry(peer).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run_link(peer, rx));
            tx
        });
        let request = Request { address, frame, answer: Box::new(answer) };
        if let Err(mpsc::error::SendError(request)) = link.send(request) {
            (request.answer)(Err("the link to the peer is gone".to_string()));
        }
    }
}

async fn run_link(peer: i32, mut requests: mpsc::UnboundedReceiver<Request>) {
    let mut stream: Option<((String, u16), TcpStream)> = None;
    while let Some(Request { address, frame, answer }) = requests.recv().await {
        // A peer that moved (a new address in the view) gets a new connection.
        if stream.as_ref().is_some_and(|(at, _)| *at != address) {
            stream = None;
        }
        let result = tokio::time::timeout(EXCHANGE_TIMEOUT, async {
            if stream.is_none() {
                stream = Some((address.clone(), crate::forward::connect(&address.0, address.1).await?));
            }
            let (_, s) = stream.as_mut().expect("connected above");
            crate::forward::exchange(s, &frame).await
        })
        .await
        .unwrap_or_else(|_| Err("the peer did not answer in time".to_string()));
        if let Err(e) = &result {
            tracing::debug!(peer, "exchange with peer failed: {e}");
            stream = None;
        }
        answer(result);
    }
}
