//! What the audit's walk read of each directory, remembered for the next audit of
//! the same root, so that a directory nobody changed is not read again.
//!
//! The walk must visit every directory of a writable root (a repository can be
//! planted at any depth), and reading one (open, `getdents`, close) costs several
//! times a `stat`: in a workspace of 20,000 directories (a `node_modules`) that
//! was a quarter of a second after every run. A directory's change time moves
//! whenever an entry is added to it, removed from it or renamed in or out, and
//! nothing but the clock sets it (`utimensat` sets the other two times, not
//! this one). So a directory whose device, inode and change time are those it
//! had when it was last read holds the same entries, and the walk takes them
//! from here, after one `stat`. What those entries hold is looked at as
//! before: every subdirectory is visited (its own change time says whether it
//! is read), and every `.git` entry and git dir is judged.
//!
//! One race is closed by hand: the kernel stamps change times with a coarse
//! clock, so a change made just after a directory was read may carry the change
//! time it already had. A listing is therefore kept only when the directory's
//! change time lies at least [`RACY_MARGIN`] before the reading began (git's
//! "racily clean" index entries, the same problem). Such a directory is read
//! again every time until it has been still for that long.
//!
//! The listings live in the user's run-record directory
//! ([`crate::pending::user_dir`]: `/dev/shm/cordon-UID`, which no sandbox sees),
//! one file per root. A file that is missing, damaged, larger than
//! [`MAX_FILE_BYTES`] or of another version is ignored whole: the walk reads
//! every directory, as it would with no file, and writes a new one.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a directory must have been unchanged when it was read for its
/// listing to be trusted later: far more than the kernel's coarse clock lags.
pub const RACY_MARGIN: Duration = Duration::from_secs(2);

/// The largest listings file read; a larger one is ignored.
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// The first bytes of a listings file, with its version.
const MAGIC: &[u8] = b"cordon-listings 1\n";

/// Where a listing came from, which decides whether the next audit may use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// From the last audit, and it still held.
    Remembered,
    /// Read now, at this time.
    Read(SystemTime),
    /// Read now, on a file system whose change times are not trusted.
    Untrusted,
}

/// Whether the file system of `dir` keeps change times a listing can be checked
/// against: a local one, whose kernel driver sets them on every change of a
/// directory's entries. Not a network file system (a client may see another
/// client's changes late) or a FUSE one (its server says what it likes).
pub fn trusts_change_times(dir: &Path) -> bool {
    // statfs(2)'s f_type of each; its C type differs between architectures.
    const LOCAL: [i64; 7] = [
        0xEF53,      // ext2, ext3, ext4
        0x5846_5342, // xfs
        0x9123_683E, // btrfs
        0x0102_1994, // tmpfs
        0xF2F5_2010, // f2fs
        0x2FC1_2FC1, // zfs
        0x8584_58F6, // ramfs
    ];
    #[allow(clippy::unnecessary_cast)]
    rustix::fs::statfs(dir).is_ok_and(|s| LOCAL.contains(&(s.f_type as i64)))
}

/// What a directory's `.git` entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DotGit {
    Dir,
    Symlink,
    /// A regular file (a gitfile) or anything else that is not a directory.
    File,
}

/// What the walk needs of one directory's entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The directory's identity and change time when it was read.
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
    pub dot_git: Option<DotGit>,
    /// Whether it holds an entry named `HEAD`.
    pub has_head: bool,
    /// The names of its subdirectories (not of symlinks to directories).
    pub subdirs: Vec<OsString>,
}

impl Listing {
    /// Reads `dir`, whose metadata `meta` was taken before.
    pub fn read(meta: &fs::Metadata, entries: fs::ReadDir) -> Listing {
        let mut listing = Listing {
            dev: meta.dev(),
            ino: meta.ino(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            dot_git: None,
            has_head: false,
            subdirs: Vec::new(),
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let name = entry.file_name();
            if name == ".git" {
                listing.dot_git = Some(if kind.is_dir() {
                    DotGit::Dir
                } else if kind.is_symlink() {
                    DotGit::Symlink
                } else {
                    DotGit::File
                });
            }
            if name == "HEAD" {
                listing.has_head = true;
            }
            if kind.is_dir() {
                listing.subdirs.push(name);
            }
        }
        listing
    }

    /// Whether this listing still holds for a directory whose metadata is `meta`.
    fn holds_for(&self, meta: &fs::Metadata) -> bool {
        self.dev == meta.dev()
            && self.ino == meta.ino()
            && self.ctime == (meta.ctime(), meta.ctime_nsec())
    }
}

/// The listings of one root: those of the last audit, and those of this one.
#[derive(Debug, Default)]
pub struct Listings {
    before: HashMap<PathBuf, Listing>,
    now: HashMap<PathBuf, Listing>,
    /// Whether `now` holds a listing read by this audit that the next may use:
    /// only then is the file worth writing again. (A listing that no longer
    /// holds stays in the file until then, harmlessly: its change time is past.)
    changed: bool,
}

impl Listings {
    /// The listings the last audit left in `file`; none when there are none, or
    /// the file cannot be trusted to be one.
    pub fn load(file: &Path) -> Listings {
        Listings {
            before: read_file(file).unwrap_or_default(),
            now: HashMap::new(),
            changed: false,
        }
    }

