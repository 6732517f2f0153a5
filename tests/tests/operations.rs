//! Operations: the whole system watched by a real Prometheus with Herald's
//! alert rules loaded, and logs that keep people's numbers and what was said
//! to them out.

use std::{collections::BTreeSet, time::Duration};

use herald_tests::{
    Stack, StackOptions, mobile,
    prometheus::{Prometheus, promtool},
    wait_for,
};
use serde_json::{Value, json};

/// A started campaign of `recipients` on `numbers`; returns its id.
async fn campaign(stack: &Stack, numbers: &[&str], recipients: &[String], body: &str) -> String {
    let template = stack.api.create_template("ops", body).await;
    let recipients: Vec<Value> = recipients
        .iter()
        .enumerate()
        .map(|(i, phone)| json!({ "phone": phone, "variables": { "name": format!("R{i}"), "code": format!("C{i}Q") } }))
        .collect();
    let created = stack
        .api
        .create_campaign(&json!({
            "name": "ops", "template_id": template, "numbers": numbers, "recipients": recipients,
            "window": { "start": "00:00", "end": "24:00" },
        }))
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    stack.api.start_campaign(&id).await;
    id
}

async fn completed(stack: &Stack, id: &str) {
    wait_for(
        "the campaign to complete",
        Duration::from_secs(120),
        || async { (stack.api.campaign(id).await["status"] == "completed").then_some(()) },
    )
    .await;
}

fn value_of(result: &[(Value, f64)], label: &str, wanted: &str) -> Option<f64> {
    result
        .iter()
        .find(|(labels, _)| labels[label] == wanted)
        .map(|(_, v)| *v)
}

fn repo_file(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The PromQL of every panel of the Grafana dashboard.
fn dashboard_queries() -> Vec<String> {
    let dashboard: Value =
        serde_json::from_str(&repo_file("deploy/grafana/herald.json")).expect("dashboard JSON");
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect()
}

/// `herald_…` metric names in `text`, histogram suffixes stripped.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (start, _) in text.match_indices("herald_") {
        let name: String = text[start..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        let name = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| base.ends_with("_seconds"))
            })
            .unwrap_or(&name)
            .to_string();
        names.insert(name);
    }
    names
}

