//! Device connections: one task per TCP connection, speaking
//! [`crate::protocol`].

use std::{sync::Arc, time::Duration};

use futures_util::{SinkExt, StreamExt};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_util::{
    codec::{FramedRead, FramedWrite, LinesCodec},
    sync::CancellationToken,
};

use crate::{
    network::{Attached, Network, PAIR_CODE_VALIDITY},
    protocol::{ClientFrame, MAX_FRAME_BYTES, ServerFrame},
};

/// Time a new connection has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(listener: TcpListener, network: Arc<Network>, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                let network = network.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move { connection(stream, network, shutdown).await });
            }
            Err(err) => {
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(stream: TcpStream, network: Arc<Network>, shutdown: CancellationToken) {
    let (read, write) = stream.into_split();
    let mut lines = FramedRead::new(read, LinesCodec::new_with_max_length(MAX_FRAME_BYTES));
    let mut sink = FramedWrite::new(write, LinesCodec::new_with_max_length(MAX_FRAME_BYTES));
    let (frames, mut outbound) = mpsc::unbounded_channel::<ServerFrame>();
    let closed = shutdown.child_token();

    let writer_closed = closed.clone();
    let writer = tokio::spawn(async move {
        loop {
            let frame = tokio::select! {
                frame = outbound.recv() => frame,
                _ = writer_closed.cancelled() => {
                    // Flush what was queued before the close (a final LoggedOut
                    // or Closing frame), then stop.
                    outbound.close();
                    outbound.recv().await
                }
            };
            let Some(frame) = frame else { break };
            let line = serde_json::to_string(&frame).expect("frames serialise");
            if sink.send(line).await.is_err() {
                break;
            }
        }
        let _ = SinkExt::<String>::close(&mut sink).await;
    });

    let hello = tokio::time::timeout(HELLO_TIMEOUT, lines.next()).await;
    let (phone, credential) = match hello {
        Ok(Some(Ok(line))) => match serde_json::from_str::<ClientFrame>(&line) {
            Ok(ClientFrame::Hello { phone, credential }) => (phone, credential),
            _ => {
                refuse(&frames, &closed, "expected hello");
                let _ = writer.await;
                return;
            }
        },
        _ => {
            closed.cancel();
            let _ = writer.await;
            return;
        }
    };

    let session_id = match network.attach(
        &phone,
        credential.as_deref(),
        frames.clone(),
        closed.clone(),
    ) {
        Attached::Ready(id) | Attached::Pairing(id) => id,
        Attached::Refused(frame) => {
            let _ = frames.send(frame);
            closed.cancel();
            let _ = writer.await;
            return;
        }
    };
    metrics::gauge!("herald_sim_sessions").increment(1.0);

    loop {
        let line = tokio::select! {
            _ = closed.cancelled() => break,
            line = lines.next() => line,
        };
        let Some(Ok(line)) = line else { break };
        let frame = match serde_json::from_str::<ClientFrame>(&line) {
            Ok(frame) => frame,
            Err(err) => {
                refuse(&frames, &closed, &format!("bad frame: {err}"));
                break;
            }
        };
        match frame {
            ClientFrame::Hello { .. } => {
                refuse(&frames, &closed, "hello sent twice");
                break;
            }
            ClientFrame::Send {
                id,
                to,
                body,
                media,
            } => network.send(&phone, session_id, id, to, &body, media),
            ClientFrame::ChatPresence { to, state } => {
                network.chat_presence(&phone, session_id, &to, state)
            }
            ClientFrame::Presence { .. } | ClientFrame::MarkRead { .. } => {}
            ClientFrame::Check { request, phones } => {
                let results = network.check(phones);
                let _ = frames.send(ServerFrame::CheckResult { request, results });
            }
            ClientFrame::Ack { seq } => network.ack_events(&phone, session_id, seq),
            ClientFrame::ReachoutTimelock { request } => {
                let until = network.reachout_timelock(&phone);
                let _ = frames.send(ServerFrame::ReachoutTimelockResult { request, until });
            }
            ClientFrame::RequestPairCode => match network.pair_code(&phone, session_id) {
                Some(code) => {
                    let _ = frames.send(ServerFrame::PairCode {
                        code,
                        timeout_ms: PAIR_CODE_VALIDITY.as_millis() as u64,
                    });
                }
                None => {
                    refuse(&frames, &closed, "a pair code needs an unpaired device");
                    break;
                }
            },
            ClientFrame::Logout => {
                let _ = network.unlink(&phone, "logged out by the device");
                break;
            }
        }
    }
    network.detach(&phone, session_id);
    metrics::gauge!("herald_sim_sessions").decrement(1.0);
    closed.cancel();
    let _ = writer.await;
}

fn refuse(frames: &mpsc::UnboundedSender<ServerFrame>, closed: &CancellationToken, reason: &str) {
    let _ = frames.send(ServerFrame::Closing {
        reason: reason.to_string(),
    });
    closed.cancel();
}
