//! One headless Chromium for the whole test run, driven over WebDriver (fantoccini and Debian's
//! `chromium-driver`). Tests take turns with it: each holds a [`Tab`] while it drives the page,
//! and a test that fails leaves a screenshot of what the browser showed.
//!
//! ChromeDriver and Chromium are found on `PATH` (or in `CHROMEDRIVER` / `CHROMIUM`); install
//! them with `apt-get install chromium chromium-driver`. They are stopped when this process
//! exits, however it exits, by a watchdog like the test Postgres's.
//!
//! A machine without them (a newcomer's, before that command) still runs every other test: the
//! browser tests return at once, and the suite says so once when the first of them finds no
//! browser, and once more after its summary, with how many did not run and the command that
//! installs what they need. In CI (`CI` set, as `.ci/run` sets it) or with
//! `QUICKDONATE_BROWSER_TESTS=1`, a missing browser fails them instead.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// How long a step may wait for the page: generous, for a busy 2-core machine.
const PATIENCE: Duration = Duration::from_secs(30);

struct Browser {
    client: Client,
    /// Whose turn it is.
    turn: tokio::sync::Mutex<()>,
    /// Runs the WebDriver session's connection for every test's runtime.
    runtime: tokio::runtime::Runtime,
    _watchdog: Mutex<ChildStdin>,
    /// The watchdog shell; it outlives this process only long enough to stop the browser.
    _watchdog_process: Child,
}

fn browser() -> &'static Browser {
    static BROWSER: OnceLock<Browser> = OnceLock::new();
    BROWSER.get_or_init(|| {
        // Starting blocks, and the session must live on a runtime that outlives every test.
        std::thread::spawn(start)
            .join()
            .expect("headless Chromium started")
    })
}

/// Where screenshots go: `target/screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("screenshots");
    std::fs::create_dir_all(&dir).expect("the screenshot directory can be made");
    dir
}

/// What installs the browser tests' browser, on Debian.
const INSTALL: &str = "apt-get install chromium chromium-driver";

const DRIVER: (&str, &[&str]) = ("CHROMEDRIVER", &["chromedriver"]);
const CHROMIUM: (&str, &[&str]) = (
    "CHROMIUM",
    &["chromium", "chromium-browser", "google-chrome"],
);

fn search_program(variable: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(variable) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([
            PathBuf::from("/usr/bin"),
            PathBuf::from("/usr/lib/chromium"),
        ])
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

fn find_program((variable, names): (&str, &[&str])) -> PathBuf {
    search_program(variable, names).unwrap_or_else(|| {
        panic!(
            "the browser tests need {} (Debian: {INSTALL}), or {variable} set to it",
            names[0]
        )
    })
}

/// Whether a missing browser fails the browser tests: in CI (`CI` set to anything but empty
/// or `false`), or when asked with `QUICKDONATE_BROWSER_TESTS=1`.
fn browser_required() -> bool {
    let set = |name: &str| {
        std::env::var(name).is_ok_and(|value| !value.is_empty() && value != "0" && value != "false")
    };
    set("CI") || set("QUICKDONATE_BROWSER_TESTS")
}

/// What is missing of the browser the browser tests drive, if anything.
fn missing_browser() -> Option<&'static str> {
    if search_program(DRIVER.0, DRIVER.1).is_none() {
        Some("chromedriver")
    } else if search_program(CHROMIUM.0, CHROMIUM.1).is_none() {
        Some("chromium")
    } else {
        None
    }
}

/// Browser tests that returned without running, for the notice after the summary.
static SKIPPED: AtomicUsize = AtomicUsize::new(0);

/// How many browser tests there are: each opens the browser once (`= webdriver::open(...)`),
/// in a file of its own module other than this one.
fn browser_tests() -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| !path.ends_with("webdriver.rs"))
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|text| text.matches("= webdriver::open(").count())
        .sum()
}

/// Counts a browser test that cannot run; the first says so at once, and the process says how
/// many did not run once the suite is over. Written straight to stderr, which the test harness
/// does not capture, so the notice shows with passing tests too.
fn skip(missing: &str) {
    static NOTICE: Once = Once::new();
    SKIPPED.fetch_add(1, Ordering::SeqCst);
    NOTICE.call_once(|| {
        let total = browser_tests();
        let _ = writeln!(
            std::io::stderr(),
            "\nNOTE: this machine has no {missing}, so the {total} browser tests will not run; \
             everything else does. To run them: {INSTALL}\n"
        );
        extern "C" fn after_the_suite() {
            let skipped = SKIPPED.load(Ordering::SeqCst);
            let _ = writeln!(
                std::io::stderr(),
                "NOTE: {skipped} browser tests did not run (no chromedriver or chromium); to \
                 run them: {INSTALL}"
            );
        }
        // SAFETY: `atexit` takes a plain function with no arguments, which this is; it runs once
        // as the process exits, after the test harness has printed its summary.
        unsafe {
            libc::atexit(after_the_suite);
        }
    });
}

