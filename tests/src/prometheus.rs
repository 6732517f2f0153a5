//! A real Prometheus (Debian's `prometheus` package; `deploy/test.sh`
//! installs it) scraping a [`Stack`](crate::Stack), with Herald's alert rules
//! loaded, and its HTTP API for the tests' questions.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::wait_for;

/// The repository's `deploy/prometheus` directory.
pub fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("deploy")
        .join("prometheus")
}

/// Finds a Prometheus tool on `PATH`, or panics saying how to get it.
pub fn tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found: install Debian's prometheus package \
                 (deploy/test.sh does: apt-get install --no-install-recommends prometheus)"
            )
        })
}

/// Runs `promtool` with `args` in the rules directory; returns its output,
/// panicking (with the output) if it fails.
pub fn promtool(args: &[&str]) -> String {
    let output = std::process::Command::new(tool("promtool"))
        .args(args)
        .current_dir(rules_dir())
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

pub struct Prometheus {
    pub base: String,
    child: Child,
    http: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus in `dir`, scraping `targets` (`(name, address)`)
    /// every second and evaluating the alert rules every second.
    pub async fn start(dir: &Path, targets: &[(String, String)]) -> Self {
        std::fs::create_dir_all(dir).expect("prometheus dir");
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n",
        );
        config.push_str(&format!(
            "  - {}\n",
            rules_dir().join("alerts.yml").display()
        ));
        config.push_str("scrape_configs:\n");
        for (name, addr) in targets {
            config.push_str(&format!(
                "  - job_name: {name}\n    static_configs:\n      - targets: [\"{addr}\"]\n"
            ));
        }
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).expect("prometheus config");
        let listen = crate::ports::free_addr();
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("prometheus starts");
        let prometheus = Self {
            base: format!("http://{listen}"),
            child,
            http: crate::http(),
        };
        let ready = format!("{}/-/ready", prometheus.base);
        wait_for("prometheus to be ready", Duration::from_secs(60), || {
            let (http, url) = (prometheus.http.clone(), ready.clone());
            async move {
                let response = http.get(&url).send().await.ok()?;
                response.status().is_success().then_some(())
            }
        })
        .await;
        prometheus
    }

    /// `GET /api/v1/<path>` with `query`; the `data` of a successful answer.
    pub async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let url = reqwest::Url::parse_with_params(&format!("{}/api/v1/{path}", self.base), query)
            .expect("a valid URL");
        let response = self
            .http
            .get(url)
            .send()
            .await
            .expect("prometheus reachable");
        let body: Value = response.json().await.expect("prometheus JSON");
        assert_eq!(body["status"], "success", "prometheus {path}: {body}");
        body["data"].clone()
    }

    /// The instant vector of `promql`: `(labels, value)` per series.
    pub async fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        let data = self.api("query", &[("query", promql)]).await;
        data["result"]
            .as_array()
            .expect("a vector result")
            .iter()
            .map(|series| {
                let value = series["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN);
                (series["metric"].clone(), value)
            })
            .collect()
    }

    /// Waits until `promql` returns at least one series satisfying `accept`.
    pub async fn wait_for(
        &self,
        promql: &str,
        timeout: Duration,
        accept: impl Fn(&[(Value, f64)]) -> bool,
    ) -> Vec<(Value, f64)> {
        let accept = &accept;
        wait_for(&format!("prometheus: {promql}"), timeout, || async move {
            let result = self.query(promql).await;
            accept(&result).then_some(result)
        })
        .await
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
