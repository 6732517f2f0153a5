//! A headless Chromium driven through ChromeDriver's W3C WebDriver protocol
//! (Debian's `chromium` and `chromium-driver`; `deploy/test.sh` installs
//! them), for the console's browser tests. Plain HTTP calls: no driver
//! library.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::{ports::free_addr, wait_for};

pub struct Browser {
    http: reqwest::Client,
    session: String,
    shots: PathBuf,
    _driver: Child,
}

fn tool(env: &str, default: &str) -> PathBuf {
    let path = PathBuf::from(std::env::var(env).unwrap_or_else(|_| default.into()));
    assert!(
        path.exists(),
        "{} not found: the browser tests need Debian's chromium and chromium-driver \
         (deploy/test.sh installs them), or {env} pointing elsewhere",
        path.display()
    );
    path
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium with a laptop-sized
    /// window; screenshots go to `shots`.
    pub async fn start(shots: &Path) -> Self {
        let driver = tool("HERALD_CHROMEDRIVER", "/usr/bin/chromedriver");
        let chromium = tool("HERALD_CHROMIUM", "/usr/bin/chromium");
        std::fs::create_dir_all(shots).expect("screenshot dir");
        let addr = free_addr();
        let log = std::fs::File::create(shots.join("chromedriver.log")).expect("log");
        let child = Command::new(driver)
            .arg(format!("--port={}", addr.port()))
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let http = crate::http();
        let base = format!("http://{addr}");
        wait_for("chromedriver", Duration::from_secs(30), || {
            let http = http.clone();
            let url = format!("{base}/status");
            async move {
                let status: Value = http.get(url).send().await.ok()?.json().await.ok()?;
                (status["value"]["ready"] == true).then_some(())
            }
        })
        .await;
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&json!({ "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=1366,900",
                             "--lang=en-US"],
                },
            } } }))
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("session JSON");
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {created}"))
            .to_string();
        Self {
            http,
            session: format!("{base}/session/{session}"),
            shots: shots.to_path_buf(),
            _driver: child,
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request
            .send()
            .await
            .expect("webdriver call")
            .json()
            .await
            .expect("webdriver JSON");
        answer["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.command(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    /// The first element matching `css`, if any.
    pub async fn find(&self, css: &str) -> Option<String> {
        let found = self
            .post("/element", json!({ "using": "css selector", "value": css }))
            .await;
        // An element reference is an object with one (standard-named) key.
        found
            .as_object()
            .filter(|o| o.len() == 1 && !o.contains_key("error"))
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    /// Waits up to `timeout` for an element matching `css`.
    pub async fn wait(&self, css: &str, timeout: Duration) -> String {
        wait_for(&format!("an element {css}"), timeout, || self.find(css)).await
    }

    pub async fn click(&self, css: &str) {
        let element = self.wait(css, Duration::from_secs(10)).await;
        let answer = self
            .post(&format!("/element/{element}/click"), json!({}))
            .await;
        assert!(answer.is_null(), "click {css}: {answer}");
    }

    /// Types into a field (for a file input: a path to upload).
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.wait(css, Duration::from_secs(10)).await;
        let answer = self
            .post(
                &format!("/element/{element}/value"),
                json!({ "text": text }),
            )
            .await;
        assert!(answer.is_null(), "type into {css}: {answer}");
    }

    /// Answers "OK" to the page's `confirm()` dialog.
    pub async fn accept_dialog(&self) {
        wait_for("a dialog", Duration::from_secs(10), || async {
            self.post("/alert/accept", json!({}))
                .await
                .is_null()
                .then_some(())
        })
        .await;
    }

    /// Runs `script` in the page (`arguments` are `args`); its return value.
    pub async fn eval(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
            .await
    }

    /// Chooses an option of a `<select>` by its value, as a person would.
    pub async fn select(&self, css: &str, value: &str) {
        self.wait(css, Duration::from_secs(10)).await;
        let done = self
            .eval(
                "const s = document.querySelector(arguments[0]); s.value = arguments[1]; \
                 s.dispatchEvent(new Event('change', { bubbles: true })); return s.value;",
                json!([css, value]),
            )
            .await;
        assert_eq!(done, value, "option {value} of {css}");
    }

    /// The text an element shows (empty if it is missing).
    pub async fn text(&self, css: &str) -> String {
        self.eval(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
            json!([css]),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Waits until the element's text satisfies `check`; returns the text.
    pub async fn wait_text(
        &self,
        css: &str,
        timeout: Duration,
        check: impl Fn(&str) -> bool,
    ) -> String {
        wait_for(&format!("the text of {css}"), timeout, || async {
            let text = self.text(css).await;
            check(&text).then_some(text)
        })
        .await
    }

    pub async fn attribute(&self, css: &str, name: &str) -> Option<String> {
        self.eval(
            "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;",
            json!([css, name]),
        )
        .await
        .as_str()
        .map(str::to_string)
    }

    /// Saves a PNG of the window as `<name>.png`; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let shot = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        let png = STANDARD
            .decode(shot.as_str().expect("screenshot data"))
            .expect("base64 PNG");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("save screenshot");
        path
    }

    pub async fn quit(self) {
        self.command(reqwest::Method::DELETE, "", None).await;
    }
}

/// Reads a QR code out of a picture: a PNG (as the console shows it) or a
/// grid of dark/light cells (as the CLI draws it).
pub fn decode_qr_png(png: &[u8]) -> String {
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let mut reader = decoder.read_info().expect("PNG header");
    let mut pixels = vec![0; reader.output_buffer_size().expect("PNG size")];
    let info = reader.next_frame(&mut pixels).expect("PNG data");
    let channels = info.color_type.samples();
    let (width, height) = (info.width as usize, info.height as usize);
    decode_grid(width, height, |x, y| {
        pixels[(y * width + x) * channels * (info.bit_depth as usize / 8).max(1)]
    })
}

/// Decodes a QR code from a grey-level picture (`luma(x, y)`, 0 = black).
pub fn decode_grid(width: usize, height: usize, luma: impl Fn(usize, usize) -> u8) -> String {
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(width, height, luma);
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the picture");
    let (_, content) = grids[0].decode().expect("a readable QR code");
    content
}

/// Decodes a QR code drawn in a terminal with half blocks (two modules per
/// character cell, top and bottom), whichever of the two colours is "dark".
pub fn decode_terminal_qr(text: &str) -> String {
    let rows: Vec<Vec<char>> = text
        .lines()
        .filter(|l| l.chars().any(|c| matches!(c, '█' | '▀' | '▄')))
        .map(|l| l.chars().collect())
        .collect();
    assert!(!rows.is_empty(), "no QR code in the output:\n{text}");
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    // Cells: a char is two modules; `true` = the ink of the block glyphs.
    let ink = |x: usize, y: usize| -> bool {
        let c = rows[y / 2].get(x).copied().unwrap_or(' ');
        match c {
            '█' => true,
            '▀' => y.is_multiple_of(2),
            '▄' => y % 2 == 1,
            _ => false,
        }
    };
    // The terminal's background around the code is light or dark: scale each
    // module up (the detector wants several pixels per module) and try both.
    const SCALE: usize = 6;
    const MARGIN: usize = 4;
    let (w, h) = (width + 2 * MARGIN, rows.len() * 2 + 2 * MARGIN);
    for ink_is_dark in [false, true] {
        let result = std::panic::catch_unwind(|| {
            decode_grid(w * SCALE, h * SCALE, |px, py| {
                let (x, y) = (px / SCALE, py / SCALE);
                let inside =
                    x >= MARGIN && y >= MARGIN && x < width + MARGIN && y < rows.len() * 2 + MARGIN;
                let inked = inside && ink(x - MARGIN, y - MARGIN);
                if inked == ink_is_dark { 0 } else { 255 }
            })
        });
        if let Ok(content) = result {
            return content;
        }
    }
    panic!("no readable QR code in the output:\n{text}");
}
