//! Ports for the processes a test starts.
//!
//! Binding port 0 and letting it go hands out a port from the kernel's
//! ephemeral range: until the process meant to listen there binds it, any
//! outgoing connection (to Postgres, RabbitMQ, between the stack's processes)
//! may be given the same port, and the process then fails to start. A worker
//! that cannot bind its metrics port exits, and a one-worker test waits for
//! sends that never come. Ports here come from below the ephemeral range,
//! where the kernel never picks, each handed out once per test process
//! (starting at an offset of the process's own, as several test processes may
//! run at once) and checked free when handed out.

use std::{
    net::{SocketAddr, TcpListener},
    sync::atomic::{AtomicU32, Ordering},
};

/// Below Linux's default ephemeral range (32768–60999).
const FIRST: u32 = 20_000;
const LAST: u32 = 32_000;
/// RabbitMQ's inter-node port, in that range.
const TAKEN: &[u32] = &[25_672];

static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);

/// A loopback address no one listens on, for a process about to bind it.
pub fn free_addr() -> SocketAddr {
    let span = LAST - FIRST;
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(977)) % span,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let port = FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % span;
        if TAKEN.contains(&port) {
            continue;
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], port as u16));
        if TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no free port between {FIRST} and {LAST}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_outside_the_ephemeral_range_and_never_repeat() {
        let ports: Vec<u16> = (0..200).map(|_| free_addr().port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len());
        assert!(
            ports
                .iter()
                .all(|p| (FIRST..LAST).contains(&u32::from(*p)) && *p != 25_672)
        );
    }
}
