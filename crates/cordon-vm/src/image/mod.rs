//! The guest's boot files, assembled on the host and cached under
//! `~/.cache/cordon/vm/` (or `$XDG_CACHE_HOME/cordon/vm/`), each keyed by a hash of
//! everything it is made from:
//! - `vmlinux-<key>`: the kernel unpacked from its bzImage, booted by PVH (no
//!   decompression in the guest, which costs seconds under TCG);
//! - `initramfs-<key>.cpio`: an uncompressed newc archive holding the agent (the
//!   cordon binary, static) as `/init`, the exact virtio modules of that kernel
//!   from `/lib/modules/<release>` (unpacked), a list of them in load order, and
//!   any extra files the caller names.

pub mod bzimage;
pub mod cache;
pub mod cpio;
pub mod modules;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What image assembly can fail on.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("the kernel: {0}")]
    Kernel(String),
    #[error("the kernel's modules: {0}")]
    Modules(String),
    #[error(
        "no kernel for the VM: no /boot/vmlinuz-* with its modules in /lib/modules; \
         install one (`apt-get install linux-image-amd64`) or name one"
    )]
    NoKernel,
    #[error("no cache directory: neither XDG_CACHE_HOME nor HOME is an absolute path")]
    NoCacheDir,
    #[error("{0}")]
    Extra(String),
}

/// The modules the guest loads at boot to reach its channel: the transport of
/// either machine type and the console (virtio-serial) driver.
pub const CHANNEL_MODULES: &[&str] = &["virtio_mmio", "virtio_pci", "virtio_console"];

/// Modules carried for what comes next (the RNG device, virtiofs, 9p, vsock), not
/// loaded at boot; each is included when this kernel has it.
pub const LATER_MODULES: &[&str] = &[
    "virtio_rng",
    "fuse",
    "virtiofs",
    "9p",
    "9pnet_virtio",
    "vmw_vsock_virtio_transport",
];

/// Where the module list sits in the initramfs: one line per module, in load
/// order, `name file dep,dep`.
pub const GUEST_MODULE_LIST: &str = "cordon/modules.list";

/// A kernel to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// A bzImage (`/boot/vmlinuz-*`) or an ELF vmlinux.
    pub image: PathBuf,
    /// The release it names (`6.1.0-57-amd64`), when its header says.
    pub release: Option<String>,
    /// `/lib/modules/<release>`, when it exists (none: everything must be built in).
    pub modules: Option<PathBuf>,
}

/// The kernel to boot: `named` (a bzImage or vmlinux), or else the newest
/// `/boot/vmlinuz-<release>` whose `/lib/modules/<release>` exists.
pub fn find_kernel(named: Option<&Path>) -> Result<Kernel, ImageError> {
    if let Some(path) = named {
        let image = std::fs::read(path).map_err(|e| ImageError::Io(path.to_path_buf(), e))?;
        let release = bzimage::kernel_release(&image);
        let modules = release
            .as_ref()
            .map(|r| Path::new("/lib/modules").join(r))
            .filter(|d| d.join("modules.dep").is_file());
        return Ok(Kernel {
            image: path.to_path_buf(),
            release,
            modules,
        });
    }
    let mut found: Vec<(Vec<VersionPart>, String)> = std::fs::read_dir("/boot")
        .map_err(|_| ImageError::NoKernel)?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let release = name.strip_prefix("vmlinuz-")?.to_string();
            Path::new("/lib/modules")
                .join(&release)
                .join("modules.dep")
                .is_file()
                .then(|| (version_key(&release), release))
        })
        .collect();
    found.sort();
    let (_, release) = found.pop().ok_or(ImageError::NoKernel)?;
    Ok(Kernel {
        image: Path::new("/boot").join(format!("vmlinuz-{release}")),
        modules: Some(Path::new("/lib/modules").join(&release)),
        release: Some(release),
    })
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum VersionPart {
    Text(String),
    Number(u64),
}

/// `6.12.10-amd64` sorts after `6.1.0-57-amd64`: numbers compare as numbers.
fn version_key(release: &str) -> Vec<VersionPart> {
    let mut parts = Vec::new();
    let mut chars = release.chars().peekable();
    while let Some(&c) = chars.peek() {
        let digit = c.is_ascii_digit();
        let mut run = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_ascii_digit() != digit {
                break;
            }
            run.push(c);
            chars.next();
        }
        parts.push(match run.parse() {
            Ok(n) if digit => VersionPart::Number(n),
            _ => VersionPart::Text(run),
        });
    }
    parts
}