    /// The remembered listing of `dir`, if it still holds for `meta` (taken now).
    /// Give it back with [`Listings::keep`] once walked.
    pub fn remembered(&mut self, dir: &Path, meta: &fs::Metadata) -> Option<Listing> {
        self.before.remove(dir).filter(|l| l.holds_for(meta))
    }

    /// Keeps `listing` of `dir` for the next audit if it can be trusted then: one
    /// [`Listings::remembered`] gave, or one read when the directory had been
    /// still for [`RACY_MARGIN`].
    pub fn keep(&mut self, dir: PathBuf, listing: Listing, freshness: Freshness) {
        let trusted = match freshness {
            Freshness::Remembered => true,
            Freshness::Untrusted => false,
            Freshness::Read(at) => {
                let still_since = at
                    .checked_sub(RACY_MARGIN)
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or((0, 0), |d| {
                        (
                            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                            i64::from(d.subsec_nanos()),
                        )
                    });
                listing.ctime < still_since
            }
        };
        if trusted {
            self.changed |= freshness != Freshness::Remembered;
            self.now.insert(dir, listing);
        }
    }

    /// Writes this audit's trusted listings to `file` (a new file, renamed over
    /// the old one, so a concurrent audit reads the old or the new whole), if
    /// this audit read a directory whose listing the next may use (a workspace's
    /// root, changed by every run's placeholders, is read every time and never
    /// kept, so it alone does not rewrite the file).
    pub fn save(&self, file: &Path) -> io::Result<()> {
        if !self.changed {
            return Ok(());
        }
        let mut out = Vec::with_capacity(64 * self.now.len());
        out.extend_from_slice(MAGIC);
        for (dir, l) in &self.now {
            put_bytes(&mut out, dir.as_os_str().as_bytes());
            for n in [l.dev, l.ino] {
                out.extend_from_slice(&n.to_le_bytes());
            }
            for n in [l.ctime.0, l.ctime.1] {
                out.extend_from_slice(&n.to_le_bytes());
            }
            let dot_git = match l.dot_git {
                None => 0u8,
                Some(DotGit::Dir) => 1,
                Some(DotGit::Symlink) => 2,
                Some(DotGit::File) => 3,
            };
            out.push(dot_git | (u8::from(l.has_head) << 2));
            out.extend_from_slice(&(l.subdirs.len() as u32).to_le_bytes());
            for name in &l.subdirs {
                put_bytes(&mut out, name.as_bytes());
            }
        }
        let mut name = file.as_os_str().to_os_string();
        name.push(format!(".{}", std::process::id()));
        let temporary = PathBuf::from(name);
        let written = {
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temporary)
                .and_then(|mut f| f.write_all(&out))
        };
        match written.and_then(|()| fs::rename(&temporary, file)) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = fs::remove_file(&temporary);
                Err(e)
            }
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Reads a listings file; `None` if it is not one, whole and of this version.
fn read_file(file: &Path) -> Option<HashMap<PathBuf, Listing>> {
    use std::io::Read;
    let f = fs::File::open(file).ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
        return None;
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(MAX_FILE_BYTES).read_to_end(&mut bytes).ok()?;
    parse(&bytes)
}

/// Parses a listings file's bytes; `None` at the first thing out of place.
fn parse(bytes: &[u8]) -> Option<HashMap<PathBuf, Listing>> {
    let mut r = Reader(bytes.strip_prefix(MAGIC)?);
    let mut map = HashMap::new();
    while !r.0.is_empty() {
        let dir = PathBuf::from(OsStr::from_bytes(r.bytes()?));
        let dev = r.u64()?;
        let ino = r.u64()?;
        let ctime = (r.u64()? as i64, r.u64()? as i64);
        let flags = r.take(1)?[0];
        let dot_git = match flags & 3 {
            0 => None,
            1 => Some(DotGit::Dir),
            2 => Some(DotGit::Symlink),
            _ => Some(DotGit::File),
        };
        let count = r.u32()?;
        // Each name takes at least its four length bytes: a count larger than
        // what is left is a damaged file, not an allocation to make.
        if count as usize > r.0.len() / 4 {
            return None;
        }
        let mut subdirs = Vec::with_capacity(count as usize);
        for _ in 0..count {
            subdirs.push(OsString::from_vec(r.bytes()?.to_vec()));
        }
        map.insert(
            dir,
            Listing {
                dev,
                ino,
                ctime,
                dot_git,
                has_head: flags & 4 != 0,
                subdirs,
            },
        );
    }
    Some(map)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing_of(dir: &Path) -> Listing {
        let meta = fs::symlink_metadata(dir).unwrap();
        Listing::read(&meta, fs::read_dir(dir).unwrap())
    }

    /// Makes `t/d`, reads its listing as if at `read_at`, keeps and saves it;
    /// the directory and the listings file.
    fn saved_listing_of_new_dir(t: &Path, read_at: SystemTime) -> (PathBuf, PathBuf) {
        let dir = t.join("d");
        fs::create_dir(&dir).unwrap();
        let mut listings = Listings::default();
        listings.keep(dir.clone(), listing_of(&dir), Freshness::Read(read_at));
        let file = t.join("listings");
        listings.save(&file).unwrap();
        (dir, file)
    }

    fn remembered_now(file: &Path, dir: &Path) -> Option<Listing> {
        let meta = fs::symlink_metadata(dir).unwrap();
        Listings::load(file).remembered(dir, &meta)
    }

    #[test]
    fn listings_survive_a_save_and_a_load() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("d");
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("HEAD"), "").unwrap();
        std::os::unix::fs::symlink("x", dir.join(".git")).unwrap();
        let mut listings = Listings::default();
        let later = SystemTime::now() + RACY_MARGIN * 2;
        let kept = listing_of(&dir);
        listings.keep(dir.clone(), kept.clone(), Freshness::Read(later));
        assert_eq!(kept.dot_git, Some(DotGit::Symlink));
        assert!(kept.has_head);
        assert_eq!(kept.subdirs, ["sub"]);
        let file = t.path().join("listings");
        listings.save(&file).unwrap();
        let mut loaded = Listings::load(&file);
        let meta = fs::symlink_metadata(&dir).unwrap();
        assert_eq!(loaded.remembered(&dir, &meta), Some(kept));
    }

    #[test]
    fn a_listing_read_just_after_a_change_is_not_kept() {
        let t = tempfile::tempdir().unwrap();
        // Read the moment it changed: a change in the same tick of the coarse
        // clock would not move its change time, so the listing is not kept.
        let (dir, file) = saved_listing_of_new_dir(t.path(), SystemTime::now());
        assert_eq!(remembered_now(&file, &dir), None);
    }

    #[test]
    fn a_changed_directory_is_read_again() {
        let t = tempfile::tempdir().unwrap();
        let later = SystemTime::now() + RACY_MARGIN * 2;
        let (dir, file) = saved_listing_of_new_dir(t.path(), later);
        assert!(remembered_now(&file, &dir).is_some());
        // An entry added after the listing: the change time moved.
        fs::create_dir(dir.join("new")).unwrap();
        assert_eq!(remembered_now(&file, &dir), None);
    }

    #[test]
    fn damaged_files_are_ignored_whole() {
        let t = tempfile::tempdir().unwrap();
        let later = SystemTime::now() + RACY_MARGIN * 2;
        let (dir, file) = saved_listing_of_new_dir(t.path(), later);
        let good = fs::read(&file).unwrap();
        assert!(parse(&good).is_some());
        // Every truncation, and a count that claims more names than there are bytes.
        for n in MAGIC.len() + 1..good.len() {
            assert_eq!(parse(&good[..n]), None, "cut at {n}");
        }
        let mut huge = good.clone();
        let at = huge.len() - 4;
        huge[at..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse(&huge), None);
        assert_eq!(parse(b"cordon-listings 0\n"), None);
        assert_eq!(parse(b""), None);
        fs::write(&file, b"garbage").unwrap();
        assert_eq!(remembered_now(&file, &dir), None);
    }
}
