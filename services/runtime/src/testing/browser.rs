//! A real browser for the dashboard's end-to-end tests: Debian's Chromium, driven by
//! Playwright for Python (pinned, installed into `target/playwright/venv` once, like the
//! MongoDB test server). Chromium is installed with `apt-get` when it is missing and the
//! tests run as root (a CI machine); otherwise the test fails and says how to get it. Never
//! skipped.

#![allow(clippy::panic)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The Playwright for Python release the tests were written against.
const PLAYWRIGHT_VERSION: &str = "1.49.1";
/// Where Debian's `chromium` package puts the browser.
const CHROMIUM: &str = "/usr/bin/chromium";

static CHROMIUM_PATH: OnceLock<Result<PathBuf, String>> = OnceLock::new();
static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The Chromium executable, installed if it can be.
pub fn chromium() -> PathBuf {
    CHROMIUM_PATH
        .get_or_init(|| {
            let path = PathBuf::from(CHROMIUM);
            if path.exists() {
                return Ok(path);
            }
            let root = Command::new("id")
                .arg("-u")
                .output()
                .is_ok_and(|output| output.stdout.starts_with(b"0"));
            if root {
                let installed = Command::new("apt-get")
                    .args(["install", "-y", "--no-install-recommends", "chromium"])
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .output();
                if path.exists() {
                    return Ok(path);
                }
                return Err(format!(
                    "apt-get install chromium did not install {CHROMIUM}: {installed:?}"
                ));
            }
            Err(format!("no browser at {CHROMIUM}"))
        })
        .clone()
        .unwrap_or_else(|error| {
            panic!(
                "the dashboard tests need Chromium: {error}. Install Debian's package \
                 (sudo apt-get install chromium) and run the tests again."
            )
        })
}

/// A Python with Playwright installed.
pub fn playwright_python() -> PathBuf {
    PYTHON
        .get_or_init(|| {
            let dir = super::workspace_target_dir().join("playwright");
            super::install_package(&dir, "playwright", PLAYWRIGHT_VERSION)
                .map(|venv| venv.join("bin/python"))
        })
        .clone()
        .unwrap_or_else(|error| {
            panic!(
                "the dashboard tests need Playwright for Python {PLAYWRIGHT_VERSION} from PyPI \
                 (python3 with venv, and PyPI reachable): {error}"
            )
        })
}
