//! A real SMTP server for tests: `aiosmtpd` (PyPI), installed into `target/aiosmtpd` by the
//! test suite itself, started on a free port, writing every message it receives to a
//! directory the test reads.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, install_package, workspace_target_dir};

const AIOSMTPD_VERSION: &str = "1.4.6";

/// One message as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedEmail {
    /// The envelope recipients.
    pub to: Vec<String>,
    pub subject: String,
    /// The whole message as sent.
    pub raw: String,
    /// The body, decoded from quoted-printable when it was sent so.
    pub body: String,
}

/// Decodes a quoted-printable body: soft line breaks joined, `=XX` turned into its byte.
fn quoted_printable(text: &str) -> String {
    let joined = text.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A running SMTP server; stopped when dropped.
pub struct SmtpServer {
    port: u16,
    dir: PathBuf,
    child: Child,
}

const SERVER: &str = r#"
import os, sys
from aiosmtpd.controller import Controller

out, port = sys.argv[1], int(sys.argv[2])

class Keep:
    async def handle_DATA(self, server, session, envelope):
        n = len([f for f in os.listdir(out) if f.endswith(".eml")])
        tmp = os.path.join(out, "%05d.tmp" % n)
        with open(tmp, "wb") as f:
            f.write(("X-Envelope-To: " + ",".join(envelope.rcpt_tos) + "\r\n").encode())
            f.write(envelope.original_content)
        os.rename(tmp, os.path.join(out, "%05d.eml" % n))
        return "250 OK"

controller = Controller(Keep(), hostname="127.0.0.1", port=port)
controller.start()
print("ready", flush=True)
sys.stdin.read()
controller.stop()
"#;

impl SmtpServer {
    /// Installs (once) and starts a server; panics with what is missing if it cannot.
    pub fn start() -> SmtpServer {
        Self::try_start().unwrap_or_else(|problem| {
            panic!(
                "no SMTP server for this test: {problem}\n\
                 The test suite installs aiosmtpd {AIOSMTPD_VERSION} from PyPI itself; it needs \
                 `python3 -m venv` and PyPI reachable."
            )
        })
    }

    fn try_start() -> Result<SmtpServer, String> {
        let install_dir = workspace_target_dir().join("aiosmtpd");
        let venv = install_package(&install_dir, "aiosmtpd", AIOSMTPD_VERSION)?;
        let port = free_port()?;
        let dir = install_dir.join(format!(
            "mail-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).map_err(|error| format!("cannot create {dir:?}: {error}"))?;
        let child = Command::new(venv.join("bin/python"))
            .arg("-c")
            .arg(SERVER)
            .arg(&dir)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| format!("cannot start aiosmtpd: {error}"))?;
        let server = SmtpServer { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!(
                    "aiosmtpd did not listen on port {port} within 30 s"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// `SMTP_URL` for this server (plain SMTP on loopback, as a local relay).
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far, oldest first.
    pub fn received(&self) -> Vec<ReceivedEmail> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.path())
                    .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .filter_map(|path| std::fs::read_to_string(path).ok())
            .map(|raw| {
                let header = |name: &str| {
                    raw.lines()
                        .find_map(|line| line.strip_prefix(name))
                        .map(|value| value.trim().to_owned())
                        .unwrap_or_default()
                };
                let body = raw
                    .split_once("\r\n\r\n")
                    .or_else(|| raw.split_once("\n\n"))
                    .map_or("", |(_, body)| body);
                let body = if header("Content-Transfer-Encoding:")
                    .eq_ignore_ascii_case("quoted-printable")
                {
                    quoted_printable(body)
                } else {
                    body.to_owned()
                };
                ReceivedEmail {
                    body,
                    to: header("X-Envelope-To:")
                        .split(',')
                        .map(str::to_owned)
                        .collect(),
                    subject: header("Subject:"),
                    raw: raw.clone(),
                }
            })
            .collect()
    }

    /// Waits until at least `count` messages arrived (at most `timeout`); what arrived.
    pub fn wait_for(&self, count: usize, timeout: Duration) -> Vec<ReceivedEmail> {
        let deadline = Instant::now() + timeout;
        loop {
            let received = self.received();
            if received.len() >= count || Instant::now() > deadline {
                return received;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
