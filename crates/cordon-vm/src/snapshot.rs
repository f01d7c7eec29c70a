//! Template snapshots: a VM booted once per configuration to the point where
//! its agent is ready and the share is present but not mounted (9p blocks
//! migration only while mounted), saved with `migrate file:`, and restored by
//! every session with `-incoming file:` (QEMU ≥ 8.2; `mapped-ram` from 9.0),
//! which then makes the clone unique and current ([`crate::protocol::Message::Resume`]:
//! fresh host randomness credited to the guest's RNG and a reseed, the wall
//! clock, the share mounted).
//!
//! QEMU stays jailed: it writes and reads the template through a descriptor the
//! host opened in its cache (`-add-fd` and `file:/dev/fdset/N`, not `exec:`,
//! which `-sandbox spawn=deny` forbids), so its sandbox needs no view of the
//! cache. The host talks to QEMU's monitor (QMP) over a socket pair, treating
//! what it says as it treats the guest: lines bounded, anything unexpected an
//! error.

use crate::image::{self, Hasher, Image};
use serde_json::{Value, json};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The QEMU version from which snapshots are taken: `file:` migration.
pub const SNAPSHOT_QEMU: (u32, u32) = (8, 2);

/// The QEMU version from which the `mapped-ram` capability exists (RAM at fixed
/// offsets of a sparse file: restore reads only the pages the guest used).
const MAPPED_RAM_QEMU: (u32, u32) = (9, 0);

/// The fd set QEMU finds the template's descriptor in (`-add-fd ...,set=`).
pub const FDSET: u32 = 1;

/// Set to `0` or `off`, every session boots cold (the bench compares both).
pub const DISABLE_ENV: &str = "CORDON_VM_SNAPSHOTS";

/// QEMU's version, as `--version` says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuVersion {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
    /// The whole first line (`QEMU emulator version 10.0.2 (Debian ...)`).
    pub text: String,
}

impl QemuVersion {
    /// From the first line of `qemu-system-x86_64 --version`.
    pub fn parse(text: &str) -> Option<QemuVersion> {
        let line = text.lines().next()?.trim();
        let version = line.strip_prefix("QEMU emulator version ")?;
        let number = version.split_whitespace().next()?;
        let mut parts = number.split('.').map(|p| p.parse::<u32>().ok());
        Some(QemuVersion {
            major: parts.next()??,
            minor: parts.next()??,
            micro: parts.next().flatten().unwrap_or(0),
            text: line.to_string(),
        })
    }

    fn at_least(&self, (major, minor): (u32, u32)) -> bool {
        (self.major, self.minor) >= (major, minor)
    }

    /// `major.minor.micro`.
    pub fn short(&self) -> String {
        format!("{}.{}.{}", self.major, self.minor, self.micro)
    }
}

/// Whether sessions restore a template, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    Available {
        version: QemuVersion,
        mapped_ram: bool,
        /// The binary's identity (path, inode, size, times): part of the
        /// template's name.
        identity: String,
    },
    Unavailable(String),
}

impl Support {
    /// What `qemu` (resolved) can do, its version remembered in `cache` by the
    /// binary's identity, so a run does not start QEMU just to ask.
    pub fn of(qemu: &Path, cache: &Path) -> Support {
        if std::env::var(DISABLE_ENV).is_ok_and(|v| v == "0" || v == "off") {
            return Support::Unavailable(format!("turned off ({DISABLE_ENV}=off)"));
        }
        let (version, identity) = match qemu_version(qemu, cache) {
            Ok(found) => found,
            Err(e) => return Support::Unavailable(format!("QEMU's version is unknown: {e}")),
        };
        if !version.at_least(SNAPSHOT_QEMU) {
            return Support::Unavailable(format!(
                "QEMU {} cannot take them (`file:` migration needs {}.{}; Debian 12: \
                 apt-get install -t bookworm-backports qemu-system-x86)",
                version.short(),
                SNAPSHOT_QEMU.0,
                SNAPSHOT_QEMU.1
            ));
        }
        Support::Available {
            mapped_ram: version.at_least(MAPPED_RAM_QEMU),
            version,
            identity,
        }
    }
}

