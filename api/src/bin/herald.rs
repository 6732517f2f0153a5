//! `herald`: Herald's HTTP API from a terminal. Pair numbers (the QR code is
//! drawn in the terminal), create campaigns from a template and a CSV, watch
//! them with a progress bar, list messages. `--json` prints the API's own
//! JSON everywhere instead of text, for scripts.

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(name = "herald", version, about = "Herald's HTTP API from a terminal")]
struct Cli {
    /// Where Herald's API answers.
    #[arg(
        long,
        global = true,
        env = "HERALD_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// A tenant API key (`herald-api keys create` prints one).
    #[arg(long, global = true, env = "HERALD_API_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Print the API's JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sending numbers.
    Numbers {
        #[command(subcommand)]
        command: NumberCommand,
    },
    /// Message templates.
    Templates {
        #[command(subcommand)]
        command: TemplateCommand,
    },
    /// Campaigns.
    Campaigns {
        #[command(subcommand)]
        command: CampaignCommand,
    },
    /// Messages.
    Messages {
        #[command(subcommand)]
        command: MessageCommand,
    },
}

#[derive(Subcommand)]
enum NumberCommand {
    /// List the tenant's numbers.
    List,
    /// Add a number (it must then be paired).
    Add {
        /// E.164 phone, e.g. +5511987654321.
        #[arg(long)]
        phone: String,
        #[arg(long, value_enum, default_value = "whatsapp")]
        kind: Kind,
        #[arg(long)]
        label: Option<String>,
    },
    /// Unlink a number from WhatsApp (logs the device out, wipes its keys);
    /// it must be paired again before it sends.
    Unlink {
        /// The number's id or phone.
        number: String,
    },
    /// Link a number to WhatsApp: draws the QR code (or shows the pair code)
    /// and waits until the number is connected.
    Pair {
        /// The number's id or phone.
        number: String,
        /// Pair by typing a code on the phone instead of scanning a QR code.
        #[arg(long)]
        code: bool,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Draw the QR code for a terminal with a light background (the
        /// default suits light text on a dark one).
        #[arg(long)]
        invert: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Whatsapp,
    Sim,
}

#[derive(Subcommand)]
enum TemplateCommand {
    List,
    /// Create a template (handlebars, strict: a missing variable is an error).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        body: String,
    },
}

#[derive(Subcommand)]
enum CampaignCommand {
    List,
    /// Create a campaign from a template and a CSV file (or a saved list),
    /// and start it unless `--draft`.
    Create(CreateCampaign),
    /// Show a campaign and its counts per state.
    Get {
        id: String,
    },
    /// Follow a campaign with a progress bar until it ends.
    Watch {
        id: String,
        /// Seconds between polls.
        #[arg(long, default_value_t = 1.0)]
        every: f64,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    Cancel {
        id: String,
    },
}

#[derive(Args)]
struct CreateCampaign {
    #[arg(long)]
    name: String,
    /// Template id or name.
    #[arg(long)]
    template: String,
    /// CSV with a header row: a `phone` column, the others become variables.
    #[arg(long, conflicts_with = "list", required_unless_present = "list")]
    csv: Option<PathBuf>,
    /// A saved list's id.
    #[arg(long)]
    list: Option<String>,
    /// Sender number ids or phones (comma-separated); default: every active number.
    #[arg(long, value_delimiter = ',', conflicts_with = "pool")]
    numbers: Vec<String>,
    /// Send from the numbers tagged with this.
    #[arg(long)]
    pool: Option<String>,
    /// Hours in the recipient's local time, e.g. 09:00-20:00.
    #[arg(long, default_value = "09:00-20:00")]
    window: String,
    /// Country (ISO code) for phones written without +country code.
    #[arg(long)]
    region: Option<String>,
    /// Validate and plan without creating anything.
    #[arg(long)]
    dry_run: bool,
    /// Create without starting.
    #[arg(long)]
    draft: bool,
}

#[derive(Subcommand)]
enum MessageCommand {
    /// Messages, newest first.
    List {
        #[arg(long)]
        campaign: Option<String>,
        #[arg(long)]
        recipient: Option<String>,
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

/// An answer the API gave instead of what was asked.
#[derive(Debug)]
struct Problem {
    status: StatusCode,
    body: Value,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let detail = self.body["detail"]
            .as_str()
            .or(self.body["title"].as_str())
            .unwrap_or("no detail");
        write!(f, "{} ({})", detail, self.status)?;
        for error in self.body["errors"].as_array().into_iter().flatten() {
            write!(
                f,
                "\n  {}: {}",
                error["pointer"].as_str().unwrap_or("request"),
                error["reason"].as_str().unwrap_or("")
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

struct Api {
    http: reqwest::Client,
    base: Url,
    key: String,
}

impl Api {
    fn new(url: &str, key: Option<String>) -> anyhow::Result<Self> {
        let key = key.context("no API key: pass --key or set HERALD_API_KEY")?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()?;
        let base = Url::parse(url).with_context(|| format!("--url {url:?} is not a URL"))?;
        Ok(Self { http, base, key })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Body>,
    ) -> anyhow::Result<Value> {
        let mut url = self.base.join(path)?;
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .bearer_auth(&self.key);
        if method == Method::POST {
            request = request.header("Idempotency-Key", uuid::Uuid::new_v4().to_string());
        }
        request = match body {
            Some(Body::Json(value)) => request.json(&value),
            Some(Body::Csv(bytes)) => request.header("Content-Type", "text/csv").body(bytes),
            None => request,
        };
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach Herald at {}", self.base))?;
        let status = response.status();
        let text = response.text().await?;
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            Ok(body)
        } else {
            Err(Problem { status, body }.into())
        }
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        self.call(Method::GET, path, query, None).await
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(Method::POST, path, &[], Some(Body::Json(body)))
            .await
    }

    /// Every item of a paginated list.
    async fn all(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![("limit", "100".to_string())];
            if let Some(c) = &cursor {
                query.push(("cursor", c.clone()));
            }
            let page = self.get(path, &query).await?;
            items.extend(page["data"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return Ok(items),
            }
        }
    }

    /// A number's id from its id or its phone.
    async fn number_id(&self, given: &str) -> anyhow::Result<String> {
        if uuid::Uuid::parse_str(given).is_ok() {
            return Ok(given.to_string());
        }
        let wanted: String = given.chars().filter(char::is_ascii_digit).collect();
        self.all("/v1/numbers")
            .await?
            .into_iter()
            .find(|n| {
                n["phone"]
                    .as_str()
                    .is_some_and(|p| p.trim_start_matches('+') == wanted)
            })
            .and_then(|n| n["id"].as_str().map(str::to_string))
            .ok_or_else(|| anyhow!("no number {given} (see `herald numbers list`)"))
    }
}

enum Body {
    Json(Value),
    Csv(Vec<u8>),
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            match err.downcast_ref::<Problem>() {
                Some(problem) if json => eprintln!("{}", problem.body),
                _ => eprintln!("herald: {err:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let api = Api::new(&cli.url, cli.key)?;
    let out = Output { json: cli.json };
    match cli.command {
        Command::Numbers { command } => numbers(&api, &out, command).await,
        Command::Templates { command } => templates(&api, &out, command).await,
        Command::Campaigns { command } => campaigns(&api, &out, command).await,
        Command::Messages { command } => messages(&api, &out, command).await,
    }
}

struct Output {
    json: bool,
}

impl Output {
    /// Prints `value` as JSON, or else `text`'s lines.
    fn show(&self, value: &Value, text: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{}", text());
        }
    }

    /// Prints `items` as one JSON array, or else a line each.
    fn lines(&self, items: &[Value], line: impl Fn(&Value) -> String) {
        if self.json {
            println!("{}", Value::Array(items.to_vec()));
        } else {
            for item in items {
                println!("{}", line(item));
            }
        }
    }
}

fn s(value: &Value) -> &str {
    value.as_str().unwrap_or("-")
}

async fn numbers(api: &Api, out: &Output, command: NumberCommand) -> anyhow::Result<()> {
    match command {
        NumberCommand::List => {
            let numbers = api.all("/v1/numbers").await?;
            if !out.json {
                println!(
                    "{:<36}  {:<16}  {:<8}  {:<14}  {:<9}  {:>6}",
                    "ID", "PHONE", "KIND", "STATE", "CONNECTED", "DAY"
                );
            }
            out.lines(&numbers, |n| {
                format!(
                    "{:<36}  {:<16}  {:<8}  {:<14}  {:<9}  {:>6}",
                    s(&n["id"]),
                    s(&n["phone"]),
                    s(&n["kind"]),
                    s(&n["state"]),
                    if n["connected"] == true { "yes" } else { "no" },
                    n["warmup_day"]
                )
            });
        }
        NumberCommand::Add { phone, kind, label } => {
            let kind = match kind {
                Kind::Whatsapp => "whatsapp",
                Kind::Sim => "sim",
            };
            let created = api
                .post(
                    "/v1/numbers",
                    json!({ "phone": phone, "kind": kind, "label": label }),
                )
                .await?;
            out.show(&created, || {
                format!(
                    "added {} ({}); link it with: herald numbers pair {}",
                    s(&created["phone"]),
                    s(&created["id"]),
                    s(&created["id"])
                )
            });
        }
        NumberCommand::Unlink { number } => {
            let id = api.number_id(&number).await?;
            let unlinked = api
                .call(
                    Method::DELETE,
                    &format!("/v1/numbers/{id}/session"),
                    &[],
                    None,
                )
                .await?;
            out.show(&unlinked, || {
                format!(
                    "unlinked; the number is now {}",
                    s(&unlinked["state"]).replace('_', " ")
                )
            });
        }
        NumberCommand::Pair {
            number,
            code,
            timeout,
            invert,
        } => {
            let how = Pairing {
                by_code: code,
                timeout: Duration::from_secs(timeout),
                invert,
            };
            pair(api, out, &number, how).await?
        }
    }
    Ok(())
}

struct Pairing {
    by_code: bool,
    timeout: Duration,
    invert: bool,
}

/// Draws a QR code with half blocks, two modules per character. The glyphs'
/// ink is the terminal's text colour: light modules on a dark terminal,
/// dark ones when inverted for a light terminal.
fn terminal_qr(code: &str, invert: bool) -> anyhow::Result<String> {
    use qrcode::render::unicode::Dense1x2;
    let (dark, light) = if invert {
        (Dense1x2::Dark, Dense1x2::Light)
    } else {
        (Dense1x2::Light, Dense1x2::Dark)
    };
    Ok(qrcode::QrCode::new(code.as_bytes())?
        .render::<Dense1x2>()
        .dark_color(dark)
        .light_color(light)
        .quiet_zone(true)
        .build())
}

async fn pair(api: &Api, out: &Output, number: &str, how: Pairing) -> anyhow::Result<()> {
    let Pairing {
        by_code,
        timeout,
        invert,
    } = how;
    let id = api.number_id(number).await?;
    let method = if by_code { "code" } else { "qr" };
    api.post(
        &format!("/v1/numbers/{id}/pair"),
        json!({ "method": method }),
    )
    .await?;
    let deadline = Instant::now() + timeout;
    let mut shown: Option<String> = None;
    loop {
        let n = api.get(&format!("/v1/numbers/{id}"), &[]).await?;
        let pairing = &n["pairing"];
        if n["connected"] == true
            && n["state"] == "active"
            && (pairing.is_null() || pairing["status"] == "paired")
        {
            out.show(&n, || format!("{} is linked and connected", s(&n["phone"])));
            return Ok(());
        }
        match pairing["status"].as_str() {
            Some("failed") | Some("expired") => bail!(
                "pairing {}: {}",
                s(&pairing["status"]),
                pairing["error"].as_str().unwrap_or("try again")
            ),
            Some("showing_code") => {
                let code = s(&pairing["code"]).to_string();
                if shown.as_deref() != Some(code.as_str()) {
                    if out.json {
                        println!(
                            "{}",
                            json!({ "event": "code", "method": method, "code": code, "expires_at": pairing["code_expires_at"] })
                        );
                    } else if by_code {
                        println!(
                            "On the phone: WhatsApp → Linked devices → Link with phone number, and type:\n\n    {code}\n"
                        );
                    } else {
                        let qr = terminal_qr(&code, invert)?;
                        println!(
                            "{qr}\nScan with WhatsApp → Settings → Linked devices → Link a device.\n\
                             (The code changes every few seconds; a new one is drawn below.)\n"
                        );
                    }
                    shown = Some(code);
                }
            }
            _ => {}
        }
        if Instant::now() > deadline {
            bail!("not linked after {} s", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
}

async fn templates(api: &Api, out: &Output, command: TemplateCommand) -> anyhow::Result<()> {
    match command {
        TemplateCommand::List => {
            let templates = api.all("/v1/templates").await?;
            out.lines(&templates, |t| {
                format!("{}  {}  {:?}", s(&t["id"]), s(&t["name"]), s(&t["body"]))
            });
        }
        TemplateCommand::Create { name, body } => {
            let created = api
                .post("/v1/templates", json!({ "name": name, "body": body }))
                .await?;
            out.show(&created, || {
                format!("template {} ({})", s(&created["name"]), s(&created["id"]))
            });
        }
    }
    Ok(())
}

async fn campaigns(api: &Api, out: &Output, command: CampaignCommand) -> anyhow::Result<()> {
    match command {
        CampaignCommand::List => {
            let campaigns = api.all("/v1/campaigns").await?;
            out.lines(&campaigns, |c| {
                let (done, total) = progress(c);
                format!(
                    "{}  {:<10}  {:>7}/{:<7}  {}",
                    s(&c["id"]),
                    s(&c["status"]),
                    done,
                    total,
                    s(&c["name"])
                )
            });
        }
        CampaignCommand::Create(create) => create_campaign(api, out, create).await?,
        CampaignCommand::Get { id } => {
            let c = api.get(&format!("/v1/campaigns/{id}"), &[]).await?;
            out.show(&c, || describe(&c));
        }
        CampaignCommand::Watch { id, every } => watch(api, out, &id, every).await?,
        CampaignCommand::Pause { id } => act(api, out, &id, "pause").await?,
        CampaignCommand::Resume { id } => act(api, out, &id, "resume").await?,
        CampaignCommand::Cancel { id } => act(api, out, &id, "cancel").await?,
    }
    Ok(())
}

async fn act(api: &Api, out: &Output, id: &str, verb: &str) -> anyhow::Result<()> {
    let c = api
        .post(&format!("/v1/campaigns/{id}/{verb}"), json!({}))
        .await?;
    out.show(&c, || format!("{}: {}", s(&c["name"]), s(&c["status"])));
    Ok(())
}

/// Messages in a final state, and all messages.
fn progress(c: &Value) -> (u64, u64) {
    const FINAL: [&str; 7] = [
        "sent",
        "delivered",
        "read",
        "failed",
        "unknown",
        "suppressed",
        "cancelled",
    ];
    let counts = c["counts"].as_object().cloned().unwrap_or_default();
    let done = FINAL
        .iter()
        .map(|s| counts.get(*s).and_then(Value::as_u64).unwrap_or(0))
        .sum();
    let total = counts.values().filter_map(Value::as_u64).sum();
    (done, total)
}

fn describe(c: &Value) -> String {
    let (done, total) = progress(c);
    let mut lines = vec![
        format!("{} ({})", s(&c["name"]), s(&c["id"])),
        format!("status    {}", s(&c["status"])),
        format!("progress  {done} of {total} settled"),
    ];
    for (state, count) in c["counts"].as_object().into_iter().flatten() {
        lines.push(format!("  {state:<10} {count}"));
    }
    lines.push(format!(
        "replies   {} ({} opt-outs)",
        c["replies"], c["opt_outs"]
    ));
    lines.join("\n")
}

async fn create_campaign(api: &Api, out: &Output, create: CreateCampaign) -> anyhow::Result<()> {
    let template = template_id(api, &create.template).await?;
    let (start, end) = create
        .window
        .split_once('-')
        .context("--window is two times, e.g. 09:00-20:00")?;
    let list_id = match (&create.list, &create.csv) {
        (Some(list), _) => list.clone(),
        (None, Some(path)) => {
            import(api, out, &create.name, path, create.region.as_deref()).await?
        }
        (None, None) => bail!("give --csv or --list"),
    };
    let mut body = json!({
        "name": create.name,
        "template_id": template,
        "list_id": list_id,
        "window": { "start": start, "end": end },
        "dry_run": create.dry_run,
    });
    if let Some(pool) = &create.pool {
        body["pool"] = json!(pool);
    } else {
        let mut numbers = Vec::new();
        if create.numbers.is_empty() {
            for n in api.all("/v1/numbers").await? {
                if n["state"] == "active" {
                    numbers.push(n["id"].clone());
                }
            }
        } else {
            for given in &create.numbers {
                numbers.push(json!(api.number_id(given).await?));
            }
        }
        body["numbers"] = Value::Array(numbers);
    }
    if let Some(region) = &create.region {
        body["default_region"] = json!(region);
    }
    let created = api.post("/v1/campaigns", body).await?;
    if create.dry_run {
        out.show(&created, || {
            format!(
                "dry run: {} recipients, {} suppressed, {} rejected; completes {}",
                created["report"]["accepted"],
                created["report"]["suppressed"],
                created["report"]["rejected_total"],
                created["plan"]["completes_at"]
                    .as_str()
                    .unwrap_or("beyond the plan's horizon")
            )
        });
        return Ok(());
    }
    // The campaign's fields, with its creation report beside them.
    let id = s(&created["id"]).to_string();
    let campaign = if create.draft {
        created.clone()
    } else {
        api.post(&format!("/v1/campaigns/{id}/start"), json!({}))
            .await?
    };
    out.show(&campaign, || {
        format!(
            "campaign {} ({}): {} recipients, {} rejected, {} suppressed; {}\nfollow it with: herald campaigns watch {id}",
            s(&campaign["name"]),
            id,
            created["report"]["accepted"],
            created["report"]["rejected_total"],
            created["report"]["suppressed"],
            s(&campaign["status"])
        )
    });
    Ok(())
}

async fn template_id(api: &Api, given: &str) -> anyhow::Result<String> {
    if uuid::Uuid::parse_str(given).is_ok() {
        return Ok(given.to_string());
    }
    api.all("/v1/templates")
        .await?
        .into_iter()
        .find(|t| t["name"] == given)
        .and_then(|t| t["id"].as_str().map(str::to_string))
        .ok_or_else(|| anyhow!("no template named {given:?} (see `herald templates list`)"))
}

/// Uploads a CSV into a new list; returns the list's id.
async fn import(
    api: &Api,
    out: &Output,
    name: &str,
    path: &PathBuf,
    region: Option<&str>,
) -> anyhow::Result<String> {
    let bytes = tokio::fs::read(path)
        .await
        .with_context(|| format!("cannot read {}", path.display()))?;
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let list = api
        .post("/v1/lists", json!({ "name": format!("{name} · {file}") }))
        .await?;
    let list_id = s(&list["id"]).to_string();
    let query: Vec<(&str, String)> = region
        .map(|r| vec![("default_region", r.to_string())])
        .unwrap_or_default();
    let mut report = api
        .call(
            Method::POST,
            &format!("/v1/lists/{list_id}/import"),
            &query,
            Some(Body::Csv(bytes)),
        )
        .await?;
    while report["status"] == "running" {
        tokio::time::sleep(Duration::from_millis(500)).await;
        report = api
            .get(&format!("/v1/imports/{}", s(&report["id"])), &[])
            .await?;
    }
    if report["status"] == "failed" {
        bail!(
            "the import failed: {}",
            report["error"].as_str().unwrap_or("no reason given")
        );
    }
    if !out.json {
        eprintln!(
            "imported {}: {} accepted, {} rejected, {} duplicates merged",
            path.display(),
            report["accepted"],
            report["rejected"],
            report["merged"]
        );
        for rejection in report["rejections"]
            .as_array()
            .into_iter()
            .flatten()
            .take(10)
        {
            eprintln!("  line {}: {}", rejection["line"], s(&rejection["reason"]));
        }
    }
    Ok(list_id)
}

async fn watch(api: &Api, out: &Output, id: &str, every: f64) -> anyhow::Result<()> {
    let every = Duration::from_secs_f64(every.max(0.2));
    let bar = if out.json {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:40.green/white}] {pos}/{len} {percent}% · {msg} · ETA {eta}",
            )?
            .progress_chars("=> "),
        );
        bar
    };
    loop {
        let c = api.get(&format!("/v1/campaigns/{id}"), &[]).await?;
        let (done, total) = progress(&c);
        let status = s(&c["status"]).to_string();
        if out.json {
            println!(
                "{}",
                json!({ "id": id, "status": status, "settled": done, "total": total, "counts": c["counts"] })
            );
        } else {
            bar.set_prefix(s(&c["name"]).to_string());
            bar.set_length(total);
            bar.set_position(done);
            bar.set_message(format!(
                "{status} · {} delivered · {} failed",
                c["counts"]["delivered"].as_u64().unwrap_or(0)
                    + c["counts"]["read"].as_u64().unwrap_or(0),
                c["counts"]["failed"]
            ));
        }
        if matches!(status.as_str(), "completed" | "cancelled") {
            bar.finish();
            if !out.json {
                println!("{}", describe(&c));
            }
            return Ok(());
        }
        tokio::time::sleep(every).await;
    }
}

async fn messages(api: &Api, out: &Output, command: MessageCommand) -> anyhow::Result<()> {
    let MessageCommand::List {
        campaign,
        recipient,
        state,
        limit,
    } = command;
    let path = match &campaign {
        Some(id) => format!("/v1/campaigns/{id}/messages"),
        None => "/v1/messages".to_string(),
    };
    let mut query = vec![("limit", limit.to_string())];
    if let Some(r) = recipient {
        query.push(("recipient", r));
    }
    if let Some(s) = state {
        query.push(("state", s));
    }
    let page = api.get(&path, &query).await?;
    out.show(&page, || {
        page["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                format!(
                    "{}  {:<16}  {:<10}  {}{}",
                    s(&m["id"]),
                    s(&m["recipient"]),
                    s(&m["state"]),
                    s(&m["body"]).chars().take(50).collect::<String>(),
                    m["failure_reason"]
                        .as_str()
                        .map(|r| format!("  ({r})"))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}
