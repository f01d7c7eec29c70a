//! File operations: read, write (atomic), stat, exists, readdir, mkdir.

use crate::error::ToolError;
use crate::guard::{Guard, Need, canonical, is_placeholder, lossy};
use crate::protocol::{
    DirEntry, Empty, ExistsResult, FileType, MkdirParams, PathParams, ReadParams, ReadResult,
    ReaddirResult, StatResult, WriteParams, WriteResult,
};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The most bytes one `read` returns (the whole file is base64'd into one line).
pub const MAX_READ: u64 = 64 << 20;

pub fn read(g: &Guard, p: &ReadParams) -> Result<ReadResult, ToolError> {
    const OP: &str = "read";
    let path = g.resolve(OP, "path", &p.path, Need::Read)?;
    let offset = p.offset.unwrap_or(0);
    let limit = p.limit;
    if let Some(l) = limit {
        if l > MAX_READ {
            return Err(too_big());
        }
    }
    let io_err = |e| ToolError::io(OP, &path, e);
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&path)
        .map_err(io_err)?;
    let md = f.metadata().map_err(io_err)?;
    let ft = md.file_type();
    if ft.is_dir() {
        return Err(ToolError::errno(OP, &path, libc::EISDIR));
    }
    if !(ft.is_file() || ft.is_char_device() || ft.is_block_device()) {
        // A FIFO or socket could block the request forever.
        return Err(ToolError::errno(OP, &path, libc::EINVAL));
    }
    let size = md.len();
    if limit.is_none() && ft.is_file() && size.saturating_sub(offset) > MAX_READ {
        return Err(too_big());
    }
    let mime = if ft.is_file() { sniff(&mut f) } else { None };
    if offset > 0 {
        f.seek(SeekFrom::Start(offset)).map_err(io_err)?;
    }
    // Files in /proc report size 0: read until EOF, up to the cap.
    let want = limit.unwrap_or(u64::MAX);
    let cap = want.min(MAX_READ);
    let mut buf = Vec::new();
    if ft.is_file() && size > 0 {
        buf.reserve(size.saturating_sub(offset).min(cap) as usize);
    }
    (&mut f)
        .take(cap.saturating_add(1).min(want))
        .read_to_end(&mut buf)
        .map_err(io_err)?;
    if buf.len() as u64 > cap {
        // Only reachable with no limit: the rest of the file exceeds the cap.
        return Err(too_big());
    }
    let end = offset.saturating_add(buf.len() as u64);
    let size = if ft.is_file() && (buf.len() as u64) < want {
        size.max(end)
    } else {
        size
    };
    Ok(ReadResult {
        data: buf.into(),
        size,
        mime: mime.map(Into::into),
    })
}

fn too_big() -> ToolError {
    ToolError::invalid(
        "limit",
        format!(
            "one read returns at most {MAX_READ} bytes; read a larger file in parts with offset and limit"
        ),
    )
}

/// The MIME type of an image recognised by its magic bytes.
fn sniff(f: &mut File) -> Option<&'static str> {
    use std::os::unix::fs::FileExt;
    let mut head = [0u8; 12];
    let mut n = 0;
    while n < head.len() {
        match f.read_at(&mut head[n..], n as u64) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    mime_of(&head[..n])
}

pub fn mime_of(h: &[u8]) -> Option<&'static str> {
    if h.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if h.starts_with(b"\xff\xd8\xff") {
        Some("image/jpeg")
    } else if h.starts_with(b"GIF87a") || h.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if h.len() >= 12 && &h[..4] == b"RIFF" && &h[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

pub fn write(g: &Guard, p: WriteParams) -> Result<WriteResult, ToolError> {
    const OP: &str = "write";
    let bytes: Vec<u8> = match (p.content, p.data) {
        (Some(_), Some(_)) => {
            return Err(ToolError::invalid(
                "data",
                "give either content or data, not both",
            ));
        }
        (Some(c), None) => c.into_bytes(),
        (None, Some(d)) => d.into_vec(),
        (None, None) => return Err(ToolError::invalid("content", "content or data is required")),
    };
    let path = g.resolve(OP, "path", &p.path, Need::Write)?;
    let parent = path
        .parent()
        .ok_or_else(|| ToolError::errno(OP, &path, libc::EISDIR))?;
    create_parents(g, OP, parent)?;
    atomic_write(&path, &bytes).map_err(|e| ToolError::io(OP, &path, e))?;
    Ok(WriteResult {
        bytes: bytes.len() as u64,
    })
}

/// Creates `dir` and its missing ancestors, each checked for write access first.
fn create_parents(g: &Guard, op: &'static str, dir: &Path) -> Result<(), ToolError> {
    let mut missing = Vec::new();
    let mut cur = dir;
    loop {
        match fs::symlink_metadata(cur) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(cur.to_path_buf());
                match cur.parent() {
                    Some(p) => cur = p,
                    None => break,
                }
            }
            Err(e) => return Err(ToolError::io(op, cur, e)),
        }
    }
    for m in missing.iter().rev() {
        g.check(op, m, Need::Write)?;
        match fs::create_dir(m) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && m.is_dir() => {}
            Err(e) => return Err(ToolError::io(op, m, e)),
        }
    }
    Ok(())
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A name for the temporary file next to `path`: `.NAME.cordon-XXXXXXXX`.
fn temp_name(path: &Path) -> PathBuf {
    let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64 ^ d.as_secs())
        .unwrap_or(0);
    let mut x =
        nanos ^ (u64::from(std::process::id()) << 32) ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // splitmix64 finaliser: spread the bits.
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    let name = path.file_name().map(lossy).unwrap_or_default();
    // Keep the temp name within NAME_MAX.
    let short: String = name.chars().take(200).collect();
    path.with_file_name(format!(".{short}.cordon-{:08x}", x as u32))
}