/// The cache directory, `$XDG_CACHE_HOME/cordon/vm` or `~/.cache/cordon/vm`.
pub fn cache_dir() -> Result<PathBuf, ImageError> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|h| h.join(".cache"))
        })
        .ok_or(ImageError::NoCacheDir)?;
    Ok(base.join("cordon").join("vm"))
}

/// A host file copied into the initramfs at `guest` (absolute), with its mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extra {
    pub host: PathBuf,
    pub guest: String,
}

/// What to assemble.
#[derive(Debug, Clone)]
pub struct Spec {
    pub kernel: Kernel,
    /// The agent: the cordon binary (static), run as `/init __vm-agent`.
    pub agent: PathBuf,
    pub extras: Vec<Extra>,
    /// Where the results are cached ([`cache_dir`] normally).
    pub cache: PathBuf,
}

/// Assembled boot files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub vmlinux: PathBuf,
    pub initramfs: PathBuf,
    /// The modules in the initramfs, in load order.
    pub modules: Vec<String>,
    /// Whether each came from the cache.
    pub vmlinux_cached: bool,
    pub initramfs_cached: bool,
    /// The memo that names these files by their inputs' identities (see
    /// [`memo_path`]), when the inputs could be stat'ed.
    pub memo: Option<PathBuf>,
}

/// A SHA-256 of length-prefixed fields, cut to 128 bits in hex: the key in a
/// cache file's name.
pub(crate) struct Hasher(ring::digest::Context);

impl Hasher {
    pub(crate) fn new(what: &str) -> Self {
        let mut h = Hasher(ring::digest::Context::new(&ring::digest::SHA256));
        h.field(what.as_bytes());
        h
    }
    /// A length-prefixed field: no two sequences of fields hash alike.
    pub(crate) fn field(&mut self, bytes: &[u8]) {
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }
    pub(crate) fn key(self) -> String {
        hex(&self.0.finish().as_ref()[..16])
    }
}

/// `bytes` in lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a session of the VM backend boots: `kernel` (the policy's
/// `vm_kernel`) or else the newest installed kernel, with its modules, this
/// cordon binary as the agent, nothing extra, in the user's cache.
pub fn session_spec(kernel: Option<&Path>) -> Result<Spec, ImageError> {
    let own =
        std::env::current_exe().map_err(|e| ImageError::Io(PathBuf::from("/proc/self/exe"), e))?;
    Ok(Spec {
        kernel: find_kernel(kernel)?,
        agent: own,
        extras: Vec::new(),
        cache: cache_dir()?,
    })
}

/// Assembles (or finds in the cache) the vmlinux and the initramfs of `spec`.
pub fn assemble(spec: &Spec) -> Result<Image, ImageError> {
    find_or_make(spec, Lookup::Make)?
        .ok_or_else(|| ImageError::Extra("the boot files were not made".into()))
}

/// The vmlinux and the initramfs of `spec` if the cache holds both, else `None`:
/// nothing is made or written (the inputs are read to find their names).
pub fn cached(spec: &Spec) -> Result<Option<Image>, ImageError> {
    find_or_make(spec, Lookup::Look)
}

/// The vmlinux and the initramfs of `spec` if the cache holds both, else
/// `None`: nothing is made, but the memo of the inputs is written when they
/// were found by their contents (a session's lookup, so that the next one
/// need not hash them again).
pub fn find(spec: &Spec) -> Result<Option<Image>, ImageError> {
    find_or_make(spec, Lookup::Find)
}

/// How far [`find_or_make`] goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lookup {
    /// Writes nothing (`cordon vm status`).
    Look,
    /// Writes the memo of what it found.
    Find,
    /// Makes what is missing, and writes the memo.
    Make,
}

/// The boot files of `spec`: found by the memo of its inputs' identities when
/// one names files the cache holds (nothing read), else by the hashes of the
/// inputs' contents, made where missing when `make` (else `None` then).
fn find_or_make(spec: &Spec, lookup: Lookup) -> Result<Option<Image>, ImageError> {
    let make = lookup == Lookup::Make;
    if !make && !spec.cache.is_dir() {
        return Ok(None);
    }
    let memo = memo_path(spec);
    if let Some(image) = memo.as_deref().and_then(read_memo) {
        return Ok(Some(image));
    }
    let image = hash_or_make(spec, make)?;
    // Not for a look (`cordon vm status` writes nothing); only a later run's
    // shortcut: a memo not written costs that run the hashing.
    if let (true, Some(image), Some(memo)) = (lookup != Lookup::Look, &image, &memo) {
        if write_memo(memo, image).is_ok() {
            return Ok(Some(Image {
                memo: Some(memo.clone()),
                ..image.clone()
            }));
        }
    }
    Ok(image)
}

