//! The `herald` CLI against a running stack on the simulated network: pair a
//! number by scanning the QR code it draws in the terminal, create a campaign
//! from a template and a CSV, watch it to the end, list its messages; clear
//! errors and a failing exit status for bad input.

use std::{process::Stdio, time::Duration};

use herald_tests::{Stack, StackOptions, browser::decode_terminal_qr, mobile, stack::binary};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};

fn herald(stack: &Stack, args: &[&str]) -> Command {
    let mut command = Command::new(binary("herald"));
    command
        .args(args)
        .env_clear()
        .env("HERALD_URL", &stack.api.base)
        .env("HERALD_API_KEY", stack.api.key.as_deref().unwrap())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

async fn run(stack: &Stack, args: &[&str]) -> (bool, String, String) {
    let output = tokio::time::timeout(Duration::from_secs(120), herald(stack, args).output())
        .await
        .unwrap_or_else(|_| panic!("herald {args:?} did not finish"))
        .expect("run herald");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn json(stack: &Stack, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (ok, stdout, stderr) = run(stack, &all).await;
    assert!(ok, "herald {args:?} failed: {stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_create_watch_and_list_from_the_terminal() {
    let stack = Stack::start(StackOptions {
        workers: 1,
        min_gap_ms: 50,
        ..StackOptions::default()
    })
    .await;
    let phone = mobile(970, 1);
    stack.sim.create_number(&phone, false).await;
    let added = json(
        &stack,
        &["numbers", "add", "--phone", &phone, "--kind", "sim"],
    )
    .await;
    assert_eq!(added["phone"], phone.as_str());
    // Simulated numbers start out as linked; this account never was.
    let unlinked = json(&stack, &["numbers", "unlink", &phone]).await;
    assert_eq!(unlinked["state"], "needs_pairing");

    // The QR code drawn in the terminal is the one the network offers.
    let mut pairing = herald(&stack, &["numbers", "pair", &phone, "--timeout", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("herald numbers pair");
    let mut lines = BufReader::new(pairing.stdout.take().unwrap()).lines();
    let mut drawn = String::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("a QR code within a minute")
            .unwrap();
        let Some(line) = line else {
            let mut stderr = String::new();
            use tokio::io::AsyncReadExt;
            pairing
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .await
                .unwrap();
            panic!("herald numbers pair ended early: {stderr}\n{drawn}");
        };
        if line.starts_with("Scan with WhatsApp") {
            break;
        }
        drawn.push_str(&line);
        drawn.push('\n');
    }
    let code = decode_terminal_qr(&drawn);
    assert_eq!(stack.sim.number(&phone).await["qr"], code.as_str());
    stack.sim.scan(&code).await;
    let mut rest = String::new();
    while let Ok(Some(line)) = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the end of pairing")
    {
        rest.push_str(&line);
        rest.push('\n');
    }
    let status = pairing.wait().await.unwrap();
    assert!(status.success(), "pairing failed: {rest}");
    assert!(rest.contains("is linked and connected"), "{rest}");

    // A template and a CSV with a row the API refuses: nothing is created,
    // the row is named, the exit status says so.
    json(
        &stack,
        &[
            "templates",
            "create",
            "--name",
            "promo",
            "--body",
            "Hi {{name}}, {{offer}} today",
        ],
    )
    .await;
    let dir = tempdir(&stack);
    let bad = dir.join("bad.csv");
    std::fs::write(&bad, format!("phone,name\n{},Rui\n", mobile(971, 0))).unwrap();
    let (ok, _, stderr) = run(
        &stack,
        &[
            "campaigns",
            "create",
            "--name",
            "bad",
            "--template",
            "promo",
            "--csv",
            bad.to_str().unwrap(),
            "--window",
            "00:00-24:00",
        ],
    )
    .await;
    assert!(!ok);
    assert!(
        stderr.contains("offer"),
        "names the missing variable: {stderr}"
    );
    let campaigns = json(&stack, &["campaigns", "list"]).await;
    assert_eq!(campaigns.as_array().unwrap().len(), 0, "nothing created");

    let good = dir.join("good.csv");
    let mut rows = String::from("phone,name,offer\n");
    for i in 0..8 {
        rows.push_str(&format!("{},Rui {i},2 for 1\n", mobile(972, i)));
    }
    std::fs::write(&good, rows).unwrap();
    let started = json(
        &stack,
        &[
            "campaigns",
            "create",
            "--name",
            "terminal",
            "--template",
            "promo",
            "--csv",
            good.to_str().unwrap(),
            "--window",
            "00:00-24:00",
        ],
    )
    .await;
    let id = started["id"].as_str().expect("campaign id").to_string();
    assert_eq!(started["status"], "running");

    // Watching: JSON lines while it runs, ending at completion.
    let (ok, stdout, stderr) = run(
        &stack,
        &["--json", "campaigns", "watch", &id, "--every", "0.3"],
    )
    .await;
    assert!(ok, "{stderr}");
    let updates: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = updates.last().expect("updates");
    assert_eq!(last["status"], "completed");
    assert_eq!(last["settled"], 8);
    assert_eq!(last["total"], 8);
    assert!(
        updates
            .windows(2)
            .all(|w| w[0]["settled"].as_u64() <= w[1]["settled"].as_u64()),
        "progress only grows"
    );
    // In text, it ends with the counts.
    let (ok, text, _) = run(&stack, &["campaigns", "watch", &id]).await;
    assert!(ok);
    assert!(text.contains("8 of 8 settled"), "{text}");

    let listed = json(&stack, &["messages", "list", "--campaign", &id]).await;
    let messages = listed["data"].as_array().unwrap();
    assert_eq!(messages.len(), 8);
    assert!(
        messages
            .iter()
            .all(|m| m["body"].as_str().unwrap().ends_with("2 for 1 today"))
    );
    let (ok, text, _) = run(
        &stack,
        &["messages", "list", "--recipient", &mobile(972, 2)],
    )
    .await;
    assert!(ok);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("Rui 2"), "{text}");
    assert_eq!(stack.sim.log().await.len(), 8);

    // A wrong key: a clear error and a failing status.
    let output = herald(&stack, &["campaigns", "list"])
        .env("HERALD_API_KEY", "hk_wrong")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("401"), "{stderr}");
    stack.stop().await;
}

fn tempdir(stack: &Stack) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("herald-cli-{}", stack.tenant_id));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
