//! Fetching the four official files, with a progress bar and verification.
//!
//! Each file is written to `NAME.gz.part-<pid>`, then decompressed and checked against the SHA-256 of the
//! *decompressed* content (Debian recompressed the files, so `.gz` bytes differ between sources while the
//! content is identical), and only then renamed to `NAME.gz`. A cut-short or damaged download never leaves
//! a file that a later run would load. One process at a time downloads into a folder (a file lock the OS
//! releases when its process ends; a second one waits, then finds the files there), and part files of
//! processes that are gone — killed, interrupted with Ctrl-C — are removed by the next download. A server that stalls times out ([`Limits`]), and one that sends
//! more than a compressed file of that content can take is cut off.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::idx::open_maybe_gz;
use crate::error::{Error, Result};

/// Zalando's own mirror of the dataset (plain HTTP; every file is verified by checksum).
pub const DEFAULT_BASE_URL: &str = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com";

/// One file to fetch: its name without `.gz`, and the SHA-256 and size of its decompressed content.
#[derive(Debug, Clone, Copy)]
pub struct FileSpec {
    pub name: &'static str,
    pub sha256: &'static str,
    pub size: u64,
}

/// The four official files.
pub const FILES: [FileSpec; 4] = [
    FileSpec {
        name: "train-images-idx3-ubyte",
        sha256: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        size: 47_040_016,
    },
    FileSpec {
        name: "train-labels-idx1-ubyte",
        sha256: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        size: 60_008,
    },
    FileSpec {
        name: "t10k-images-idx3-ubyte",
        sha256: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        size: 7_840_016,
    },
    FileSpec {
        name: "t10k-labels-idx1-ubyte",
        sha256: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        size: 10_008,
    },
];

/// Downloads the official files into `dir` from `$FASHION_MNIST_URL` or [`DEFAULT_BASE_URL`].
pub fn download(dir: &Path) -> Result<()> {
    let base = std::env::var("FASHION_MNIST_URL").unwrap_or_else(|_| DEFAULT_BASE_URL.to_string());
    download_from(&base, dir, &FILES)
}

/// How long a download may wait and how much it may receive.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connecting to the server.
    pub connect: Duration,
    /// Any one wait for the response or for more bytes of the body.
    pub read: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { connect: Duration::from_secs(30), read: Duration::from_secs(60) }
    }
}

/// The most bytes a `.gz` of `size` decompressed bytes may take (gzip never grows data by more than a
/// few bytes per 32 KB block; this allows 1 % plus 64 KB).
fn max_compressed(size: u64) -> u64 {
    size + size / 100 + (64 << 10)
}

/// Downloads `files` (`BASE/NAME.gz`) into `dir`, verifying each; files already present and valid are kept.
pub fn download_from(base_url: &str, dir: &Path, files: &[FileSpec]) -> Result<()> {
    download_with(base_url, dir, files, Limits::default())
}

