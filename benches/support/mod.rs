//! What the end-to-end benches share: the real `payouts` binary, all in one process on the
//! embedded store, started with the given settings and stopped when dropped.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

/// A running `payouts` process and the lines it announced while starting.
pub struct Payouts {
    child: Child,
    announced: Vec<String>,
}

impl Payouts {
    /// Starts the binary with `settings` (on top of loopback addresses and quiet logs) and
    /// waits until its gateway listens.
    pub fn start(settings: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_payouts"));
        command
            .env_remove("MONGODB_URI")
            .env("GATEWAY_ADDR", "127.0.0.1:0")
            .env("GRPC_ADDR", "127.0.0.1:0")
            .env("METRICS_ADDR", "off")
            .env("RUST_LOG", "error")
            .env("LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in settings {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("the payouts binary starts");
        let stderr = BufReader::new(child.stderr.take().expect("stderr is piped"));
        let mut payouts = Self {
            child,
            announced: Vec::new(),
        };
        let mut lines = stderr.lines();
        for line in lines.by_ref() {
            let Some(line) = line
                .ok()
                .and_then(|line| line.strip_prefix("payouts: ").map(str::to_owned))
            else {
                continue;
            };
            let ready = line.starts_with("gateway listening on ");
            payouts.announced.push(line);
            if ready {
                // Keep reading what it logs: a closed pipe would fail its next log line.
                std::thread::spawn(move || lines.for_each(drop));
                return payouts;
            }
        }
        panic!("payouts did not start: {:?}", payouts.announced);
    }

    /// The rest of the announced line that starts with `prefix`.
    pub fn announced(&self, prefix: &str) -> &str {
        self.announced
            .iter()
            .find_map(|line| line.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("payouts never announced {prefix:?}: {:?}", self.announced))
    }

    /// The process id (for its resident memory).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Payouts {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
