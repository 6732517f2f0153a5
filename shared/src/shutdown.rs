//! Turning SIGTERM / Ctrl-C into the one `CancellationToken` every component
//! receives, and bounding how long a component may take to stop.

use std::{future::Future, time::Duration};

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGTERM or SIGINT. A second signal ends
/// the process at once (exit status 130), for an operator who will not wait.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
        trigger.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::warn!("second signal: exiting without finishing");
        std::process::exit(130);
    });
    token
}

/// Runs a component to its end, but once `shutdown` fires gives it at most
/// `grace` more: a component still busy then is abandoned (its tasks are
/// dropped with the runtime) and an error says so.
pub async fn bounded<F>(
    component: &str,
    grace: Duration,
    shutdown: CancellationToken,
    run: F,
) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    tokio::pin!(run);
    tokio::select! {
        result = &mut run => return result,
        _ = shutdown.cancelled() => {}
    }
    match tokio::time::timeout(grace, run).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(
                ?grace,
                "{component} did not stop within its shutdown grace; exiting"
            );
            anyhow::bail!("{component} did not stop within {grace:?}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component that needs `needs` after the signal, given `grace`.
    async fn stop_taking(needs: Duration, grace: Duration) -> anyhow::Result<()> {
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let run = async move {
            stop.cancelled().await;
            tokio::time::sleep(needs).await;
            Ok(())
        };
        shutdown.cancel();
        bounded("test", grace, shutdown, run).await
    }

    #[tokio::test]
    async fn a_component_that_stops_in_time_ends_normally() {
        let result = stop_taking(Duration::from_millis(10), Duration::from_secs(30)).await;
        assert!(result.is_ok());
    }

    #[tokio::test]
    async fn a_component_past_its_grace_is_abandoned() {
        let result = stop_taking(Duration::from_secs(3600), Duration::from_millis(20)).await;
        assert!(result.is_err());
    }
}
