//! Test support (feature `testing`): a MongoDB database for each test.
//!
//! With `MONGODB_URI` set, tests use that server. Otherwise the first test that needs one
//! installs the `nx-27017` MongoDB wire-protocol server (PyPI) into `target/nx-27017/venv`
//! and starts it on a free loopback port, once per test process; it stops when the test
//! process ends. If no server can be had, the test fails and says how to get one: MongoDB
//! tests are never skipped.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The PyPI release of the test server the suite was written against.
const NX_27017_VERSION: &str = "0.8.1";

static SERVER_URI: OnceLock<Result<String, String>> = OnceLock::new();
/// Keeps the wrapper process (and the pipe whose end stops the server) alive.
static SERVER_PROCESS: Mutex<Option<Child>> = Mutex::new(None);

/// A fresh, uniquely named database on the test MongoDB server.
pub async fn mongo_database(prefix: &str) -> mongodb::Database {
    let uri = mongo_uri();
    let name = unique_database_name(prefix);
    crate::store::connect_mongo(&uri, &name, Duration::from_secs(10))
        .await
        .unwrap_or_else(|error| {
            panic!("cannot connect to the MongoDB test server {uri}: {error:#}")
        })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[tokio::test]
    async fn majority_writes_carry_a_wtimeout() {
        let database = super::mongo_database("wtimeout").await;
        let concern = database.write_concern().cloned().unwrap_or_default();
        assert_eq!(concern.w, Some(mongodb::options::Acknowledgment::Majority));
        assert_eq!(concern.w_timeout, Some(Duration::from_secs(10)));
    }
}

/// A unique database name (MongoDB allows 63 bytes).
pub fn unique_database_name(prefix: &str) -> String {
    let mut name = format!("t_{prefix}_{}", uuid::Uuid::new_v4().simple());
    name.truncate(63);
    name
}

/// The URI of the test MongoDB server, starting one if needed.
pub fn mongo_uri() -> String {
    if let Ok(uri) = std::env::var("MONGODB_URI")
        && !uri.is_empty()
    {
        return uri;
    }
    SERVER_URI
        .get_or_init(start_test_server)
        .clone()
        .unwrap_or_else(|problem| {
            panic!(
                "no MongoDB server for this test: {problem}\n\
                 Either set MONGODB_URI to a MongoDB server (mongodb://host:27017), or make \
                 `python3 -m venv` and PyPI reachable so the test suite can install and start \
                 the nx-27017 test server itself."
            )
        })
}

pub(crate) fn workspace_target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target")
}

fn start_test_server() -> Result<String, String> {
    let install_dir = workspace_target_dir().join("nx-27017");
    let server_bin = install(&install_dir)?;
    let port = free_port()?;
    let run_dir = install_dir.join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir)
        .map_err(|error| format!("cannot create {run_dir:?}: {error}"))?;
    // The wrapper stops the server when its stdin closes, i.e. when this test process ends,
    // however it ends.
    let wrapper = "import subprocess, sys\n\
                   server = subprocess.Popen(sys.argv[1:])\n\
                   sys.stdin.read()\n\
                   server.terminate()\n\
                   server.wait()\n";
    let python = install_dir.join("venv/bin/python");
    let child = Command::new(&python)
        .arg("-c")
        .arg(wrapper)
        .arg(&server_bin)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--data-dir",
            "memory",
        ])
        .arg("--log-file")
        .arg(run_dir.join("server.log"))
        .arg("--pid-file")
        .arg(run_dir.join("server.pid"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| format!("cannot start {server_bin:?}: {error}"))?;
    *SERVER_PROCESS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(child);

    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            return Err(format!(
                "nx-27017 did not listen on {address} within 60 s; see {:?}",
                run_dir.join("server.log")
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(format!("mongodb://{address}/?directConnection=true"))
}

/// Installs nx-27017 into a virtual environment once; concurrent test processes wait on a lock.
fn install(install_dir: &Path) -> Result<PathBuf, String> {
    let venv = install_package(install_dir, "nx-27017", NX_27017_VERSION)?;
    Ok(venv.join("bin/nx-27017"))
}

/// Installs `package==version` from PyPI into `<install_dir>/venv` once (a marker file records
/// it); concurrent test processes wait on a lock. The virtual environment's directory.
pub(crate) fn install_package(
    install_dir: &Path,
    package: &str,
    version: &str,
) -> Result<PathBuf, String> {
    std::fs::create_dir_all(install_dir)
        .map_err(|error| format!("cannot create {install_dir:?}: {error}"))?;
    let lock_path = install_dir.join("install.lock");
    let lock = std::fs::File::create(&lock_path)
        .map_err(|error| format!("cannot create {lock_path:?}: {error}"))?;
    lock.lock()
        .map_err(|error| format!("cannot lock {lock_path:?}: {error}"))?;

    let venv = install_dir.join("venv");
    let marker = install_dir.join(format!("installed-{version}"));
    if marker.exists() {
        return Ok(venv);
    }
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("{package}=={version}")))?;
    let mut marker_file = std::fs::File::create(&marker)
        .map_err(|error| format!("cannot write {marker:?}: {error}"))?;
    let _ = writeln!(marker_file, "{package} {version}");
    Ok(venv)
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|error| format!("cannot run {command:?}: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

pub(crate) fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind(("127.0.0.1", 0)).map_err(|error| format!("no free port: {error}"))?;
    listener
        .local_addr()
        .map(|address| address.port())
        .map_err(|error| format!("no free port: {error}"))
}

pub mod bench;
pub mod browser;
pub mod prometheus;
pub mod smtp;
pub mod spans;

/// Stripe as tests see it (the same modules `payouts dev fake-stripe` and `payouts stripe
/// trigger` use, feature `fake-stripe`).
pub use crate::stripe_dev::{self as stripe, fake as fake_stripe, ledger as stripe_ledger};
