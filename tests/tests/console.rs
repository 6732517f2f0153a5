//! The web console in a real browser (headless Chromium) against a running
//! stack on the simulated network: sign in, pair a number by scanning the QR
//! code the page shows, write a template, launch a campaign from a CSV with
//! preview and plan, watch it complete, find a message in the log. Each step
//! leaves a screenshot in `<target>/console-screenshots/`.

use std::{path::PathBuf, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use herald_tests::{
    Stack, StackOptions,
    browser::{Browser, decode_qr_png},
    mobile, wait_for,
};
use serde_json::json;

const RECIPIENTS: u32 = 12;

fn screenshots() -> PathBuf {
    // Test executables live in <target>/<profile>/deps.
    let exe = std::env::current_exe().expect("exe");
    exe.ancestors()
        .nth(3)
        .expect("target dir")
        .join("console-screenshots")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_by_qr_launch_a_campaign_from_a_csv_and_watch_it_complete() {
    let stack = Stack::start(StackOptions {
        workers: 1,
        min_gap_ms: 50,
        ..StackOptions::default()
    })
    .await;
    let shots = screenshots();
    let browser = Browser::start(&shots).await;
    let console = format!("{}/console", stack.api.base);
    let long = Duration::from_secs(60);

    // A wrong key is refused, clearly, and nothing opens.
    browser.goto(&console).await;
    browser.type_into("#api-key", "hk_not_a_key").await;
    browser.click("form.signin button[type=submit]").await;
    let refused = browser.wait_text("#notice", long, |t| !t.is_empty()).await;
    assert!(refused.contains("not accepted"), "{refused}");
    assert_eq!(
        browser.attribute("#nav", "hidden").await.as_deref(),
        Some("")
    );
    browser.screenshot("01-sign-in-refused").await;

    // Signing in with the tenant's key.
    browser
        .eval("document.querySelector('#api-key').value = ''", json!([]))
        .await;
    browser
        .type_into("#api-key", stack.api.key.as_deref().unwrap())
        .await;
    browser.click("form.signin button[type=submit]").await;
    browser.wait_text("main h1", long, |t| t == "Numbers").await;

    // A phone whose WhatsApp account was never linked: added in the console,
    // then paired by scanning the QR code on the page.
    let phone = mobile(960, 1);
    stack.sim.create_number(&phone, false).await;
    browser.type_into("#number-phone", &phone).await;
    browser.select("#number-kind", "sim").await;
    browser.click("form.card button[type=submit]").await;
    let row = format!("tr[data-number=\"{phone}\"]");
    browser.wait(&row, long).await;
    // Simulated numbers start out as linked; this account never was.
    browser.click(&format!("{row} button.danger")).await;
    browser.accept_dialog().await;
    browser
        .wait_text(&format!("{row} td:nth-child(4)"), long, |t| {
            t.contains("needs pairing")
        })
        .await;
    browser
        .click(&format!("{row} button[aria-label^=\"Pair\"]"))
        .await;
    browser.wait("#pairing img.qr", long).await;
    browser.screenshot("02-pairing-qr").await;
    let src = browser
        .attribute("#pairing img.qr", "src")
        .await
        .expect("QR image");
    let png = STANDARD
        .decode(
            src.strip_prefix("data:image/png;base64,")
                .expect("a PNG data URL"),
        )
        .unwrap();
    let scanned = decode_qr_png(&png);
    assert_eq!(
        stack.sim.number(&phone).await["qr"],
        scanned.as_str(),
        "the page shows the code the network offers now"
    );
    stack.sim.scan(&scanned).await;
    browser
        .wait_text("#notice", long, |t| t.contains("linked and connected"))
        .await;
    browser
        .wait_text(&format!("{row} td.connection"), long, |t| {
            t.contains("connected")
        })
        .await;
    browser.screenshot("03-paired").await;

    // A template, previewed as it is written.
    browser.goto(&format!("{console}/#/templates")).await;
    browser.type_into("#template-name", "welcome").await;
    browser
        .type_into("#template-body", "Hello {{name}}, your code is {{code}}.")
        .await;
    browser.click("form.card button[type=submit]").await;
    browser
        .wait_text(".preview", long, |t| {
            t.contains("Hello name, your code is code.")
        })
        .await;

    // A campaign from a CSV file with one bad row: the import reports it,
    // the preview shows a real recipient's text, the plan is shown first.
    let csv = shots.join("audience.csv");
    let mut rows = String::from("phone,name,code\n");
    for i in 0..RECIPIENTS {
        rows.push_str(&format!("{},Ana {i},C{i:03}\n", mobile(961, i)));
    }
    rows.push_str("not-a-phone,Nobody,X\n");
    std::fs::write(&csv, rows).unwrap();
    browser.goto(&format!("{console}/#/campaigns/new")).await;
    browser.type_into("#campaign-name", "Console launch").await;
    let template = browser
        .eval(
            "return [...document.querySelectorAll('#campaign-template option')]\
             .find(o => o.textContent === 'welcome').value",
            json!([]),
        )
        .await;
    browser
        .select("#campaign-template", template.as_str().unwrap())
        .await;
    browser
        .type_into("#campaign-csv", &csv.display().to_string())
        .await;
    browser.click("#window-all-day").await;
    browser.click("#campaign-preview-button").await;
    let plan = browser
        .wait_text("#campaign-plan", long, |t| !t.is_empty())
        .await;
    assert!(
        plan.contains(&format!("{RECIPIENTS} (0 suppressed")),
        "{plan}"
    );
    let preview = browser.text("#campaign-preview").await;
    assert!(
        preview.starts_with("Hello Ana ") && preview.contains("your code is C0"),
        "{preview}"
    );
    let import = browser.text("#import-report").await;
    assert!(
        import.contains(&format!("{RECIPIENTS} contacts accepted"))
            && import.contains("1 rows rejected")
            && import.contains("line 14"),
        "{import}"
    );
    browser
        .eval(
            "document.querySelector('#campaign-plan').scrollIntoView()",
            json!([]),
        )
        .await;
    browser.screenshot("04-preview-and-plan").await;
    browser.click("#campaign-start-button").await;

    // Its page follows it to the end.
    let id = wait_for("the campaign's page", long, || async {
        let hash = browser.eval("return location.hash", json!([])).await;
        hash.as_str()
            .and_then(|h| h.strip_prefix("#/campaigns/"))
            .filter(|id| id.len() == 36)
            .map(str::to_string)
    })
    .await;
    browser
        .wait_text(".progress-label", long, |t| t.contains("settled"))
        .await;
    browser.screenshot("05-campaign-running").await;
    let done = browser
        .wait_text("main .badge", Duration::from_secs(120), |t| {
            t == "completed"
        })
        .await;
    assert_eq!(done, "completed");
    let progress = browser
        .wait_text(".progress-label", long, |t| t.contains("(100%)"))
        .await;
    assert!(
        progress.starts_with(&format!("{RECIPIENTS} of {RECIPIENTS} settled")),
        "{progress}"
    );
    browser.screenshot("06-campaign-completed").await;
    let counts = browser.text("#campaign-counts").await;
    assert!(
        counts.contains("sending\n0") && !counts.contains("[object"),
        "counts per state: {counts}"
    );

    // What the page said is what happened.
    let campaign = stack.api.campaign(&id).await;
    assert_eq!(campaign["status"], "completed");
    let log = stack.sim.log().await;
    assert_eq!(log.len(), RECIPIENTS as usize);
    assert!(log.iter().all(|m| m.from == phone));

    // The message log finds a recipient's message.
    browser.goto(&format!("{console}/#/messages")).await;
    browser
        .type_into("#search-recipient", &mobile(961, 3))
        .await;
    browser.click("form[role=search] button[type=submit]").await;
    // The page lists every message before the search: wait for the result.
    let found = browser
        .wait_text("main table", long, |t| {
            t.contains("Ana 3") && !t.contains("Ana 4")
        })
        .await;
    assert_eq!(
        found.lines().count(),
        2,
        "a header and one message: {found}"
    );
    assert!(found.contains(&mobile(961, 3)), "{found}");
    browser.screenshot("07-message-log").await;
    eprintln!("screenshots in {}", shots.display());

    browser.quit().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_built_in_and_locked_down() {
    let stack = Stack::start(StackOptions {
        workers: 0,
        ..StackOptions::default()
    })
    .await;
    let http = herald_tests::http();
    let page = http
        .get(format!("{}/console/", stack.api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(policy.contains("default-src 'self'") && policy.contains("frame-ancestors 'none'"));
    let html = page.text().await.unwrap();
    for asset in ["/console/app.js", "/console/style.css"] {
        assert!(html.contains(asset));
        let got = http
            .get(format!("{}{asset}", stack.api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 200, "{asset}");
    }
    let bare = http
        .get(format!("{}/console", stack.api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.url().path(), "/console/", "redirected to the page");
    stack.stop().await;
}