/// The memo of `spec`'s inputs in its cache, `inputs-<key>`: the key hashes
/// each input's path and identity (device, inode, size, modification and
/// change times: a file rewritten or replaced has another ctime, which no
/// one can set back), so that a run whose kernel, agent, modules and extras
/// are the files of an earlier run finds its boot files without reading and
/// hashing them (about 50 ms a run for a release build). `None` when an input
/// cannot be stat'ed.
fn memo_path(spec: &Spec) -> Option<PathBuf> {
    let mut h = Hasher::new("cordon-vm inputs 1");
    let mut inputs = vec![spec.kernel.image.clone(), spec.agent.clone()];
    if let Some(dir) = &spec.kernel.modules {
        // depmod rewrites it whenever the modules change.
        inputs.push(dir.join("modules.dep"));
    }
    for e in &spec.extras {
        h.field(e.guest.as_bytes());
        inputs.push(e.host.clone());
    }
    for path in inputs {
        let m = std::fs::metadata(&path).ok()?;
        h.field(path.as_os_str().as_encoded_bytes());
        for n in [
            m.dev(),
            m.ino(),
            m.len(),
            m.mode().into(),
            m.mtime() as u64,
            m.mtime_nsec() as u64,
            m.ctime() as u64,
            m.ctime_nsec() as u64,
        ] {
            h.field(&n.to_le_bytes());
        }
    }
    Some(spec.cache.join(format!("inputs-{}", h.key())))
}

/// The image a memo names, if it names files that are there.
fn read_memo(memo: &Path) -> Option<Image> {
    let text = std::fs::read_to_string(memo).ok()?;
    let mut lines = text.lines();
    let dir = memo.parent()?;
    let mut file = |prefix: &str| -> Option<PathBuf> {
        let name = lines.next()?;
        let ok = name.starts_with(prefix) && !name.contains('/');
        ok.then(|| dir.join(name)).filter(|p| p.is_file())
    };
    let vmlinux = file("vmlinux-")?;
    let initramfs = file("initramfs-")?;
    let modules = lines
        .next()?
        .split_whitespace()
        .map(str::to_string)
        .collect();
    Some(Image {
        vmlinux,
        initramfs,
        modules,
        vmlinux_cached: true,
        initramfs_cached: true,
        memo: Some(memo.to_path_buf()),
    })
}

fn write_memo(memo: &Path, image: &Image) -> Result<(), ImageError> {
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let text = format!(
        "{}\n{}\n{}\n",
        name(&image.vmlinux).unwrap_or_default(),
        name(&image.initramfs).unwrap_or_default(),
        image.modules.join(" ")
    );
    write_atomic(memo, |w| w.write_all(text.as_bytes()))
}

