//! What the filesystem holds at a path, as far as resolving a policy goes, each
//! path looked up once per resolution.
//!
//! Resolving one policy asks about the same few directories hundreds of times: the
//! eighty home secrets and protected files share `~` and `~/.config`, every rule is
//! canonicalised component by component, and the protected names of each writable
//! root are checked by several steps. Inside [`memoised`], [`lstat`] answers each
//! path from one `lstat` (and one `readlink` for a symlink), and a path below a
//! missing directory is missing without a system call. Outside it, every call looks
//! again.
//!
//! The answers are a snapshot taken during the resolution, as single lookups
//! already were: nothing here is trusted to stay true. The view is built from
//! descriptors opened without following symlinks, which checks each path again
//! when it is used.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// How many symlinks [`canonicalize_lenient`] follows before it gives up (the
/// kernel's limit).
const MAX_SYMLINK_HOPS: usize = 40;

/// What `lstat` (and `readlink`) said of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Nothing there, or it could not be looked at.
    Missing,
    /// A symlink, with its target (`None`: unreadable).
    Symlink(Option<PathBuf>),
    Dir,
    /// A regular file.
    File,
    /// A device, socket or fifo.
    Other,
}

impl Entry {
    pub fn exists(&self) -> bool {
        *self != Entry::Missing
    }

    pub fn is_symlink(&self) -> bool {
        matches!(self, Entry::Symlink(_))
    }
}

thread_local! {
    /// The lookups of the resolution under way on this thread, if one is memoised;
    /// with how many [`Memoised`] guards hold it.
    static MEMO: RefCell<Option<(usize, Memo)>> = const { RefCell::new(None) };
}

#[derive(Default)]
struct Memo {
    /// By the path's bytes, hashed cheaply: a resolution asks a few hundred times.
    seen: HashMap<OsString, Entry, std::hash::BuildHasherDefault<FxHasher>>,
}

/// rustc's Fx hash: a multiply and a rotate per word, where SipHash (the default,
/// built to resist chosen keys) took longer than the `lstat` it saved. The keys
/// are paths cordon itself asks about.
#[derive(Default)]
struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0xf135_7aea_2e62_a9c5;
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// While alive, [`lstat`] on this thread remembers what it found; the last guard
/// dropped forgets it all.
pub struct Memoised(());

/// Memoise the lookups on this thread until the guard is dropped (nests).
pub fn memoised() -> Memoised {
    MEMO.with(|m| {
        let mut m = m.borrow_mut();
        match m.as_mut() {
            Some((count, _)) => *count += 1,
            None => *m = Some((1, Memo::default())),
        }
    });
    Memoised(())
}

impl Drop for Memoised {
    fn drop(&mut self) {
        MEMO.with(|m| {
            let mut m = m.borrow_mut();
            if let Some((count, _)) = m.as_mut() {
                *count -= 1;
                if *count == 0 {
                    *m = None;
                }
            }
        });
    }
}

/// What is at `path` (absolute, not followed if a symlink).
pub fn lstat(path: &Path) -> Entry {
    MEMO.with(|m| match m.borrow_mut().as_mut() {
        Some((_, memo)) => memo.lstat(path),
        None => look(path),
    })
}

impl Memo {
    fn lstat(&mut self, path: &Path) -> Entry {
        if let Some(entry) = self.seen.get(path.as_os_str()) {
            return entry.clone();
        }
        // Below a missing directory, or a file, there is nothing.
        let entry = match path.parent().and_then(|p| self.seen.get(p.as_os_str())) {
            Some(Entry::Missing | Entry::File | Entry::Other) => Entry::Missing,
            _ => look(path),
        };
        self.seen
            .insert(path.as_os_str().to_os_string(), entry.clone());
        entry
    }
}

fn look(path: &Path) -> Entry {
    match std::fs::symlink_metadata(path) {
        Err(_) => Entry::Missing,
        Ok(m) if m.file_type().is_symlink() => Entry::Symlink(std::fs::read_link(path).ok()),
        Ok(m) if m.is_dir() => Entry::Dir,
        Ok(m) if m.is_file() => Entry::File,
        Ok(_) => Entry::Other,
    }
}

/// Canonicalise an absolute path, also when it (or part of it) does not exist.
///
/// The path is walked component by component from `/`: existing symlinks are
/// followed (also dangling ones, so a rule written through a symlink lands on its
/// target), `..` goes to the parent of what was reached (as the kernel does), and
/// below the first missing component the rest follows as written, `.` and `..`
/// resolved lexically. An existing path comes out as `realpath(3)` gives it.
/// Never fails: an unreadable link or a symlink loop ends the following of links,
/// and the rest is appended as written.
pub fn canonicalize_lenient(path: &Path) -> PathBuf {
    // Components still to visit, last one first.
    let mut todo: Vec<OsString> = Vec::new();
    push_components(&mut todo, path);
    let mut out = PathBuf::from("/");
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        if c == "." {
            continue;
        }
        if c == ".." {
            out.pop();
            continue;
        }
        out.push(&c);
        if let Entry::Symlink(Some(target)) = lstat(&out) {
            if hops < MAX_SYMLINK_HOPS {
                hops += 1;
                out.pop();
                if target.is_absolute() {
                    out = PathBuf::from("/");
                }
                push_components(&mut todo, &target);
            }
        }
    }
    out
}

/// Push `path`'s components onto `todo` so that the first one is popped first.
fn push_components(todo: &mut Vec<OsString>, path: &Path) {
    let start = todo.len();
    for c in path.components() {
        match c {
            Component::Normal(n) => todo.push(n.to_os_string()),
            Component::ParentDir => todo.push("..".into()),
            Component::CurDir => todo.push(".".into()),
            Component::RootDir | Component::Prefix(_) => {}
        }
    }
    todo[start..].reverse();
}