/// The identity of the file at `path`: where it resolves to, its inode, size
/// and times. A new QEMU (an upgrade replaces the file) has another.
fn identity(path: &Path) -> io::Result<String> {
    let real = std::fs::canonicalize(path)?;
    let m = std::fs::metadata(&real)?;
    Ok(format!(
        "{} {}:{} {} {}.{} {}.{}",
        real.display(),
        m.dev(),
        m.ino(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    ))
}

/// Where the version of the QEMU last asked is remembered: its identity, then
/// `--version`'s first line.
const VERSION_FILE: &str = "qemu-version";

/// QEMU's version and identity: remembered in `cache` while the binary's
/// identity stays, else asked (`--version`) and remembered (when the cache can
/// be written; a run works without).
pub fn qemu_version(qemu: &Path, cache: &Path) -> io::Result<(QemuVersion, String)> {
    let id = identity(qemu)?;
    let remembered = cache.join(VERSION_FILE);
    if let Ok(text) = std::fs::read_to_string(&remembered) {
        if let Some((seen, line)) = text.split_once('\n') {
            if seen == id {
                if let Some(v) = QemuVersion::parse(line) {
                    return Ok((v, id));
                }
            }
        }
    }
    let out = std::process::Command::new(qemu)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = QemuVersion::parse(&text).ok_or_else(|| {
        io::Error::other(format!(
            "`{} --version` said {:?}",
            qemu.display(),
            text.lines().next().unwrap_or("")
        ))
    })?;
    if cache.is_dir() {
        let _ = image::write_atomic(&remembered, |w| write!(w, "{id}\n{}\n", version.text));
    }
    Ok((version, id))
}

/// The template of a configuration: `template-<files>-<layout>.snap` in the
/// cache, `<files>` a hash of the boot files and QEMU (what `cordon vm setup`
/// keeps), `<layout>` of QEMU's arguments (machine, memory, vCPUs,
/// accelerator, devices, kernel command line).
pub fn template_path(
    cache: &Path,
    image: &Image,
    support_identity: &str,
    version: &QemuVersion,
    layout: &[String],
) -> PathBuf {
    let mut h = Hasher::new("cordon-vm template layout 1");
    for arg in layout {
        h.field(arg.as_bytes());
    }
    let prefix = template_prefix(image, support_identity, version);
    cache.join(format!("{prefix}{}.snap", h.key()))
}

/// The boot files by name (their names are hashes of their contents, so a
/// cache moved or linked elsewhere keeps its templates), QEMU and its version.
fn files_key(image: &Image, identity: &str, version: &QemuVersion) -> String {
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    format!(
        "{}\n{}\n{identity}\n{}",
        name(&image.vmlinux).unwrap_or_default(),
        name(&image.initramfs).unwrap_or_default(),
        version.text
    )
}

/// The prefix of every template of `image` on this QEMU (any layout): what
/// `cordon vm setup` keeps and `cordon vm status` marks in use.
pub fn template_prefix(image: &Image, identity: &str, version: &QemuVersion) -> String {
    let mut files = Hasher::new("cordon-vm template files 2");
    files.field(files_key(image, identity, version).as_bytes());
    format!("template-{}-", files.key())
}

/// The name prefix of the templates of `image` on `qemu` (see
/// [`template_prefix`]), when it takes snapshots.
pub fn templates_of(image: &Image, qemu: &Path, cache: &Path) -> Option<String> {
    match Support::of(qemu, cache) {
        Support::Available {
            version, identity, ..
        } => Some(template_prefix(image, &identity, &version)),
        Support::Unavailable(_) => None,
    }
}

/// A template being written: a temporary file beside its final name, renamed
/// onto it once QEMU finished (so a concurrent session sees the whole template
/// or none), removed if dropped before.
#[derive(Debug)]
pub struct PendingTemplate {
    file: File,
    tmp: PathBuf,
    path: PathBuf,
}

impl PendingTemplate {
    pub fn create(path: &Path) -> io::Result<PendingTemplate> {
        let tmp = image::temp_name(path);
        // Write-only: QEMU's fd set hands it out only to an open of the same mode.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        Ok(PendingTemplate {
            file,
            tmp,
            path: path.to_path_buf(),
        })
    }

    /// A descriptor for QEMU (`-add-fd`).
    pub fn descriptor(&self) -> io::Result<std::os::fd::OwnedFd> {
        Ok(self.file.try_clone()?.into())
    }

    /// Makes the written template the configuration's.
    pub fn commit(self) -> io::Result<PathBuf> {
        self.file.sync_all()?;
        std::fs::rename(&self.tmp, &self.path)?;
        let path = self.path.clone();
        std::mem::forget(self);
        Ok(path)
    }
}