/// The boot files of `spec` by the hashes of its inputs' contents, made where
/// missing when `make`.
fn hash_or_make(spec: &Spec, make: bool) -> Result<Option<Image>, ImageError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&spec.cache)
        .map_err(|e| ImageError::Io(spec.cache.clone(), e))?;
    let kernel_bytes = read(&spec.kernel.image)?;

    // The vmlinux: keyed by the image it comes from and the unpacker's version.
    let mut h = Hasher::new("cordon-vm vmlinux 1");
    h.field(&kernel_bytes);
    let vmlinux = spec.cache.join(format!("vmlinux-{}", h.key()));
    let vmlinux_cached = vmlinux.is_file();
    if !vmlinux_cached && !make {
        return Ok(None);
    }
    if !vmlinux_cached {
        let elf = bzimage::vmlinux(&kernel_bytes).map_err(|e| match e {
            ImageError::Kernel(why) => ImageError::Kernel(format!(
                "{}: {why} (name another with --vm-kernel or \"vm_kernel\")",
                spec.kernel.image.display()
            )),
            other => other,
        })?;
        write_atomic(&vmlinux, |w| w.write_all(&elf))?;
    }
    drop(kernel_bytes);

    // The initramfs: keyed by everything in it.
    let mut mods = Vec::new();
    if let Some(dir) = &spec.kernel.modules {
        mods = modules::resolve(dir, CHANNEL_MODULES)?;
        for name in LATER_MODULES {
            if let Ok(more) = modules::resolve(dir, &[name]) {
                for m in more {
                    if !mods.iter().any(|have| have.name == m.name) {
                        mods.push(m);
                    }
                }
            }
        }
    }
    let agent = read(&spec.agent)?;
    // 2: padded to whole pages (see cpio::Writer::finish).
    let mut h = Hasher::new("cordon-vm initramfs 2");
    h.field(&agent);
    let mut module_files = Vec::new();
    for m in &mods {
        let raw = read(&m.path)?;
        h.field(m.name.as_bytes());
        h.field(&raw);
        module_files.push(raw);
    }
    let mut extras = Vec::new();
    for e in &spec.extras {
        if !e.guest.starts_with('/') || e.guest.split('/').any(|c| c == "..") {
            return Err(ImageError::Extra(format!(
                "an extra file's guest path must be absolute, without `..`: {:?}",
                e.guest
            )));
        }
        let data = read(&e.host)?;
        let mode = std::fs::metadata(&e.host)
            .map_err(|err| ImageError::Io(e.host.clone(), err))?
            .permissions()
            .mode();
        h.field(e.guest.as_bytes());
        h.field(&mode.to_le_bytes());
        h.field(&data);
        extras.push((e.guest.clone(), mode, data));
    }
    let initramfs = spec.cache.join(format!("initramfs-{}.cpio", h.key()));
    let initramfs_cached = initramfs.is_file();
    if !initramfs_cached && !make {
        return Ok(None);
    }
    if !initramfs_cached {
        let mut list = String::new();
        let mut entries = Vec::new();
        for (m, raw) in mods.iter().zip(module_files) {
            let elf = modules::unpack(&m.path, raw)?;
            let file = format!("cordon/modules/{}.ko", m.name);
            list.push_str(&format!("{} /{file} {}\n", m.name, m.deps.join(",")));
            entries.push((file, elf));
        }
        write_atomic(&initramfs, |w| {
            let mut cpio = cpio::Writer::new(w);
            for d in [
                "dev",
                "proc",
                "sys",
                "tmp",
                "run",
                "cordon",
                "cordon/modules",
            ] {
                cpio.dir(d, 0o755)?;
            }
            // The kernel opens /dev/console for init's stdio before devtmpfs exists.
            cpio.char_device("dev/console", 0o600, 5, 1)?;
            cpio.file("init", 0o755, &loadable_part(&agent))?;
            cpio.file(GUEST_MODULE_LIST, 0o644, list.as_bytes())?;
            for (file, elf) in &entries {
                cpio.file(file, 0o644, elf)?;
            }
            let mut dirs = std::collections::BTreeSet::new();
            for (guest, mode, data) in &extras {
                let rel = guest.trim_start_matches('/');
                let mut parent = Path::new(rel).parent();
                let mut need = Vec::new();
                while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
                    need.push(p.to_string_lossy().into_owned());
                    parent = p.parent();
                }
                for d in need.into_iter().rev() {
                    if dirs.insert(d.clone())
                        && !["dev", "proc", "sys", "tmp", "run", "cordon"].contains(&d.as_str())
                    {
                        cpio.dir(&d, 0o755)?;
                    }
                }
                cpio.file(rel, *mode, data)?;
            }
            cpio.finish().map(drop)
        })?;
    }
    Ok(Some(Image {
        vmlinux,
        initramfs,
        modules: mods.into_iter().map(|m| m.name).collect(),
        vmlinux_cached,
        initramfs_cached,
        memo: None,
    }))
}

/// What of an ELF executable the kernel loads: the file up to the end of the last
/// part a program header names, without the section headers (as `sstrip` does).
/// A debug build of cordon is 150 MB, of which 25 MB are loaded; the rest (debug
/// information, symbols) would only make the initramfs slower to unpack. Anything
/// that is not a 64-bit little-endian ELF is returned whole.
fn loadable_part(elf: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let field = |at: usize, len: usize| -> Option<u64> {
        let b = elf.get(at..at + len)?;
        Some(
            b.iter()
                .rev()
                .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)),
        )
    };
    let end = (|| {
        if !elf.starts_with(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
            return None;
        }
        let phoff = field(0x20, 8)?;
        let phentsize = field(0x36, 2)?;
        let phnum = field(0x38, 2)?;
        let mut end = phoff.checked_add(phentsize.checked_mul(phnum)?)?.max(64);
        for i in 0..phnum {
            let ph = usize::try_from(phoff + i * phentsize).ok()?;
            end = end.max(field(ph + 8, 8)?.checked_add(field(ph + 32, 8)?)?);
        }
        usize::try_from(end).ok().filter(|&e| e < elf.len())
    })();
    let Some(end) = end else {
        return std::borrow::Cow::Borrowed(elf);
    };
    let mut out = elf[..end].to_vec();
    // e_shoff, e_shnum, e_shstrndx: no section headers.
    out[0x28..0x30].fill(0);
    out[0x3c..0x40].fill(0);
    std::borrow::Cow::Owned(out)
}

