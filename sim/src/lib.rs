//! `herald-sim`: a stand-in for the WhatsApp network, for development, the demo
//! and the tests. A separate process, like the real servers.
//!
//! Layout:
//! - [`protocol`]: the line-delimited JSON protocol devices speak (Herald's sim
//!   session is the client).
//! - [`network`]: numbers, sessions, pairing, acks, receipts, pending events.
//! - [`log`]: the durable log of every accepted message, the oracle tests
//!   count duplicates and losses against.
//! - [`device`]: the TCP listener for devices.
//! - [`admin`]: the HTTP admin API.

pub mod admin;
pub mod device;
pub mod log;
pub mod network;
pub mod protocol;
pub mod rules;

use std::{net::SocketAddr, path::Path};

use herald_shared::config::SimConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::network::{Behaviour, Network};

/// Runs the simulator on the given listeners until `shutdown`.
pub async fn run(
    config: &SimConfig,
    admin: TcpListener,
    devices: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let network = Network::open(
        Path::new(&config.data_dir),
        Behaviour {
            server_ack_delay_ms: config.server_ack_delay_ms,
            delivered_probability: config.delivered_probability,
            delivered_delay_ms: config.delivered_delay_ms,
            read_probability: config.read_probability,
            read_delay_ms: config.read_delay_ms,
            rules: Default::default(),
        },
    )?;
    let log_addr = |l: &TcpListener| l.local_addr().map(|a: SocketAddr| a.to_string());
    tracing::info!(
        admin = %log_addr(&admin)?,
        devices = %log_addr(&devices)?,
        data_dir = %config.data_dir,
        "simulator listening"
    );
    let device_task = tokio::spawn(device::serve(devices, network.clone(), shutdown.clone()));
    axum::serve(admin, admin::router(network))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await?;
    shutdown.cancel();
    device_task.await?;
    Ok(())
}
