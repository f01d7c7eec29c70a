//! The cache of boot files ([`super::cache_dir`]): what is in it, and pruning
//! what the current cordon and kernel no longer use. Each file's name holds a
//! hash of everything it is made from, so a new cordon binary or kernel makes new
//! files beside the old ones, which only pruning removes.

use super::{Image, ImageError};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// One file of the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    pub bytes: u64,
    /// What it is: `kernel` (a vmlinux), `initramfs`, `template` (a snapshot),
    /// `memo` (the boot files of some inputs, by their identities), or
    /// `leftover` (the temporary file of an assembly or a template that was cut
    /// off).
    pub kind: &'static str,
    /// The current image (or its QEMU, for a template) uses it.
    pub current: bool,
}

/// What this cordon, kernel and QEMU use: the boot files, and the templates
/// whose names start with `templates` (any memory, vCPUs, accelerator).
#[derive(Debug, Clone, Copy, Default)]
pub struct Current<'a> {
    pub image: Option<&'a Image>,
    pub templates: Option<&'a str>,
}

impl Current<'_> {
    fn uses(&self, path: &Path) -> bool {
        let name = path.file_name().map(|n| n.to_string_lossy());
        self.image.is_some_and(|i| {
            i.vmlinux == path || i.initramfs == path || i.memo.as_deref() == Some(path)
        }) || self
            .templates
            .is_some_and(|prefix| name.is_some_and(|n| n.starts_with(prefix)))
    }
}