fn read(path: &Path) -> Result<Vec<u8>, ImageError> {
    std::fs::read(path).map_err(|e| ImageError::Io(path.to_path_buf(), e))
}

/// A temporary name beside `path`, unique to this process and call
/// (`.NAME.tmp-PID-N`: what pruning recognizes as a leftover).
pub(crate) fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    path.with_file_name(format!(".{name}.tmp-{}-{seq}", std::process::id()))
}

/// Writes `path` through a temporary file in the same directory and a rename, so
/// a concurrent reader sees the whole file or none.
pub(crate) fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<(), ImageError> {
    let tmp = temp_name(path);
    let result = (|| {
        let mut w = BufWriter::new(File::create(&tmp)?);
        fill(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ImageError::Io(path.to_path_buf(), e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test binary itself, cut to its loaded part, still runs.
    #[test]
    fn loadable_part_still_runs() {
        let me = std::env::current_exe().unwrap();
        let elf = std::fs::read(&me).unwrap();
        let part = loadable_part(&elf);
        assert!(part.len() <= elf.len());
        let dir = std::env::temp_dir().join(format!("cordon-vm-sstrip-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let copy = dir.join("t");
        std::fs::write(&copy, &part).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = std::process::Command::new(&copy)
            .arg("--list")
            .output()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("loadable_part_still_runs"));
        assert_eq!(&*loadable_part(b"not an elf"), b"not an elf");
    }

    /// A memo names the boot files of its inputs while they are the same files;
    /// an input rewritten (even with the same bytes) or replaced has another
    /// memo, and a memo naming a missing file, or one outside the cache, is
    /// not taken.
    #[test]
    fn a_memo_names_the_files_of_unchanged_inputs_only() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| dir.path().join(name);
        std::fs::write(at("kernel"), "kernel").unwrap();
        std::fs::write(at("agent"), "agent").unwrap();
        let cache = at("cache");
        std::fs::create_dir(&cache).unwrap();
        let spec = Spec {
            kernel: Kernel {
                image: at("kernel"),
                release: None,
                modules: None,
            },
            agent: at("agent"),
            extras: Vec::new(),
            cache: cache.clone(),
        };
        let image = Image {
            vmlinux: cache.join("vmlinux-aa"),
            initramfs: cache.join("initramfs-bb.cpio"),
            modules: vec!["virtio_pci".into(), "virtio_console".into()],
            vmlinux_cached: true,
            initramfs_cached: true,
            memo: None,
        };
        std::fs::write(&image.vmlinux, "").unwrap();
        std::fs::write(&image.initramfs, "").unwrap();
        let memo = memo_path(&spec).unwrap();
        assert!(memo.starts_with(&cache));
        assert_eq!(memo_path(&spec), Some(memo.clone()), "not stable");
        write_memo(&memo, &image).unwrap();
        let read = read_memo(&memo).unwrap();
        assert_eq!(
            read,
            Image {
                memo: Some(memo.clone()),
                ..image.clone()
            }
        );
        // The same bytes written again: another change time, another memo.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(at("agent"), "agent").unwrap();
        assert_ne!(memo_path(&spec), Some(memo.clone()));
        // No memo for inputs that are not there.
        let gone = Spec {
            agent: at("no-agent"),
            ..spec
        };
        assert_eq!(memo_path(&gone), None);
        // A memo naming a file the cache lacks, or one outside it.
        std::fs::remove_file(&image.initramfs).unwrap();
        assert_eq!(read_memo(&memo), None);
        std::fs::write(&memo, "vmlinux-aa\n../initramfs-bb.cpio\n\n").unwrap();
        std::fs::write(at("initramfs-bb.cpio"), "").unwrap();
        assert_eq!(read_memo(&memo), None);
    }

    #[test]
    fn versions_sort_numerically() {
        let mut v = vec![
            "6.12.10-amd64",
            "6.1.0-57-amd64",
            "6.1.0-9-amd64",
            "5.10.0-30-amd64",
        ];
        v.sort_by_key(|r| version_key(r));
        assert_eq!(
            v,
            [
                "5.10.0-30-amd64",
                "6.1.0-9-amd64",
                "6.1.0-57-amd64",
                "6.12.10-amd64"
            ]
        );
    }
}