#[test]
fn the_dashboard_and_the_alerts_use_only_catalogued_metrics_that_exist() {
    let catalogue = repo_file("docs/METRICS.md");
    let catalogued: BTreeSet<String> = catalogue
        .lines()
        .filter(|l| l.starts_with("| `herald_"))
        .flat_map(metric_names)
        .collect();
    let code = repo_file("shared/src/metrics.rs")
        + &repo_file("sim/src/network.rs")
        + &repo_file("sim/src/device.rs");
    for name in &catalogued {
        assert!(
            code.contains(&format!("\"{name}\"")),
            "{name} is catalogued but not defined"
        );
    }
    for name in metric_names(&code)
        .into_iter()
        .filter(|n| code.contains(&format!("\"{n}\"")))
    {
        assert!(
            catalogued.contains(&name),
            "{name} is not in docs/METRICS.md"
        );
    }
    let used = metric_names(&dashboard_queries().join("\n"))
        .into_iter()
        .chain(metric_names(&repo_file("deploy/prometheus/alerts.yml")));
    for name in used {
        assert!(
            catalogued.contains(&name),
            "{name} is used but not catalogued"
        );
    }
    let panels = dashboard_queries().len();
    assert!(panels >= 30, "{panels} queries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_a_campaign_and_evaluates_the_alert_rules() {
    // The rules as promtool judges them: valid, and firing as intended on
    // the unit tests' series.
    let checked = promtool(&["check", "rules", "alerts.yml"]);
    assert!(checked.contains("SUCCESS: 11 rules found"), "{checked}");
    promtool(&["test", "rules", "alerts_test.yml"]);

    let stack = Stack::start(StackOptions {
        workers: 2,
        min_gap_ms: 60,
        env: vec![
            ("HERALD__SCHEDULER__FLEET_MS".into(), "250".into()),
            ("HERALD__SCHEDULER__STALL_AFTER_MS".into(), "3000".into()),
        ],
        ..StackOptions::default()
    })
    .await;
    let targets = stack.metrics_targets();
    assert_eq!(targets.len(), 5, "sim, api, scheduler, two workers");
    let prometheus = Prometheus::start(&stack.dir.join("prometheus"), &targets).await;

    let (a_phone, b_phone) = (mobile(922, 1), mobile(922, 2));
    let a = stack.paired_number(&a_phone).await;
    let b = stack.paired_number(&b_phone).await;
    let recipients: Vec<String> = (0..40).map(|i| mobile(923, i)).collect();
    let first = campaign(&stack, &[&a, &b], &recipients, "Hi {{name}}").await;
    wait_for(
        "number a to send a few",
        Duration::from_secs(60),
        || async {
            let log = stack.sim.log().await;
            (log.iter().filter(|e| e.from == a_phone).count() >= 3).then_some(())
        },
    )
    .await;
    stack.sim.ban(&a_phone, 3600).await;
    completed(&stack, &first).await;
    // A campaign whose only number is banned has messages ready and sends
    // nothing: it stalls.
    let stuck = campaign(&stack, &[&a], &recipients[..3], "Hi {{name}}").await;

    // Every process is scraped.
    let up = prometheus
        .wait_for("up", Duration::from_secs(30), |r| {
            r.len() == targets.len() && r.iter().all(|(_, v)| *v == 1.0)
        })
        .await;
    assert_eq!(up.len(), 5);

    // The pipeline's counters and histograms.
    prometheus
        .wait_for(
            "sum(herald_messages_total{state=\"sending\"})",
            Duration::from_secs(30),
            |r| r.first().is_some_and(|(_, v)| *v >= 40.0),
        )
        .await;
    // Every claimed send is timed; only those the server acknowledged have an
    // ack time (a send cut short by the ban may end `unknown`).
    let counts = stack.api.campaign(&first).await["counts"].clone();
    let acked: f64 = ["sent", "delivered", "read"]
        .iter()
        .map(|s| counts[s].as_f64().unwrap_or(0.0))
        .sum();
    assert!(acked >= 30.0, "{counts}");
    for (series, at_least) in [
        // Every claim went through the claims' group commit.
        ("herald_group_commit_rows_total{kind=\"claims\"}", 40.0),
        ("herald_group_commits_total{kind=\"claims\"}", 1.0),
        ("herald_send_duration_seconds_count", 40.0),
        ("herald_server_ack_duration_seconds_count", acked),
    ] {
        prometheus
            .wait_for(&format!("sum({series})"), Duration::from_secs(30), |r| {
                r.first().is_some_and(|(_, v)| *v >= at_least)
            })
            .await;
    }
    let leases = prometheus
        .query("sum(herald_lease_changes_total{change=\"acquired\"})")
        .await;
    assert!(leases[0].1 >= 2.0, "{leases:?}");
    assert!(
        !prometheus
            .query("herald_outbox_lag_seconds")
            .await
            .is_empty()
    );

    // The fleet gauges, from the acting scheduler only.
    let states = prometheus
        .wait_for("herald_number_state == 1", Duration::from_secs(30), |r| {
            value_of(r, "number_id", &a).is_some()
                && r.iter()
                    .any(|(l, _)| l["number_id"] == a.as_str() && l["state"] == "banned")
        })
        .await;
    let state_of = |id: &str| {
        states
            .iter()
            .find(|(l, _)| l["number_id"] == id)
            .map(|(l, _)| l["state"].as_str().unwrap().to_string())
    };
    assert_eq!(state_of(&a).as_deref(), Some("banned"));
    assert_eq!(state_of(&b).as_deref(), Some("active"));
    assert_eq!(
        prometheus
            .query("count(herald_number_state)")
            .await
            .first()
            .map(|r| r.1),
        Some(10.0),
        "two numbers, five states each, reported once"
    );
    let connected = prometheus.query("herald_number_connected").await;
    assert_eq!(value_of(&connected, "number_id", &b), Some(1.0));
    let log = stack.sim.log().await;
    let sent_b = log.iter().filter(|e| e.from == b_phone).count() as f64;
    assert_eq!(log.len(), 40);
    // Its cap less what it was given today: what it sent, and perhaps a
    // message handed back after the ban. (A reading may be a scrape old.)
    let budget = prometheus
        .wait_for(
            &format!("herald_number_budget_remaining{{number_id=\"{b}\"}}"),
            Duration::from_secs(30),
            |r| r.first().is_some_and(|(_, v)| 100_000.0 - v >= sent_b),
        )
        .await;
    let given_b = 100_000.0 - budget[0].1;
    assert!(given_b <= 40.0, "b sent {sent_b}, was given {given_b}");
    let warmup = prometheus.query("herald_number_warmup_day").await;
    assert_eq!(value_of(&warmup, "number_id", &b), Some(0.0));
    let breakers = prometheus.query("herald_number_breaker_state").await;
    assert_eq!(value_of(&breakers, "number_id", &b), Some(0.0));
    let queues = prometheus.query("herald_queue_messages").await;
    let names: BTreeSet<&str> = queues
        .iter()
        .filter_map(|(l, _)| l["queue"].as_str())
        .collect();
    for queue in ["scheduler", "webhooks", "dead", "send"] {
        assert!(names.contains(queue), "{queue} in {names:?}");
    }
    // The stuck campaign's three messages wait.
    prometheus
        .wait_for(
            "sum(herald_messages_waiting{state=~\"queued|scheduled\"})",
            Duration::from_secs(30),
            |r| r.first().is_some_and(|(_, v)| *v == 3.0),
        )
        .await;
    assert_eq!(prometheus.query("herald_messages_waiting").await.len(), 4);
    prometheus
        .wait_for("herald_campaigns_stalled", Duration::from_secs(30), |r| {
            r.first().is_some_and(|(_, v)| *v == 1.0)
        })
        .await;
    assert_eq!(
        prometheus
            .query("herald_campaigns_running")
            .await
            .first()
            .map(|r| r.1),
        Some(1.0)
    );

    // Labels name routes and ids, never a phone number.
    let routes = prometheus
        .query("count by (route) (herald_http_requests_total)")
        .await;
    let routes: BTreeSet<String> = routes
        .iter()
        .map(|(l, _)| l["route"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(routes.contains("/v1/campaigns/{id}"), "{routes:?}");
    for route in &routes {
        let rest = route.strip_prefix("/v1").unwrap_or(route);
        assert!(
            !rest.chars().any(|c| c.is_ascii_digit() || c == '+'),
            "raw path in a route label: {route}"
        );
    }
    let series = prometheus
        .api("series", &[("match[]", "{__name__=~\"herald_.+\"}")])
        .await;
    let series = series.as_array().unwrap();
    assert!(series.len() > 50, "{} series", series.len());
    let phones: Vec<String> = recipients
        .iter()
        .chain([&a_phone, &b_phone])
        .map(|p| p[1..].to_string())
        .collect();
    for labels in series {
        let text = labels.to_string();
        for phone in &phones {
            assert!(!text.contains(phone), "a phone number in {text}");
        }
    }

    // The alert rules load and evaluate against the real series; the ban and
    // the stall raise theirs.
    let rules = prometheus.api("rules", &[]).await;
    let mut alerts = BTreeSet::new();
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            assert_eq!(rule["health"], "ok", "{rule}");
            alerts.insert(rule["name"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(alerts.len(), 11, "{alerts:?}");
    let banned_alert = format!("ALERTS{{alertname=\"HeraldNumberBanned\",number_id=\"{a}\"}}");
    prometheus
        .wait_for(&banned_alert, Duration::from_secs(30), |r| !r.is_empty())
        .await;
    prometheus
        .wait_for(
            "ALERTS{alertname=\"HeraldCampaignStalled\"}",
            Duration::from_secs(30),
            |r| !r.is_empty(),
        )
        .await;
    // Every query of the dashboard is valid PromQL, and has data unless it
    // counts something that did not happen here (errors, replies, webhooks).
    let did_not_happen = [
        "herald_inbound_messages",
        "herald_opt_outs",
        "outcome=\"error\"",
        "herald_dead_lettered",
        "status=~\"5..\"",
        "herald_http_rate_limited",
        "herald_webhook_attempt",
    ];
    for expr in dashboard_queries() {
        let expr = expr.replace("$__rate_interval", "1m");
        if prometheus.query(&expr).await.is_empty() {
            assert!(
                did_not_happen.iter().any(|m| expr.contains(m)),
                "dashboard query without data: {expr}"
            );
        }
    }
    let firing_elsewhere = prometheus
        .query("ALERTS{alertname!~\"HeraldNumberBanned|HeraldCampaignStalled\"}")
        .await;
    assert!(
        firing_elsewhere.is_empty(),
        "no other alert: {firing_elsewhere:?}"
    );
    assert_eq!(stack.api.campaign(&stuck).await["status"], "running");
    prometheus.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_at_info_carry_no_phone_numbers_or_message_bodies() {
    let stack = Stack::start(StackOptions {
        workers: 2,
        env: vec![
            ("HERALD__TELEMETRY__LOG_FORMAT".into(), "json".into()),
            ("HERALD__TELEMETRY__LOG_FILTER".into(), "info".into()),
        ],
        ..StackOptions::default()
    })
    .await;
    let sender = mobile(924, 1);
    let number = stack.paired_number(&sender).await;
    let recipients: Vec<String> = (0..15).map(|i| mobile(925, i)).collect();
    let id = campaign(
        &stack,
        &[&number],
        &recipients,
        "Confidential offer {{code}} for {{name}}",
    )
    .await;
    completed(&stack, &id).await;
    // Replies, an opt-out, and a direct answer: the inbound paths log too.
    stack
        .sim
        .inbound(&recipients[0], &sender, "my private reply", None)
        .await;
    stack
        .sim
        .inbound(&recipients[1], &sender, "STOP", None)
        .await;
    let direct = stack
        .api
        .post(
            "/v1/messages",
            &json!({ "to": recipients[2], "from": number, "text": "Confidential direct note" }),
        )
        .await
        .expect(202);
    wait_for(
        "the replies and the direct message",
        Duration::from_secs(60),
        || async {
            let inbound = stack.api.get("/v1/inbound").await.body;
            let message = stack
                .api
                .get(&format!("/v1/messages/{}", direct["id"]))
                .await
                .body;
            (inbound["data"].as_array().is_some_and(|d| d.len() == 2)
                && message["state"] != "queued"
                && message["state"] != "scheduled"
                && message["state"] != "sending")
                .then_some(())
        },
    )
    .await;

    for name in ["api", "scheduler", "worker-1", "worker-2"] {
        let log = stack.log(name);
        for line in log.lines().filter(|l| !l.trim().is_empty()) {
            let parsed: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name}: not a JSON log line ({e}): {line}"));
            assert!(parsed["level"].is_string(), "{name}: {line}");
            assert!(parsed["timestamp"].is_string(), "{name}: {line}");
            for phone in &recipients {
                assert!(
                    !line.contains(&phone[1..]),
                    "{name} logged a recipient's number: {line}"
                );
            }
            for said in ["Confidential", "private reply"] {
                assert!(!line.contains(said), "{name} logged a message body: {line}");
            }
        }
    }
    // The logs still say what happened, by id.
    let all = ["api", "scheduler", "worker-1", "worker-2"]
        .iter()
        .map(|n| stack.log(n))
        .collect::<String>();
    for event in [
        "campaign created",
        "campaign completed",
        "lease acquired",
        "recipient opted out",
    ] {
        assert!(all.contains(event), "no {event:?} in the logs");
    }
    assert!(all.contains(&id), "the campaign is named by its id");
    stack.stop().await;
}

/// The YAML of the deployment files, as JSON (PyYAML, anchors expanded):
/// `{"compose": {...}, "k8s": {"<file>": [docs]}, "grafana": [...]}`.
fn deployment_yaml() -> Value {
    const SCRIPT: &str = r#"
import json, os, sys, yaml
root = sys.stdin.read().strip()
deploy = os.path.join(root, "deploy")
out = {"compose": yaml.safe_load(open(os.path.join(deploy, "docker-compose.yml"))), "k8s": {}, "grafana": []}
k8s = os.path.join(deploy, "k8s")
for name in sorted(os.listdir(k8s)):
    out["k8s"][name] = [d for d in yaml.safe_load_all(open(os.path.join(k8s, name))) if d is not None]
for sub in ("datasources", "dashboards"):
    d = os.path.join(deploy, "grafana", "provisioning", sub)
    for name in sorted(os.listdir(d)):
        out["grafana"].append(yaml.safe_load(open(os.path.join(d, name))))
print(json.dumps(out))
"#;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = herald_tests::python::run("yaml", SCRIPT, root.display().to_string().as_bytes());
    serde_json::from_str(&text).expect("JSON from the script")
}

/// Every `HERALD__…` setting in `value` (an `environment` map, a ConfigMap's
/// `data`, a container's `env` list).
fn settings_in(value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            if let (Some(Value::String(name)), Some(value)) = (map.get("name"), map.get("value"))
                && name.starts_with("HERALD__")
            {
                out.push((name.clone(), value.as_str().unwrap_or_default().to_string()));
            }
            for (key, inner) in map {
                if key.starts_with("HERALD__") {
                    let text = match inner {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    out.push((key.clone(), text));
                } else {
                    settings_in(inner, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| settings_in(i, out)),
        _ => {}
    }
}

#[test]
fn the_deployment_files_agree_with_the_code() {
    let yaml = deployment_yaml();

    // Every setting they make is one Herald has (unknown ones are errors),
    // with a value it accepts.
    let mut settings = Vec::new();
    settings_in(&yaml, &mut settings);
    for line in repo_file("Dockerfile").lines() {
        let line = line
            .trim()
            .trim_start_matches("ENV ")
            .trim_end_matches('\\')
            .trim();
        if let Some((key, value)) = line.split_once('=')
            && key.starts_with("HERALD__")
        {
            settings.push((key.to_string(), value.to_string()));
        }
    }
    assert!(settings.len() >= 20, "{settings:?}");
    for (key, value) in &settings {
        let value = if value.starts_with("postgres://") || value.starts_with("amqp") {
            value.clone()
        } else {
            value.replace("${HERALD_MASTER_KEY:-}", "")
        };
        herald_shared::Config::load_with_env(None, [(key.clone(), value.clone())])
            .unwrap_or_else(|e| panic!("{key}={value}: {e}"));
    }

    // Compose: the whole system, workers scaled, each process started with a
    // command its binary has.
    let services = yaml["compose"]["services"].as_object().unwrap();
    for name in [
        "postgres",
        "rabbitmq",
        "migrate",
        "sim",
        "api",
        "scheduler",
        "worker",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains_key(name), "compose has no {name}");
    }
    let commands: BTreeSet<String> = services
        .values()
        .filter_map(|s| s["command"].as_array())
        .map(|c| {
            c.iter()
                .map(|a| a.as_str().unwrap())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let expected: BTreeSet<String> = [
        "herald-api migrate",
        "herald-api serve",
        "herald-sim",
        "herald-scheduler",
        "herald-worker",
    ]
    .map(String::from)
    .into();
    assert_eq!(commands, expected);
    let worker = &services["worker"];
    assert!(worker["deploy"]["replicas"].as_u64().unwrap() >= 2);
    assert_eq!(worker["stop_grace_period"], "60s");
    assert!(
        worker["environment"]
            .as_object()
            .unwrap()
            .contains_key("HERALD_MASTER_KEY")
    );

    // Kubernetes: every document named; kustomization lists files that
    // exist; probes use declared ports; disruption budgets select a
    // deployment; secrets referenced exist in the example; grace periods
    // exceed the processes' own.
    let k8s = yaml["k8s"].as_object().unwrap();
    let kustomization = &k8s["kustomization.yaml"][0];
    for resource in kustomization["resources"].as_array().unwrap() {
        assert!(
            k8s.contains_key(resource.as_str().unwrap()),
            "kustomization lists {resource}"
        );
    }
    let secret_keys: BTreeSet<String> = k8s["secret.example.yaml"][0]["stringData"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let docs: Vec<&Value> = k8s
        .iter()
        .filter(|(name, _)| *name != "kustomization.yaml")
        .flat_map(|(_, docs)| docs.as_array().unwrap())
        .collect();
    let defaults = herald_shared::Config::load_with_env(None, []).unwrap();
    let mut deployments = BTreeSet::new();
    for doc in &docs {
        assert!(
            doc["apiVersion"].is_string() && doc["kind"].is_string(),
            "{doc}"
        );
        assert!(doc["metadata"]["name"].is_string(), "{doc}");
        if doc["kind"] != "Deployment" {
            continue;
        }
        let name = doc["metadata"]["name"].as_str().unwrap();
        deployments.insert(doc["spec"]["selector"]["matchLabels"].to_string());
        let pod = &doc["spec"]["template"]["spec"];
        let grace_ms = pod["terminationGracePeriodSeconds"].as_u64().unwrap() * 1000;
        let own_grace = match name {
            "herald-api" => defaults.api.shutdown_grace_ms,
            "herald-scheduler" => defaults.scheduler.shutdown_grace_ms,
            "herald-worker" => defaults.worker.shutdown_grace_ms,
            other => panic!("unexpected deployment {other}"),
        };
        assert!(grace_ms > own_grace, "{name}: pod grace {grace_ms} ms");
        for container in pod["containers"].as_array().unwrap() {
            let ports: BTreeSet<&str> = container["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            for probe in ["livenessProbe", "readinessProbe"] {
                if let Some(port) = container[probe]["httpGet"]["port"].as_str() {
                    assert!(ports.contains(port), "{name}: {probe} on {port}");
                }
            }
            assert!(
                container["livenessProbe"].is_object(),
                "{name} has a liveness probe"
            );
            for env in container["env"].as_array().unwrap() {
                if let Some(key) = env["valueFrom"]["secretKeyRef"]["key"].as_str() {
                    assert!(secret_keys.contains(key), "{name} reads secret {key}");
                }
            }
        }
    }
    let budgets: Vec<&&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "PodDisruptionBudget")
        .collect();
    assert_eq!(budgets.len(), 3);
    for budget in budgets {
        let selector = budget["spec"]["selector"]["matchLabels"].to_string();
        assert!(deployments.contains(&selector), "{budget}");
    }
    let worker = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "herald-worker")
        .unwrap();
    let worker_env = worker["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(worker_env.contains("HERALD_MASTER_KEY"));

    // Grafana provisioning names the datasource and the dashboards' folder.
    let grafana = yaml["grafana"].as_array().unwrap();
    assert_eq!(grafana[0]["datasources"][0]["type"], "prometheus");
    assert_eq!(
        grafana[1]["providers"][0]["options"]["path"],
        "/var/lib/grafana/dashboards"
    );

    // Compose's Prometheus configuration is valid for promtool.
    let dir = std::env::temp_dir().join(format!("herald-prom-{}", herald_tests::unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        herald_tests::prometheus::rules_dir().join("alerts.yml"),
        dir.join("alerts.yml"),
    )
    .unwrap();
    let config = repo_file("deploy/prometheus/prometheus.yml").replace(
        "/etc/prometheus/alerts.yml",
        &dir.join("alerts.yml").display().to_string(),
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let config_path = dir.join("prometheus.yml").display().to_string();
    promtool(&["check", "config", &config_path]);
    let _ = std::fs::remove_dir_all(&dir);
}