/// What the cache holds (nothing if it does not exist), by name; `current`
/// marks what is in use. A file's bytes are those it takes on disk (a template
/// is sparse).
pub fn entries(cache: &Path, current: Current<'_>) -> Result<Vec<Entry>, ImageError> {
    let io = |e| ImageError::Io(cache.to_path_buf(), e);
    let dir = match std::fs::read_dir(cache) {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    let mut out = Vec::new();
    for entry in dir {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(kind) = kind_of(&name) else {
            continue;
        };
        let meta = entry.metadata().map_err(io)?;
        if !meta.is_file() {
            continue;
        }
        let path = entry.path();
        let current = current.uses(&path);
        out.push(Entry {
            path,
            bytes: meta.len().min(meta.blocks() * 512),
            kind,
            current,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Removes every file of the cache but those `keep` uses; returns what it removed.
pub fn prune(cache: &Path, keep: Current<'_>) -> Result<Vec<Entry>, ImageError> {
    let mut removed = Vec::new();
    for entry in entries(cache, keep)? {
        if entry.current {
            continue;
        }
        std::fs::remove_file(&entry.path).map_err(|e| ImageError::Io(entry.path.clone(), e))?;
        removed.push(entry);
    }
    Ok(removed)
}

/// How long a file of the cache may go unused before a run of a new cordon
/// or kernel removes it (see [`prune_stale`]).
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 24 * 3600);

/// How often a file in use is marked so (its modification time).
const MARK_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Removes every file of the cache that `keep` does not use and that was not
/// used for `unused_for` (its modification time, which [`mark_used`] moves);
/// returns what it removed. What a run of a new cordon or kernel does: each
/// makes boot files and templates of its own beside the old ones, about
/// 110 MiB a version, and a user who never runs `cordon vm setup` (which
/// prunes everything unused) would keep them all. Another cordon still in use
/// keeps its own: it marks them as it uses them.
pub fn prune_stale(
    cache: &Path,
    keep: Current<'_>,
    unused_for: Duration,
) -> Result<Vec<Entry>, ImageError> {
    let now = SystemTime::now();
    let mut removed = Vec::new();
    for entry in entries(cache, keep)? {
        let unused = std::fs::metadata(&entry.path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|at| now.duration_since(at).ok());
        if entry.current || unused.is_none_or(|unused| unused < unused_for) {
            continue;
        }
        // Gone already (another run's prune) is as good.
        match std::fs::remove_file(&entry.path) {
            Ok(()) => removed.push(entry),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ImageError::Io(entry.path.clone(), e)),
        }
    }
    Ok(removed)
}

/// Marks a file of the cache as used now (its modification time, at most once
/// a day), so that [`prune_stale`] keeps it. Best effort: a cache that cannot
/// be marked is only pruned sooner.
pub fn mark_used(path: &Path) {
    let now = SystemTime::now();
    let due = (std::fs::metadata(path).and_then(|m| m.modified()))
        .is_ok_and(|at| now.duration_since(at).is_ok_and(|age| age >= MARK_EVERY));
    if due {
        let _ = std::fs::File::open(path).and_then(|file| file.set_modified(now));
    }
}

/// The kind of a file the cache makes, from its name; `None` for anything else
/// (left alone).
fn kind_of(name: &str) -> Option<&'static str> {
    if name.starts_with('.') && name.contains(".tmp-") {
        Some("leftover")
    } else if name.starts_with("vmlinux-") {
        Some("kernel")
    } else if name.starts_with("initramfs-") && name.ends_with(".cpio") {
        Some("initramfs")
    } else if name.starts_with("template-") && name.ends_with(".snap") {
        Some("template")
    } else if name.starts_with("inputs-") {
        Some("memo")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_the_current_image_and_what_the_cache_did_not_make() {
        let dir = tempfile::tempdir().unwrap();
        let at = |n: &str| dir.path().join(n);
        for name in [
            "vmlinux-aa",
            "vmlinux-bb",
            "initramfs-aa.cpio",
            "initramfs-bb.cpio",
            ".vmlinux-cc.tmp-12-0",
            "template-t1-aa.snap",
            "template-t1-bb.snap",
            "template-t0-aa.snap",
            ".template-t1-cc.snap.tmp-3-0",
            "inputs-aa",
            "inputs-bb",
            "notes.txt",
        ] {
            std::fs::write(at(name), name).unwrap();
        }
        let keep = Image {
            vmlinux: at("vmlinux-aa"),
            initramfs: at("initramfs-aa.cpio"),
            modules: Vec::new(),
            vmlinux_cached: true,
            initramfs_cached: true,
            memo: Some(at("inputs-aa")),
        };
        let keep = Current {
            image: Some(&keep),
            templates: Some("template-t1-"),
        };
        let listed = entries(dir.path(), keep).unwrap();
        assert_eq!(listed.len(), 11, "{listed:?}");
        assert_eq!(listed.iter().filter(|e| e.current).count(), 5);
        let removed: Vec<_> = prune(dir.path(), keep)
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(
            removed,
            [
                at(".template-t1-cc.snap.tmp-3-0"),
                at(".vmlinux-cc.tmp-12-0"),
                at("initramfs-bb.cpio"),
                at("inputs-bb"),
                at("template-t0-aa.snap"),
                at("vmlinux-bb")
            ]
        );
        for kept in [
            "vmlinux-aa",
            "initramfs-aa.cpio",
            "template-t1-aa.snap",
            "template-t1-bb.snap",
            "inputs-aa",
            "notes.txt",
        ] {
            assert!(at(kept).exists(), "{kept}");
        }
        assert!(
            entries(&at("missing"), Current::default())
                .unwrap()
                .is_empty()
        );
    }

    /// A run of a new cordon removes only what nobody used for a while; a
    /// file in use is marked so, and kept.
    #[test]
    fn prune_stale_removes_only_what_went_unused() {
        let dir = tempfile::tempdir().unwrap();
        let at = |n: &str| dir.path().join(n);
        let long_ago = SystemTime::now() - STALE_AFTER - Duration::from_secs(3600);
        let names = [
            "vmlinux-old",
            "initramfs-old.cpio",
            "template-t0-old.snap",
            "initramfs-used.cpio",
            "template-t0-recent.snap",
            "initramfs-now.cpio",
            "notes.txt",
        ];
        for name in names {
            std::fs::write(at(name), name).unwrap();
            if name != "template-t0-recent.snap" {
                let file = std::fs::File::options().write(true).open(at(name)).unwrap();
                file.set_modified(long_ago).unwrap();
            }
        }
        // Another cordon's initramfs, used today.
        mark_used(&at("initramfs-used.cpio"));
        let current = Image {
            vmlinux: at("vmlinux-now"),
            initramfs: at("initramfs-now.cpio"),
            modules: Vec::new(),
            vmlinux_cached: false,
            initramfs_cached: false,
            memo: None,
        };
        let keep = Current {
            image: Some(&current),
            templates: None,
        };
        let mut removed: Vec<_> = prune_stale(dir.path(), keep, STALE_AFTER)
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        removed.sort();
        assert_eq!(
            removed,
            [
                at("initramfs-old.cpio"),
                at("template-t0-old.snap"),
                at("vmlinux-old")
            ]
        );
        for kept in [
            "initramfs-used.cpio",
            "template-t0-recent.snap",
            "initramfs-now.cpio",
            "notes.txt",
        ] {
            assert!(at(kept).exists(), "{kept}");
        }
    }
}
