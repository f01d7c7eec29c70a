//! The cache of boot files ([`super::cache_dir`]): what is in it, and pruning
//! what the current cordon and kernel no longer use. Each file's name holds a
//! hash of everything it is made from, so a new cordon binary or kernel makes new
//! files beside the old ones, which only pruning removes.

use super::{Image, ImageError};
use std::path::{Path, PathBuf};

/// One file of the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    pub bytes: u64,
    /// What it is: `kernel` (a vmlinux), `initramfs`, or `leftover` (the
    /// temporary file of an assembly that was cut off).
    pub kind: &'static str,
    /// The current image uses it.
    pub current: bool,
}

/// What the cache holds (nothing if it does not exist), by name; `current`
/// marks the files of that image.
pub fn entries(cache: &Path, current: Option<&Image>) -> Result<Vec<Entry>, ImageError> {
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
        let current = current.is_some_and(|i| i.vmlinux == path || i.initramfs == path);
        out.push(Entry {
            path,
            bytes: meta.len(),
            kind,
            current,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Removes every file of the cache but `keep`'s; returns what it removed.
pub fn prune(cache: &Path, keep: &Image) -> Result<Vec<Entry>, ImageError> {
    let mut removed = Vec::new();
    for entry in entries(cache, Some(keep))? {
        if entry.current {
            continue;
        }
        std::fs::remove_file(&entry.path).map_err(|e| ImageError::Io(entry.path.clone(), e))?;
        removed.push(entry);
    }
    Ok(removed)
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
        };
        let listed = entries(dir.path(), Some(&keep)).unwrap();
        assert_eq!(listed.len(), 5, "{listed:?}");
        assert_eq!(listed.iter().filter(|e| e.current).count(), 2);
        let removed: Vec<_> = prune(dir.path(), &keep)
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(
            removed,
            [
                at(".vmlinux-cc.tmp-12-0"),
                at("initramfs-bb.cpio"),
                at("vmlinux-bb")
            ]
        );
        for kept in ["vmlinux-aa", "initramfs-aa.cpio", "notes.txt"] {
            assert!(at(kept).exists(), "{kept}");
        }
        assert!(entries(&at("missing"), None).unwrap().is_empty());
    }
}