/// [`download_from`] with other [`Limits`].
pub fn download_with(base_url: &str, dir: &Path, files: &[FileSpec], limits: Limits) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let _lock = Lock::acquire(dir)?;
    // Only the lock's holder writes part files: any other one was left by a process that is gone.
    let me = std::process::id();
    remove_parts(dir, |pid| pid != me);
    for spec in files {
        let target = dir.join(format!("{}.gz", spec.name));
        if target.is_file() && verify_file(&target, spec).is_ok() {
            continue;
        }
        let url = format!("{}/{}.gz", base_url.trim_end_matches('/'), spec.name);
        let part = dir.join(format!("{}.gz.part-{}", spec.name, std::process::id()));
        let result = fetch(&url, &part, max_compressed(spec.size), limits).and_then(|()| verify_file(&part, spec));
        match result {
            Ok(()) => std::fs::rename(&part, &target).map_err(|e| Error::io(&target, e))?,
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Checks the decompressed content of `path` against `spec` (size, then SHA-256), reading at most one
/// byte more than `spec.size`.
pub fn verify_file(path: &Path, spec: &FileSpec) -> Result<()> {
    use std::io::Read;
    let mut content = Vec::new();
    open_maybe_gz(path)?
        .take(spec.size + 1)
        .read_to_end(&mut content)
        .map_err(|source| Error::Gzip { path: path.to_path_buf(), source })?;
    let actual = sha256_hex(&content);
    if content.len() as u64 != spec.size || actual != spec.sha256 {
        return Err(Error::Checksum { path: path.to_path_buf(), expected: spec.sha256.to_string(), actual });
    }
    Ok(())
}

/// One download into a folder at a time: an exclusive lock on `.download.lock` (`File::lock`), which
/// the OS releases when its process ends however it ends — killed, Ctrl-C — so a dead owner never
/// blocks the next download. A second process waits for the first (and then finds the files verified).
/// The file itself stays (removing it would let a waiter lock a file no one else sees).
struct Lock(#[allow(dead_code)] std::fs::File);

/// How long a download waits for another one into the same folder.
const LOCK_WAIT: Duration = Duration::from_secs(3600);

impl Lock {
    fn acquire(dir: &Path) -> Result<Lock> {
        let path = dir.join(".download.lock");
        let file = crate::files::lock_file(&path)?;
        let start = std::time::Instant::now();
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Lock(file)),
                Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < LOCK_WAIT => {
                    if !told {
                        eprintln!("waiting for another download into {}…", dir.display());
                        told = true;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Error::Download {
                        url: dir.display().to_string(),
                        reason: "another process has been downloading into this folder for an hour".into(),
                    })
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
            }
        }
    }
}

/// Removes this process's part files in `dir`: for a program's Ctrl-C handler (the `fashion` command
/// installs one), so that an interrupted download leaves nothing behind at once.
pub fn clean_up_interrupted(dir: &Path) {
    let me = std::process::id();
    remove_parts(dir, |pid| pid == me);
}

/// Removes the part files of `dir` whose process id `stale` picks.
fn remove_parts(dir: &Path, stale: impl Fn(u32) -> bool) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for path in entries.flatten().map(|e| e.path()) {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.rsplit_once(".gz.part-").and_then(|(_, pid)| pid.parse::<u32>().ok()).is_some_and(&stale) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Streams `url` into `path` (at most `max` bytes), drawing a progress bar on a terminal.
fn fetch(url: &str, path: &Path, max: u64, limits: Limits) -> Result<()> {
    let err = |reason: String| Error::Download { url: url.to_string(), reason };
    #[cfg(not(feature = "https"))]
    if url.starts_with("https://") {
        return Err(err("HTTPS needs the crate's `https` feature (on by default for the `fashion` command); use an http:// mirror or build with --features https".into()));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(limits.connect))
        .timeout_recv_response(Some(limits.read))
        .timeout_per_read(Some(limits.read))
        .build()
        .into();
    let mut resp = agent.get(url).call().map_err(|e| err(e.to_string()))?;
    let total: Option<u64> =
        resp.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    if let Some(total) = total.filter(|&t| t > max) {
        return Err(err(format!("the server announces {total} bytes, more than this file can be ({max})")));
    }
    let mut reader = resp.body_mut().as_reader();
    let mut file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let name = url.rsplit('/').next().unwrap_or(url);
    let tty = std::io::stderr().is_terminal();
    let mut buf = vec![0u8; 64 * 1024];
    let mut done: u64 = 0;
    loop {
        let n = reader.read(&mut buf).map_err(|e| err(format!("connection broken after {done} bytes: {e}")))?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n]).map_err(|e| Error::io(path, e))?;
        done += n as u64;
        if done > max {
            return Err(err(format!("more than {max} bytes received, more than this file can be")));
        }
        if tty {
            eprint!("\r{}", progress_line(name, done, total));
        }
    }
    file.flush().map_err(|e| Error::io(path, e))?;
    eprintln!("{}{}", if tty { "\r" } else { "" }, progress_line(name, done, total));
    if let Some(total) = total {
        if done != total {
            return Err(err(format!("cut short: {done} of {total} bytes received")));
        }
    }
    Ok(())
}

