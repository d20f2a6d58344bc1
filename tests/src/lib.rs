//! Helpers shared by the end-to-end tests: committed fixtures, assets, and the workspace binaries.

pub mod procs;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(name)
}

/// Parses a committed JSON fixture.
pub fn fixture_json(name: &str) -> anyhow::Result<serde_json::Value> {
    let path = fixture(name);
    let text = std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// `assets/<name>` when present; `None` (after printing why) when the test should skip.
pub fn asset(name: &str) -> Option<PathBuf> {
    let path = repo_root().join("assets").join(name);
    if path.exists() {
        Some(path)
    } else {
        eprintln!("skipping: {} absent (run scripts/fetch-assets.sh)", path.display());
        None
    }
}

/// The profile dir the running test executable was built into (`<target>/debug`):
/// test executables live in `<target>/<profile>/deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test exe dir");
    deps.parent().expect("profile dir").to_path_buf()
}

/// Path of workspace binary `name` (e.g. `asrl-learner`), built once per test process with
/// `cargo build -p asrl-learner -p asrl-rollout-worker -p asrl-tools --bins` into the target dir
/// and profile this test runs from, so it is never stale.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let dir = profile_dir();
    let built = BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let target = dir.parent().expect("target dir");
        let mut cmd = Command::new(cargo);
        cmd.current_dir(repo_root())
            .args(["build", "--bins", "-p", "asrl-learner", "-p", "asrl-rollout-worker", "-p", "asrl-tools"])
            .env("CARGO_TARGET_DIR", target);
        if dir.file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        match cmd.status() {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(format!("cargo build of the binaries failed ({s})")),
            Err(e) => Err(format!("cannot run cargo: {e}")),
        }
    });
    if let Err(e) = built {
        panic!("{e}");
    }
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// A Python interpreter that can import `modules` (`$PYTHON`, else `python3`), or `None`.
pub fn python_with(modules: &[&str]) -> Option<String> {
    let py = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = format!("import {}", modules.join(", "));
    match Command::new(&py).args(["-c", &probe]).output() {
        Ok(o) if o.status.success() => Some(py),
        _ => {
            eprintln!("skipping python check: `{py} -c '{probe}'` failed (set PYTHON to a venv with them)");
            None
        }
    }
}

/// The grpcurl binary: `$GRPCURL`, the repo venv's (`scripts/setup.sh` installs it), or one on
/// `PATH`; `None` when there is none.
pub fn grpcurl() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("GRPCURL") {
        return Some(p.into());
    }
    let venv = repo_root().join(".venv/bin/grpcurl");
    if venv.exists() {
        return Some(venv);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("grpcurl")).find(|p| p.exists())
}

/// A child process killed (and reaped) when dropped, so a failing test leaves nothing running.
pub struct KillOnDrop(pub std::process::Child);

impl KillOnDrop {
    /// Spawns `cmd` as the leader of a new process group; dropping it kills the whole group, so
    /// a script's children (e.g. launch.sh's learner and workers) go too.
    pub fn group(mut cmd: Command) -> std::io::Result<Self> {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        cmd.spawn().map(KillOnDrop)
    }
    pub fn id(&self) -> u32 {
        self.0.id()
    }
    /// SIGKILL now (to its process group too, when it leads one), and wait for it.
    pub fn kill(&mut self) {
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.0.id())]).stderr(std::process::Stdio::null()).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
    /// `Some(status)` once the process has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().ok().flatten()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Service names listed by a server's reflection, over (v1, v1alpha).
pub async fn reflection_services(channel: tonic::transport::Channel) -> (Vec<String>, Vec<String>) {
    use tonic_reflection::pb::{v1, v1alpha};
    let mut c1 = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let req = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut stream = c1.server_reflection_info(tokio_stream::iter([req])).await.expect("v1 reflection call").into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        stream.message().await.expect("v1 reflection reply").and_then(|m| m.message_response)
    else {
        panic!("v1 reflection did not list services")
    };
    let v1_names = list.service.into_iter().map(|s| s.name).collect();
    let mut ca = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let req = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut stream = ca.server_reflection_info(tokio_stream::iter([req])).await.expect("v1alpha reflection call").into_inner();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        stream.message().await.expect("v1alpha reflection reply").and_then(|m| m.message_response)
    else {
        panic!("v1alpha reflection did not list services")
    };
    (v1_names, list.service.into_iter().map(|s| s.name).collect())
}