impl Drop for PendingTemplate {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Fresh host randomness for a clone, hex as [`crate::protocol::Message::Resume`] carries it.
pub fn seed() -> Result<String, String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 64];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the host's RNG failed".to_string())?;
    Ok(image::hex(&bytes))
}

/// The host's wall clock, seconds and nanoseconds since the epoch.
pub fn now() -> (i64, u32) {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        d.subsec_nanos(),
    )
}

/// The longest line QEMU's monitor may send (its answers here are small).
const MAX_LINE: u64 = 64 << 10;

/// A client of QEMU's monitor (QMP) on a socket pair.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Reads QEMU's greeting and leaves capabilities negotiation, waiting at most
    /// `timeout` for each answer.
    pub fn connect(stream: UnixStream, timeout: Duration) -> Result<Qmp, String> {
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = qmp.line()?;
        if greeting.get("QMP").is_none() {
            return Err(format!("QEMU's monitor greeted with {greeting}"));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    fn line(&mut self) -> Result<Value, String> {
        let mut line = Vec::new();
        (&mut self.reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("QEMU's monitor: {e}"))?;
        if line.is_empty() {
            return Err("QEMU's monitor closed (QEMU exited)".into());
        }
        if line.last() != Some(&b'\n') {
            return Err("QEMU's monitor sent an overlong line".into());
        }
        serde_json::from_slice(&line).map_err(|e| format!("QEMU's monitor sent garbage: {e}"))
    }

    /// Runs `command`; its `return`, or its error. Events in between are skipped.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, String> {
        let mut request = json!({ "execute": command });
        if let Some(args) = arguments {
            request["arguments"] = args;
        }
        let mut text = request.to_string();
        text.push('\n');
        (&self.writer)
            .write_all(text.as_bytes())
            .map_err(|e| format!("QEMU's monitor: {e}"))?;
        for _ in 0..1000 {
            let answer = self.line()?;
            if let Some(ret) = answer.get("return") {
                return Ok(ret.clone());
            }
            if let Some(error) = answer.get("error") {
                let desc = error.get("desc").and_then(Value::as_str).unwrap_or("?");
                return Err(format!("QEMU refused {command}: {desc}"));
            }
        }
        Err(format!("no answer from QEMU's monitor to {command}"))
    }

    /// Stops the guest and saves it to the template's fd set; returns once
    /// QEMU has written it all.
    pub fn save(&mut self, within: Duration) -> Result<(), String> {
        self.execute("stop", None)?;
        let uri = format!("file:/dev/fdset/{FDSET}");
        self.execute("migrate", Some(json!({ "uri": uri })))?;
        let deadline = Instant::now() + within;
        loop {
            let state = self.execute("query-migrate", None)?;
            match state.get("status").and_then(Value::as_str) {
                Some("completed") => return Ok(()),
                Some("failed" | "cancelled") => {
                    let why = state.get("error-desc").and_then(Value::as_str);
                    return Err(format!("saving failed: {}", why.unwrap_or("?")));
                }
                _ if Instant::now() > deadline => {
                    return Err(format!("saving took over {} s", within.as_secs()));
                }
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// Lets the guest run.
    pub fn cont(&mut self) -> Result<(), String> {
        self.execute("cont", None).map(drop)
    }

    /// Lets a restored guest run once QEMU loaded its state (a template saved
    /// stopped is restored stopped, whatever `cont` said while loading).
    pub fn cont_once_loaded(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            let state = self.execute("query-status", None)?;
            match state.get("status").and_then(Value::as_str) {
                Some("inmigrate") if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Some("inmigrate") => {
                    return Err(format!("loading took over {} s", within.as_secs()));
                }
                Some("running") => return Ok(()),
                Some("paused" | "postmigrate" | "prelaunch") => return self.cont(),
                other => return Err(format!("QEMU is {}", other.unwrap_or("?"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_qemus_version() {
        let v = QemuVersion::parse(
            "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright",
        )
        .unwrap();
        assert_eq!((v.major, v.minor, v.micro), (10, 0, 2));
        assert!(v.at_least(SNAPSHOT_QEMU) && v.at_least(MAPPED_RAM_QEMU));
        let old = QemuVersion::parse("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7)").unwrap();
        assert!(!old.at_least(SNAPSHOT_QEMU));
        assert_eq!(old.short(), "7.2.22");
        assert_eq!(QemuVersion::parse("something else 1.2.3"), None);
        assert_eq!(QemuVersion::parse("QEMU emulator version x.y"), None);
    }

    #[test]
    fn the_version_is_remembered_by_the_binarys_identity() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("qemu");
        let script = "#!/bin/sh\necho 'QEMU emulator version 9.1.0'\necho ran >> \"$0.log\"\n";
        std::fs::write(&fake, script).unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let runs = || {
            std::fs::read_to_string(dir.path().join("qemu.log"))
                .unwrap_or_default()
                .lines()
                .count()
        };
        let (v, _) = qemu_version(&fake, dir.path()).unwrap();
        assert_eq!((v.major, v.minor), (9, 1));
        qemu_version(&fake, dir.path()).unwrap();
        assert_eq!(runs(), 1, "asked again though the binary is the same");
        // A new binary (an upgrade) is asked.
        let script = script.replace("9.1.0", "7.2.0");
        std::fs::remove_file(&fake).unwrap();
        std::fs::write(&fake, script).unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let (v, _) = qemu_version(&fake, dir.path()).unwrap();
        assert_eq!((v.major, v.minor, runs()), (7, 2, 2));
        assert!(matches!(
            Support::of(&fake, dir.path()),
            Support::Unavailable(why) if why.contains("7.2.0")
        ));
    }

    /// A monitor that answers out of order, lies or floods is an error, not a
    /// hang or unbounded memory.
    #[test]
    fn a_hostile_monitor_is_an_error() {
        let talk = |script: &'static [u8]| {
            let (host, mut qemu) = UnixStream::pair().unwrap();
            std::thread::spawn(move || {
                let _ = qemu.write_all(script);
                std::thread::sleep(Duration::from_millis(200));
            });
            Qmp::connect(host, Duration::from_secs(5)).map(drop)
        };
        assert!(talk(b"{\"QMP\": {}}\n{\"return\": {}}\n").is_ok());
        assert!(talk(b"{\"nope\": 1}\n").is_err());
        assert!(talk(b"garbage\n").is_err());
        assert!(talk(b"").is_err());
        let flood: &'static [u8] = Box::leak(vec![b'x'; 100_000].into_boxed_slice());
        assert!(talk(flood).is_err());
        assert!(talk(b"{\"QMP\": {}}\n{\"error\": {\"desc\": \"no\"}}\n").is_err());
    }
}