fn start() -> Browser {
    let driver = find_program(DRIVER);
    let chromium = find_program(CHROMIUM);
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let profile = std::env::temp_dir().join(format!(
        "quickdonate-chromium-{}-{port}",
        std::process::id()
    ));
    let log = screenshot_dir().join("chromedriver.log");

    // The shell leads a process group of its own, which ChromeDriver and every Chromium process
    // join. When this process exits, the kernel closes the pipe, `read` returns, and the shell
    // stops the whole group (itself excepted) and removes the browser's profile.
    let script = r#"
        "$0" --port="$1" --log-level=WARNING >"$3" 2>&1 &
        read _ignored
        trap '' TERM
        kill -TERM 0
        sleep 1
        rm -rf "$2"
    "#;
    let mut watchdog = Command::new("/bin/sh");
    std::os::unix::process::CommandExt::process_group(&mut watchdog, 0);
    let mut child = watchdog
        .arg("-c")
        .arg(script)
        .arg(&driver)
        .arg(port.to_string())
        .arg(&profile)
        .arg(&log)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ChromeDriver's watchdog starts");
    let stdin = child.stdin.take().expect("the watchdog's stdin");

    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > PATIENCE {
            let mut said = String::new();
            let _ = std::fs::File::open(&log).and_then(|mut f| f.read_to_string(&mut said));
            panic!("ChromeDriver did not start within {PATIENCE:?}: {said}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // Chromium as this machine runs it: headless, as root without the sandbox, and with nothing
    // that would reach for the network by itself.
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-extensions",
                "--disable-features=Translate,MediaRouter,OptimizationHints",
                "--window-size=1024,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    });
    let capabilities = match capabilities {
        serde_json::Value::Object(map) => map,
        _ => unreachable!(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("the browser's runtime");
    let client = runtime
        .block_on(async {
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities)
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
        })
        .expect("ChromeDriver starts a headless Chromium");
    Browser {
        client,
        turn: tokio::sync::Mutex::new(()),
        runtime,
        _watchdog: Mutex::new(stdin),
        _watchdog_process: child,
    }
}

/// The browser, while one test drives it. Dropped by a failing test, it saves a screenshot of
/// the page as the test left it: `target/screenshots/<name>-failure.png`.
pub struct Tab {
    pub client: Client,
    name: &'static str,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

/// Waits for the browser, then opens `url` in it at the usual window size. `name` names the
/// test's screenshots. `None` on a machine with no browser, unless one is required (see
/// the module): the test then returns without running, counted in the notice.
pub async fn open(name: &'static str, url: &str) -> Option<Tab> {
    if let Some(missing) = missing_browser()
        && !browser_required()
    {
        skip(missing);
        return None;
    }
    let browser = browser();
    let turn = browser.turn.lock().await;
    let tab = Tab {
        client: browser.client.clone(),
        name,
        _turn: turn,
    };
    tab.client
        .set_window_size(1024, 900)
        .await
        .expect("the window is resized");
    tab.client.goto(url).await.expect("the page loads");
    Some(tab)
}

impl Drop for Tab {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let client = self.client.clone();
        let path = screenshot_dir().join(format!("{}-failure.png", self.name));
        // A screenshot is an async call, and this test's runtime is unwinding: make it from the
        // browser's own runtime, on a thread of its own.
        let taken = std::thread::spawn(move || {
            browser()
                .runtime
                .block_on(async { client.screenshot().await })
                .map_err(|error| error.to_string())
        })
        .join();
        match taken {
            Ok(Ok(png)) => {
                let _ = std::fs::write(&path, png);
                eprintln!("the page as the test left it: {}", path.display());
            }
            _ => eprintln!("no screenshot could be taken of the failed test's page"),
        }
    }
}

impl Tab {
    pub async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("{css} is on the page: {error}"))
    }

    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|error| panic!("{css} can be clicked: {error}"));
    }

    /// Clicks the `<label>` whose text is `text`, as a donor picks an amount.
    pub async fn click_label(&self, text: &str) {
        let labels = self
            .client
            .find_all(Locator::Css("label"))
            .await
            .expect("labels");
        for label in labels {
            if label.text().await.expect("a label's text") == text {
                return label.click().await.expect("the label can be clicked");
            }
        }
        panic!("no label reads {text:?}");
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("the field clears");
        field.send_keys(text).await.expect("the field takes text");
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css)
            .await
            .text()
            .await
            .expect("an element's text")
    }

    pub async fn is_displayed(&self, css: &str) -> bool {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.is_displayed().await.expect("whether it shows"),
            Err(_) => false,
        }
    }

    /// Waits until `css` is shown and its text contains `expected`; returns the whole text.
    pub async fn wait_for_text(&self, css: &str, expected: &str) -> String {
        let started = Instant::now();
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await
                && element.is_displayed().await.unwrap_or(false)
            {
                let text = element.text().await.unwrap_or_default();
                if text.contains(expected) {
                    return text;
                }
                if started.elapsed() > PATIENCE {
                    panic!("{css} says {text:?}, not {expected:?}");
                }
            } else if started.elapsed() > PATIENCE {
                panic!("{css} never showed {expected:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The `id` of the element that has the focus.
    pub async fn focused(&self) -> String {
        let element = self
            .client
            .active_element()
            .await
            .expect("an active element");
        element.attr("id").await.ok().flatten().unwrap_or_default()
    }

    /// Presses `key` on whatever has the focus, as a keyboard does.
    pub async fn press(&self, key: Key) {
        self.keys(&[char::from(key)]).await;
    }

    /// Types `text` into whatever has the focus, key by key.
    pub async fn type_text(&self, text: &str) {
        self.keys(&text.chars().collect::<Vec<_>>()).await;
    }

    async fn keys(&self, keys: &[char]) {
        let mut actions = KeyActions::new("keyboard".to_owned());
        for &value in keys {
            actions = actions
                .then(KeyAction::Down { value })
                .then(KeyAction::Up { value });
        }
        self.client
            .perform_actions(actions)
            .await
            .expect("the keys are pressed");
    }

    /// Saves what the browser shows as `target/screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("the screenshot is saved");
        path
    }

    /// The browser's virtual authenticator (WebDriver's WebAuthn extension), added on first use
    /// and kept for the whole run (Chromium allows one of its kind): a platform authenticator
    /// with resident keys, which verifies its user and consents every time, as a phone or a
    /// laptop's screen lock does once its owner has unlocked it. Every test app's console is
    /// on `localhost`, so its passkeys pile up here; a sign-in names its account, whose
    /// passkeys alone the server allows. Its id.
    pub async fn authenticator(&self) -> String {
        static ID: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
        ID.get_or_init(|| async {
            let added = self
                .client
                .issue_cmd(WebAuthn::Add)
                .await
                .expect("ChromeDriver adds a virtual authenticator");
            added.as_str().expect("an authenticator's id").to_owned()
        })
        .await
        .clone()
    }

    /// The passkeys the virtual authenticator `id` holds.
    pub async fn credentials(&self, id: &str) -> Vec<serde_json::Value> {
        let held = self
            .client
            .issue_cmd(WebAuthn::Credentials(id.to_owned()))
            .await
            .expect("ChromeDriver lists the authenticator's credentials");
        held.as_array().cloned().unwrap_or_default()
    }

    pub async fn script(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|error| panic!("the script runs: {error}"))
    }
}

/// The commands of WebDriver's WebAuthn extension that the console's tests use
/// (https://www.w3.org/TR/webauthn-2/#sctn-automation).
#[derive(Debug)]
enum WebAuthn {
    Add,
    Credentials(String),
}

impl fantoccini::wd::WebDriverCompatibleCommand for WebAuthn {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        let session = session_id.unwrap_or_default();
        let path = match self {
            WebAuthn::Add => format!("session/{session}/webauthn/authenticator"),
            WebAuthn::Credentials(id) => {
                format!("session/{session}/webauthn/authenticator/{id}/credentials")
            }
        };
        base_url.join(&path)
    }

    fn method_and_body(&self, _url: &url::Url) -> (axum::http::Method, Option<String>) {
        match self {
            WebAuthn::Add => (
                axum::http::Method::POST,
                Some(
                    json!({
                        "protocol": "ctap2",
                        "transport": "internal",
                        "hasResidentKey": true,
                        "hasUserVerification": true,
                        "isUserConsenting": true,
                        "isUserVerified": true,
                    })
                    .to_string(),
                ),
            ),
            WebAuthn::Credentials(_) => (axum::http::Method::GET, None),
        }
    }
}
