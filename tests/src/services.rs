//! Control of the machine's own PostgreSQL and RabbitMQ, for the
//! fault-injection suite: it stops, restarts and starves them on purpose.
//! Needs the rights to do so (root, as in CI).

use std::{process::Command, time::Duration};

use crate::wait_for;

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} cannot run ({e}): the fault suite needs root"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `rabbitmqctl close_connection` for every connection whose client
/// properties mention `name` (its connection name); how many were closed.
pub fn rabbitmq_close_connections(name: &str) -> usize {
    let out = Command::new("rabbitmqctl")
        .args([
            "-q",
            "list_connections",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])
        .output()
        .expect("rabbitmqctl list_connections");
    let listing = String::from_utf8_lossy(&out.stdout);
    let pids: Vec<&str> = listing
        .lines()
        .filter(|line| line.contains(name))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    for pid in &pids {
        run(
            "rabbitmqctl",
            &["-q", "close_connection", pid, "closed by a test"],
        );
    }
    pids.len()
}

/// `rabbitmqctl stop_app`: the broker refuses every connection.
pub fn rabbitmq_stop() {
    run("rabbitmqctl", &["-q", "stop_app"]);
}

/// `rabbitmqctl start_app`, returning once it accepts connections.
pub async fn rabbitmq_start() {
    run("rabbitmqctl", &["-q", "start_app"]);
    run("rabbitmqctl", &["-q", "await_startup"]);
}

/// The broker's memory alarm: with `on`, the high watermark is 0, so every
/// publishing connection is blocked; off restores `restore_to` (a fraction).
pub fn memory_alarm(on: bool, restore_to: &str) {
    let watermark = if on { "0" } else { restore_to };
    run(
        "rabbitmqctl",
        &["-q", "set_vm_memory_high_watermark", watermark],
    );
}

/// The broker's relative memory high watermark now (e.g. "0.4").
pub fn memory_watermark() -> String {
    let out = Command::new("rabbitmqctl")
        .args(["-q", "status"])
        .output()
        .expect("rabbitmqctl status");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|line| {
            line.strip_prefix("Memory high watermark setting: ")
                .and_then(|rest| rest.split_whitespace().next())
                .map(String::from)
        })
        .unwrap_or_else(|| "0.4".into())
}

/// Restarts PostgreSQL in immediate mode (like a crash: no checkpoint, every
/// connection cut), returning once it accepts connections again.
pub async fn postgres_restart_immediate() {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("a Debian PostgreSQL cluster")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .max()
        .expect("a cluster version");
    run(
        "pg_ctlcluster",
        &[
            "--skip-systemctl-redirect",
            &version,
            "main",
            "restart",
            "-m",
            "immediate",
        ],
    );
    wait_for(
        "postgres to accept connections",
        Duration::from_secs(60),
        || async {
            Command::new("pg_isready")
                .args(["-h", "127.0.0.1", "-q"])
                .status()
                .ok()
                .filter(|s| s.success())
                .map(|_| ())
        },
    )
    .await;
}