fn progress_line(name: &str, done: u64, total: Option<u64>) -> String {
    match total {
        Some(t) if t > 0 => {
            let width = 30;
            let filled = ((done.min(t) * width) / t) as usize;
            format!(
                "{name:<28} [{}{}] {:>6.1}/{:.1} MB",
                "=".repeat(filled),
                " ".repeat(width as usize - filled),
                done as f64 / 1e6,
                t as f64 / 1e6
            )
        }
        _ => format!("{name:<28} {:>6.1} MB", done as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::idx::{encode, LABELS_MAGIC};
    use std::io::BufRead;
    use std::net::TcpListener;

    /// A one-thread HTTP/1.1 server on 127.0.0.1 serving `routes`: (path, body, bytes actually sent).
    /// `/endless.gz` sends zeros without a length until the client hangs up; `/stall.gz` answers
    /// nothing for 5 seconds.
    fn serve(routes: Vec<(String, Vec<u8>, usize)>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(64) {
                let Ok(mut stream) = stream else { continue };
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
                if path == "/endless.gz" {
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
                    let chunk = vec![0u8; 1 << 16];
                    for _ in 0..(1 << 14) {
                        if stream.write_all(&chunk).is_err() {
                            break;
                        }
                    }
                    continue;
                }
                if path == "/stall.gz" {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    continue;
                }
                match routes.iter().find(|(p, _, _)| *p == path) {
                    Some((_, body, sent)) => {
                        let head =
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                        let _ = stream.write_all(head.as_bytes());
                        let _ = stream.write_all(&body[..*sent]);
                    }
                    None => {
                        let _ = stream
                            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    }
                }
            }
        });
        format!("http://{addr}")
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }

    #[test]
    fn downloads_verifies_and_rejects_bad_files_without_leaving_them() {
        let good = encode(LABELS_MAGIC, &[3], &[1, 2, 3]);
        let other = encode(LABELS_MAGIC, &[3], &[3, 2, 1]);
        let good_gz = gz(&good);
        let spec = |name: &'static str| FileSpec { name, sha256: leak(sha256_hex(&good)), size: good.len() as u64 };
        let base = serve(vec![
            ("/good.gz".into(), good_gz.clone(), good_gz.len()),
            ("/wrong.gz".into(), gz(&other), gz(&other).len()),
            ("/short.gz".into(), good_gz.clone(), good_gz.len() / 2),
        ]);
        let dir = tempfile::tempdir().unwrap();

        download_from(&base, dir.path(), &[spec("good")]).unwrap();
        assert_eq!(std::fs::read(dir.path().join("good.gz")).unwrap(), good_gz);

        let e = download_from(&base, dir.path(), &[spec("wrong")]).unwrap_err();
        assert!(matches!(e, Error::Checksum { .. }), "{e}");
        assert!(e.to_string().contains("wrong.gz"));

        let e = download_from(&base, dir.path(), &[spec("short")]).unwrap_err();
        assert!(matches!(e, Error::Download { .. }), "{e}");

        let e = download_from(&base, dir.path(), &[spec("missing")]).unwrap_err();
        assert!(matches!(e, Error::Download { .. }), "{e}");

        // Only the verified file is left; no `.part`, no damaged file under its final name.
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".download.lock")
            .collect();
        left.sort();
        assert_eq!(left, vec!["good.gz"]);

        // A second run keeps the valid file without fetching it again (the server route is not needed).
        download_from("http://127.0.0.1:9", dir.path(), &[spec("good")]).unwrap();

        // A body that never ends is cut off at what the file can be; a server that stalls times out.
        let quick = Limits { connect: Duration::from_secs(2), read: Duration::from_millis(500) };
        let e = download_with(&base, dir.path(), &[spec("endless")], quick).unwrap_err();
        assert!(e.to_string().contains("more than this file can be"), "{e}");
        let start = std::time::Instant::now();
        let e = download_with(&base, dir.path(), &[spec("stall")], quick).unwrap_err();
        assert!(matches!(e, Error::Download { .. }) && start.elapsed() < Duration::from_secs(4), "{e}");
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".download.lock")
            .collect();
        left.sort();
        assert_eq!(left, vec!["good.gz"], "no part left behind");

        // A part file of a process that is gone is removed by the next download; a lock file it left
        // is not held by anyone, so it does not block.
        std::fs::write(dir.path().join("good.gz.part-4000000000"), b"half").unwrap();
        std::fs::write(dir.path().join(".download.lock"), b"4000000000").unwrap();
        download_from(&base, dir.path(), &[spec("good")]).unwrap();
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left.iter().filter(|n| *n != ".download.lock").collect::<Vec<_>>(), vec!["good.gz"]);
    }

    /// A second download into the same folder waits for the first, then finds the file verified.
    #[test]
    fn a_second_download_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let held = Lock::acquire(dir.path()).unwrap();
        let d = dir.path().to_path_buf();
        let waiter = std::thread::spawn(move || {
            let start = std::time::Instant::now();
            drop(Lock::acquire(&d).unwrap());
            start.elapsed()
        });
        std::thread::sleep(Duration::from_millis(600));
        drop(held);
        assert!(waiter.join().unwrap() >= Duration::from_millis(500), "it waited");
    }

    #[test]
    fn published_checksums_match_the_real_files_when_installed() {
        let dir = Path::new("/usr/share/datasets/fashion-mnist");
        if !dir.is_dir() {
            eprintln!("skipped: dataset-fashion-mnist not installed");
            return;
        }
        for spec in &FILES {
            verify_file(&dir.join(format!("{}.gz", spec.name)), spec).unwrap();
        }
    }
}