/// Writes `bytes` to `path` so that any crash leaves the old or the new content.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let existing = match fs::metadata(path) {
        Ok(m) if m.is_dir() => return Err(io::Error::from_raw_os_error(libc::EISDIR)),
        Ok(m) => Some(m.permissions().mode() & 0o7777),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let mut attempts = 0;
    let (tmp, mut f) = loop {
        let tmp = temp_name(path);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 16 => attempts += 1,
            Err(e) => return Err(e),
        }
    };
    let result = (|| {
        if let Some(mode) = existing {
            f.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        f.write_all(bytes)?;
        // No fsync, like pi's own write and editors: the rename alone makes the
        // write atomic against a kill or a crash of any process (the target is the
        // old file or the new one, never a mix). Against power loss, ext4 (default
        // options) and btrfs flush a file that a rename replaces before committing
        // the rename. An fsync would double the cost of every write.
        drop(f);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn file_type(ft: fs::FileType) -> FileType {
    if ft.is_symlink() {
        FileType::Symlink
    } else if ft.is_dir() {
        FileType::Dir
    } else if ft.is_file() {
        FileType::File
    } else {
        FileType::Other
    }
}

pub fn stat(g: &Guard, p: &PathParams) -> Result<StatResult, ToolError> {
    const OP: &str = "stat";
    let path = g.resolve_nofollow(OP, "path", &p.path)?;
    let md = fs::symlink_metadata(&path).map_err(|e| ToolError::io(OP, &path, e))?;
    let mtime_ms = md.mtime().saturating_mul(1000) + md.mtime_nsec() / 1_000_000;
    Ok(StatResult {
        kind: file_type(md.file_type()),
        size: md.len(),
        mtime_ms,
        mode: md.mode(),
    })
}

pub fn exists(g: &Guard, p: &PathParams) -> Result<ExistsResult, ToolError> {
    const OP: &str = "exists";
    let abs = g.absolute("path", &p.path)?;
    let canon = match canonical(&abs) {
        Ok(c) => c,
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            return Ok(ExistsResult { exists: false });
        }
        Err(e) => return Err(ToolError::io(OP, &abs, e)),
    };
    g.check(OP, &canon, Need::Read)?;
    let exists = match fs::metadata(&canon) {
        Ok(_) => true,
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            false
        }
        Err(e) => return Err(ToolError::io(OP, &canon, e)),
    };
    Ok(ExistsResult { exists })
}

pub fn readdir(g: &Guard, p: &PathParams) -> Result<ReaddirResult, ToolError> {
    const OP: &str = "readdir";
    let path = g.resolve(OP, "path", &p.path, Need::Read)?;
    let rd = fs::read_dir(&path).map_err(|e| ToolError::io(OP, &path, e))?;
    let mut entries = Vec::new();
    for e in rd {
        let e = e.map_err(|e| ToolError::io(OP, &path, e))?;
        if is_placeholder(&g.policy, &e.path()) {
            continue;
        }
        let kind = e.file_type().map_or(FileType::Other, file_type);
        entries.push(DirEntry {
            name: lossy(&e.file_name()),
            kind,
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(ReaddirResult { entries })
}

pub fn mkdir(g: &Guard, p: &MkdirParams) -> Result<Empty, ToolError> {
    const OP: &str = "mkdir";
    let path = g.resolve(OP, "path", &p.path, Need::Write)?;
    if p.recursive.unwrap_or(true) {
        create_parents(g, OP, &path)?;
        if !path.is_dir() {
            return Err(ToolError::errno(OP, &path, libc::ENOTDIR));
        }
    } else {
        fs::create_dir(&path).map_err(|e| ToolError::io(OP, &path, e))?;
    }
    Ok(Empty {})
}
