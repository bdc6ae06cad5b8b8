//! TensorBoard inside the notebook, as Colab's `%tensorboard --logdir runs` shows it: [`tensorboard`] starts
//! the `tensorboard` program of the project's `.venv` on a free local port for a runs folder — or finds the
//! one already serving it — and shows its page in an output frame. evcxr shows a cell's output only when the
//! cell ends, but a frame shown by an earlier cell keeps loading from its server: the curves of a fit in a
//! later cell grow in it while that cell trains (the run logs flush their events after every epoch).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How long a new server may take to answer (TensorBoard imports TensorFlow's stubs: seconds).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A TensorBoard server reading a runs folder; shown as its page when it ends a notebook cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorBoard {
    /// `http://localhost:<port>/`.
    pub url: String,
    pub port: u16,
    pub pid: u32,
    /// The folder it reads (absolute).
    pub logdir: PathBuf,
    /// The frame's height in pixels.
    #[serde(skip, default = "default_height")]
    pub height: u32,
}

fn default_height() -> u32 {
    640
}

/// The server for `logdir` (created if missing), started if none is running: `tensorboard(&runs_dir)?` at the
/// end of a cell shows it; fits logging into `logdir` in later cells appear in it while they train.
///
/// The program is `$FASHION_TENSORBOARD`, else `tensorboard` in a `.venv/bin` of the current folder or one
/// above it (notebooks/ → the project's .venv, which `scripts/setup` fills), else on `PATH`. The server
/// listens on 127.0.0.1 only; it ends with the process that started it (the kernel) and writes its log to
/// `logdir/.tensorboard.log`.
pub fn tensorboard(logdir: impl AsRef<Path>) -> Result<TensorBoard> {
    let logdir = logdir.as_ref();
    std::fs::create_dir_all(logdir).map_err(|e| Error::io(logdir, e))?;
    let logdir = logdir.canonicalize().map_err(|e| Error::io(logdir, e))?;
    let info = logdir.join(".tensorboard.json");
    if let Some(running) = std::fs::read_to_string(&info)
        .ok()
        .and_then(|text| serde_json::from_str::<TensorBoard>(&text).ok())
        .filter(|t| t.logdir == logdir && alive(t.pid) && answers(t.port))
    {
        return Ok(running);
    }
    let program = program()?;
    let port = free_port().map_err(|e| failed(format!("no free port on 127.0.0.1 ({e})")))?;
    let log_path = logdir.join(".tensorboard.log");
    let log = std::fs::File::create(&log_path).map_err(|e| Error::io(&log_path, e))?;
    let err_log = log.try_clone().map_err(|e| Error::io(&log_path, e))?;
    let mut command = Command::new(&program);
    command
        .arg("--logdir")
        .arg(&logdir)
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--reload_interval", "2"])
        .args(["--reload_multifile", "true"])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: only async-signal-safe calls between fork and exec: a session of its own (the terminal's
        // Ctrl-C is not for it) and SIGTERM when the process that started it ends.
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
    }
    let mut child = command.spawn().map_err(|e| failed(format!("cannot start {} ({e})", program.display())))?;
    let start = Instant::now();
    loop {
        if answers(port) {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(failed(format!(
                "{} ended ({status}) before serving; its log, {}:\n{}",
                program.display(),
                log_path.display(),
                tail(&log_path)
            )));
        }
        if start.elapsed() > START_TIMEOUT {
            let _ = child.kill();
            return Err(failed(format!(
                "{} did not answer within {} s; its log, {}:\n{}",
                program.display(),
                START_TIMEOUT.as_secs(),
                log_path.display(),
                tail(&log_path)
            )));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let board = TensorBoard {
        url: format!("http://localhost:{port}/"),
        port,
        pid: child.id(),
        logdir,
        height: default_height(),
    };
    let text = serde_json::to_string_pretty(&board).unwrap_or_default();
    crate::files::write_atomic(&info, text.as_bytes())?;
    Ok(board)
}

impl TensorBoard {
    /// The same server shown `height` pixels high.
    pub fn height(mut self, height: u32) -> Self {
        self.height = height;
        self
    }

    /// Stops the server.
    pub fn stop(&self) {
        #[cfg(unix)]
        // SAFETY: a signal to the server's pid, which this crate started.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        let _ = std::fs::remove_file(self.logdir.join(".tensorboard.json"));
    }

    /// The page in a frame, and a line saying what it is. The frame's address takes the notebook page's own
    /// host name (as TensorBoard's own notebook support does): `localhost` and `127.0.0.1` are different
    /// sites to a browser, and a frame of another site may not use the storage TensorBoard's page needs.
    pub fn to_html(&self) -> String {
        let id = format!("tensorboard-{}-{}", self.port, self.pid);
        format!(
            "<p style=\"font-family:sans-serif;font-size:13px\">TensorBoard on <a href=\"{url}\" target=\"_blank\">{url}</a> \
             (pid {pid}), reading <code>{dir}</code>: the curves of the runs logged there grow while a later cell \
             trains (TensorBoard reloads every 30 s; ⟳ at its top right reloads now).</p>\
             <iframe id=\"{id}\" width=\"100%\" height=\"{h}\" frameborder=\"0\"></iframe>\
             <script>(function() {{ const frame = document.getElementById(\"{id}\"); \
             const url = new URL(\"/\", window.location); url.port = \"{port}\"; frame.src = url; }})();</script>",
            url = self.url,
            pid = self.pid,
            dir = self.logdir.display(),
            h = self.height,
            port = self.port,
        )
    }

    /// Shows the page when it ends a notebook cell.
    pub fn evcxr_display(&self) {
        crate::display::Html(self.to_html()).evcxr_display();
    }
}

fn failed(reason: String) -> Error {
    Error::TensorBoard { reason }
}

/// The `tensorboard` program to run.
fn program() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("FASHION_TENSORBOARD") {
        return Ok(PathBuf::from(p));
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    let mut dirs: Vec<PathBuf> = cwd.ancestors().map(|d| d.join(".venv/bin")).collect();
    dirs.extend(std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default());
    dirs.into_iter().map(|d| d.join("tensorboard")).find(|p| p.is_file()).ok_or_else(|| {
        failed(
            "the `tensorboard` program is neither in a .venv/bin here or above nor on PATH. Fix: run scripts/setup \
             (it installs TensorBoard into the project's .venv), or `pip install tensorboard`, or set \
             FASHION_TENSORBOARD to the program"
                .into(),
        )
    })
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

fn alive(pid: u32) -> bool {
    // A TensorBoard of ours: the process exists and runs `tensorboard`.
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("tensorboard"))
        .unwrap_or(false)
}

/// Whether a TensorBoard answers on `port`.
fn answers(port: u16) -> bool {
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(2))).build().into();
    agent.get(&format!("http://127.0.0.1:{port}/data/environment")).call().is_ok()
}

/// The last lines of a log.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
