//! cordon's guest agent: the init (PID 1) of cordon's VM, run by the kernel as
//! `/init __vm-agent` from the initramfs cordon assembles.
//!
//! It mounts `/proc`, `/sys` and `/dev`, loads the channel's modules (listed by
//! the host in [`GUEST_MODULE_LIST`], named on the kernel command line by
//! `cordon.load=`), opens the virtio-serial port named [`PORT_NAME`], says
//! [`Message::Ready`], and then runs each [`Message::Exec`] it is sent: the output
//! streamed back in chunks, then the exit status. It reaps every process (orphans
//! included), as an init must. When the channel closes, or anything fails, it
//! powers the VM off: a guest without its agent has nothing to do.
//!
//! The agent trusts nothing it has not been told by the host; the host trusts
//! nothing the agent says (see [`crate::protocol`]).

use crate::image::GUEST_MODULE_LIST;
use crate::protocol::{self, Frame, FrameReader, Message, Status, TtySize};
use cordon_sandbox::confine::seccomp::SeccompPlan;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The hidden subcommand the kernel passes to `/init` (after `--` on its command line).
pub const SUBCOMMAND: &str = "__vm-agent";

/// The name of the virtio-serial port (`virtserialport,name=`).
pub const PORT_NAME: &str = "cordon";

/// The kernel command line option naming the modules to load at boot.
pub const LOAD_OPTION: &str = "cordon.load=";

/// The kernel command line option naming the share that becomes the guest's
/// root, the host's view of the policy: `9p:TAG` or `virtiofs:TAG`
/// (`crate::vm::root_share`).
pub const ROOT_OPTION: &str = "cordon.root=";

/// The 9p mount options of the root share: 9P2000.L over virtio, 256 KiB
/// messages (the default 8 KiB costs a round trip per 8 KiB), the page cache only
/// for mmap (every other read and write goes to the host, which sees it at once
/// and enforces its view on it).
pub const ROOT_MOUNT_OPTIONS: &str = "trans=virtio,version=9p2000.L,msize=262144,cache=mmap";

/// How long the agent waits for its port to appear after loading the modules.
const PORT_WAIT: Duration = Duration::from_secs(20);

/// The agent's entry point (`cordon __vm-agent`). Only ever returns outside a VM
/// (when not PID 1), with status 125.
pub fn main() -> u8 {
    if rustix::process::getpid() != rustix::process::Pid::INIT {
        eprintln!("cordon: __vm-agent is the init of cordon's VM and runs only as PID 1 there");
        return 125;
    }
    if let Err(e) = run() {
        eprintln!("cordon agent: {e}");
    }
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let _ = rustix::system::reboot(rustix::system::RebootCommand::PowerOff);
    // Powering off did not work: leaving PID 1 panics the kernel, which with
    // `panic=-1` and QEMU's -no-reboot ends the VM as well.
    std::process::exit(1)
}

fn run() -> io::Result<()> {
    // SIGCHLD is taken by the reaper with sigwaitinfo: block it before any thread
    // exists, so that every thread inherits the mask (commands are given an
    // empty mask before exec: see `exec`).
    // SAFETY: the set is initialized by sigemptyset/sigaddset before use; blocking
    // a signal in the calling thread has no memory effects.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    mount_basics()?;
    // The guest's only network device; the broker's sockets go on it when the
    // host gives the guest a network (`Network`).
    cordon_sandbox::loopback_up()?;
    let cmdline = std::fs::read_to_string("/proc/cmdline")?;
    load_modules(&cmdline)?;
    let port = open_port()?;
    // Before the share becomes the root: the hierarchy stays the agent's, by
    // descriptor, out of the commands' view.
    let cgroups = match Cgroups::mount() {
        Ok(cgroups) => Some(Arc::new(cgroups)),
        Err(e) => {
            // Commands with a process limit are refused (see `exec`).
            eprintln!("cordon agent: no cgroup hierarchy, so no process limits: {e}");
            None
        }
    };
    // Made now, before a template is saved: a restored clone only moves them.
    std::fs::create_dir_all(COMMAND_BASICS)?;
    mount_command_basics(COMMAND_BASICS)?;
    compile_filters()?;
    if let Some(tag) = (cmdline.split_whitespace()).find_map(|w| w.strip_prefix(ROOT_OPTION)) {
        enter_share(tag)?;
    }
    let reaper = Arc::new(Reaper::default());
    {
        let reaper = reaper.clone();
        std::thread::spawn(move || reaper.run());
    }
    let writer = Arc::new(Mutex::new(port.try_clone()?));
    protocol::write_message(
        &mut *lock(&writer),
        &Message::Ready {
            version: protocol::VERSION,
        },
    )?;
    let sink: Arc<dyn crate::mux::Sink> = writer.clone();
    let mux = crate::mux::Mux::new(sink, crate::mux::Role::Guest);
    let mut reader = FrameReader::new(port, protocol::MAX_FRAME);
    loop {
        match reader.read_frame() {
            Ok(Frame::Message(Message::Exec {
                id,
                argv,
                env,
                cwd,
                uid,
                gid,
                stdin,
                tty,
                control_fd,
                confine,
            })) => {
                reaper.expect(id);
                let input = stdin.then(|| reaper.input(id));
                let (writer, reaper) = (writer.clone(), reaper.clone());
                let control = control_fd.map(|fd| (fd, mux.clone()));
                let request = Request {
                    id,
                    argv,
                    env,
                    cwd,
                    uid,
                    gid,
                    input,
                    tty,
                    control,
                    confine,
                    cgroups: cgroups.clone(),
                };
                std::thread::spawn(move || exec(request, &writer, &reaper));
            }
            Ok(Frame::Message(Message::Signal { id, signal })) => reaper.signal(id, signal),
            Ok(Frame::Stdin { id, data }) => reaper.stdin(id, data),
            Ok(Frame::Message(Message::Resize { id, size })) => reaper.resize(id, size),
            Ok(Frame::Message(Message::Resume {
                seed,
                secs,
                nanos,
                root,
            })) => {
                let error = resume(&seed, secs, nanos, root.as_deref())
                    .err()
                    .map(|e| e.to_string());
                protocol::write_message(&mut *lock(&writer), &Message::Resumed { error })?;
            }
            Ok(Frame::Message(Message::Network {
                ports,
                local_ports,
                proxy_port,
            })) => {
                let spec = crate::net::NetworkSpec {
                    ports,
                    local_ports,
                    proxy_port,
                };
                let error = crate::net::start_guest(&mux, &spec)
                    .err()
                    .map(|e| e.to_string());
                protocol::write_message(&mut *lock(&writer), &Message::NetworkReady { error })?;
            }
            // The host's half of a stream that ended here may trail its end.
            Ok(Frame::Stream { id, data }) => {
                let _ = mux.chunk(id, data);
            }
            Ok(Frame::Message(Message::StreamAck { id })) => {
                let _ = mux.ack(id);
            }
            Ok(other) => {
                eprintln!("cordon agent: ignored an unexpected frame from the host: {other:?}")
            }
            Err(protocol::FrameError::Closed) => return Ok(()),
            Err(e) => return Err(io::Error::other(e.to_string())),
        }
    }
}

/// The agent's own `/proc`, `/sys` and `/dev`.
fn mount_basics() -> io::Result<()> {
    use rustix::mount::MountFlags;
    let plain = MountFlags::NOSUID | MountFlags::NOEXEC;
    for (source, target, fstype, flags, data) in [
        ("proc", "/proc", "proc", plain, ""),
        ("sysfs", "/sys", "sysfs", plain, ""),
        ("devtmpfs", "/dev", "devtmpfs", plain, ""),
        (
            "devpts",
            "/dev/pts",
            "devpts",
            plain,
            "newinstance,ptmxmode=0666,mode=0620",
        ),
        (
            "tmpfs",
            "/dev/shm",
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            "mode=1777",
        ),
    ] {
        mount(source, target, fstype, flags, data)?;
    }
    Ok(())
}

/// Where the command's `/proc`, `/sys` and `/dev` are made at boot, in the
/// agent's own root, to be moved into the share when it becomes the root: a
/// session restored from a template then moves three mounts instead of making
/// some sixty (cold guest code under TCG, after a restore).
const COMMAND_BASICS: &str = "/.cordon-command";

/// The command's `/proc`, `/sys` and `/dev` below `root`, as the OS backend
/// gives its own: `/proc` showing only the command's processes, the `/proc`
/// entries the OS backend makes read-only read-only (sysctls,
/// sysrq, interrupt routing: writable by mode bits alone for a uid 0 without
/// capabilities), `/sys` read-only, and a read-only `/dev` holding only the
/// harmless devices, `/dev/pts` and a writable `/dev/shm`. The command cannot
/// undo them: it runs without capabilities (see [`confine_command`]).
fn mount_command_basics(root: &str) -> io::Result<()> {
    use cordon_sandbox::view::build::{DEVICES, PROC_MASKED, PROC_READ_ONLY, SYS_MASKED};
    use rustix::mount::MountFlags;
    let plain = MountFlags::NOSUID | MountFlags::NOEXEC;
    let proc = format!("{root}/proc");
    // Only the processes the command could trace: its own, not the kernel's
    // threads or the agent (the OS backend's command has a PID namespace of
    // its own).
    mount(
        "proc",
        &proc,
        "proc",
        plain | MountFlags::NODEV,
        "hidepid=ptraceable",
    )?;
    for entry in PROC_READ_ONLY {
        let path = format!("{proc}/{entry}");
        if Path::new(&path).exists() {
            read_only_bind(&path)?;
        }
    }
    let sys = format!("{root}/sys");
    let read_only = plain | MountFlags::NODEV | MountFlags::RDONLY;
    mount("sysfs", &sys, "sysfs", read_only, "")?;
    // The entries the OS backend masks: the guest's hardware and timers are
    // the guest kernel's, but they take writes (`acpi`, `scsi`) or show the
    // agent's work (`timer_list`, `sched_debug`), and one policy hides them.
    let proc_masked = PROC_MASKED.iter().map(|e| format!("{proc}/{e}"));
    let sys_masked = SYS_MASKED.iter().map(|p| format!("{root}{p}"));
    for path in proc_masked.chain(sys_masked) {
        mask(&path)?;
    }
    let dev = format!("{root}/dev");
    mount("tmpfs", &dev, "tmpfs", plain, "mode=0755,size=64k")?;
    for name in DEVICES {
        // The numbers of the agent's own (devtmpfs) node of that name.
        let node = rustix::fs::stat(format!("/dev/{name}").as_str())?;
        let path = format!("{dev}/{name}");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path.as_str(),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            node.st_rdev,
        )?;
        // mknod's mode passes through the umask.
        rustix::fs::chmod(path.as_str(), rustix::fs::Mode::from_raw_mode(0o666))?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        std::os::unix::fs::symlink(target, format!("{dev}/{link}"))?;
    }
    mount(
        "devpts",
        &format!("{dev}/pts"),
        "devpts",
        plain,
        "newinstance,ptmxmode=0666,mode=0620",
    )?;
    mount(
        "tmpfs",
        &format!("{dev}/shm"),
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        "mode=1777",
    )?;
    rustix::mount::mount_remount(dev.as_str(), plain | MountFlags::RDONLY, "")
        .map_err(|e| io::Error::other(format!("making {dev} read-only: {e}")))
}

/// An empty file of the agent's own root, bound read-only over each masked
/// file (the share's root hides the agent's once the command runs).
const EMPTY_FILE: &str = "/.cordon-empty";

/// Covers `path`, if it exists, with something empty and read-only: a
/// read-only tmpfs over a directory, [`EMPTY_FILE`] over a file.
fn mask(path: &str) -> io::Result<()> {
    use rustix::mount::MountFlags;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(()); // not on this kernel
    };
    let fail = |e| io::Error::other(format!("masking {path}: {e}"));
    if meta.is_dir() {
        let flags =
            MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
        return rustix::mount::mount("tmpfs", path, "tmpfs", flags, c"mode=0555,size=4k")
            .map_err(fail);
    }
    if !Path::new(EMPTY_FILE).exists() {
        std::fs::File::create(EMPTY_FILE)
            .map_err(|e| io::Error::other(format!("making {EMPTY_FILE}: {e}")))?;
    }
    rustix::mount::mount_bind(EMPTY_FILE, path).map_err(fail)?;
    read_only_remount(path)
}

/// Makes `path` a read-only bind mount of itself.
fn read_only_bind(path: &str) -> io::Result<()> {
    rustix::mount::mount_bind(path, path)
        .map_err(|e| io::Error::other(format!("making {path} read-only: {e}")))?;
    read_only_remount(path)
}

/// Makes the bind mount at `path` read-only (and nosuid, nodev, noexec).
fn read_only_remount(path: &str) -> io::Result<()> {
    use rustix::mount::MountFlags;
    let fail = |e| io::Error::other(format!("making {path} read-only: {e}"));
    let flags = MountFlags::BIND
        | MountFlags::RDONLY
        | MountFlags::NOSUID
        | MountFlags::NODEV
        | MountFlags::NOEXEC;
    rustix::mount::mount_remount(path, flags, "").map_err(fail)
}

/// Mounts `source` at `target` (made if missing); an existing mount there is fine.
fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: rustix::mount::MountFlags,
    data: &str,
) -> io::Result<()> {
    if let Err(e) = std::fs::create_dir(target) {
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(io::Error::other(format!("making {target}: {e}")));
        }
    }
    let data = std::ffi::CString::new(data).map_err(io::Error::other)?;
    match rustix::mount::mount(source, target, fstype, flags, data.as_c_str()) {
        Ok(()) | Err(rustix::io::Errno::BUSY) => Ok(()),
        Err(e) => Err(io::Error::other(format!("mounting {target}: {e}"))),
    }
}

/// Makes the share `root` (`9p:TAG` or `virtiofs:TAG`: the host's view of the policy) the root of
/// everything the agent runs, as switch_root does: mounted, given the
/// command's `/proc`, `/sys` and `/dev` (made at boot: [`COMMAND_BASICS`]), moved
/// onto `/` and chrooted into. What the guest may see or change of the host is
/// what the host serves, whatever guest root does; the command's confinement
/// keeps it from being guest root in the first place.
fn enter_share(root: &str) -> io::Result<()> {
    use rustix::mount::{MountFlags, mount_move};
    const NEW_ROOT: &str = "/view";
    let (fstype, options, tag) = match root.split_once(':') {
        Some(("9p", tag)) => ("9p", ROOT_MOUNT_OPTIONS, tag),
        Some(("virtiofs", tag)) => ("virtiofs", "", tag),
        _ => {
            return Err(io::Error::other(format!(
                "the root share {root:?} is neither 9p:TAG nor virtiofs:TAG"
            )));
        }
    };
    mount(
        tag,
        NEW_ROOT,
        fstype,
        MountFlags::NOSUID | MountFlags::NODEV,
        options,
    )?;
    for basic in ["proc", "sys", "dev"] {
        let (from, to) = (
            format!("{COMMAND_BASICS}/{basic}"),
            format!("{NEW_ROOT}/{basic}"),
        );
        mount_move(from.as_str(), to.as_str())
            .map_err(|e| io::Error::other(format!("moving {from} to {to}: {e}")))?;
    }
    std::env::set_current_dir(NEW_ROOT)?;
    mount_move(".", "/").map_err(|e| io::Error::other(format!("moving the share onto /: {e}")))?;
    rustix::process::chroot(".")?;
    std::env::set_current_dir("/")
}

/// A clone of a template snapshot made unique and current (see
/// [`Message::Resume`]): `seed` credited to the kernel's RNG, which is then
/// reseeded (crediting alone leaves an initialized CRNG on its old key until its
/// next scheduled reseed), the wall clock set, and the share `root` mounted as
/// the root.
fn resume(seed: &str, secs: i64, nanos: u32, root: Option<&str>) -> io::Result<()> {
    reseed(&decode_hex(seed)?)?;
    let now = libc::timespec {
        tv_sec: secs,
        tv_nsec: nanos.min(999_999_999).into(),
    };
    // SAFETY: `now` is a valid timespec that outlives the call.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &now) } != 0 {
        return Err(io::Error::other(format!(
            "setting the clock: {}",
            io::Error::last_os_error()
        )));
    }
    match root {
        Some(tag) => enter_share(tag),
        None => Ok(()),
    }
}

/// `RNDADDENTROPY` and `RNDRESEEDCRNG` of `<linux/random.h>`.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

/// Credits `bytes` (from the host's RNG) to the kernel's input pool, fully,
/// and makes the CRNG reseed from it now.
fn reseed(bytes: &[u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    if bytes.len() < 32 || bytes.len() > protocol::MAX_SEED {
        return Err(io::Error::other(format!(
            "a seed of {} bytes (32 to {} expected)",
            bytes.len(),
            protocol::MAX_SEED
        )));
    }
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info = Vec::with_capacity(8 + bytes.len());
    info.extend_from_slice(&((bytes.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(bytes.len() as i32).to_ne_bytes());
    info.extend_from_slice(bytes);
    let urandom = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")?;
    let fd = urandom.as_raw_fd();
    // SAFETY: `info` is a rand_pool_info of `bytes.len()` bytes of buffer,
    // alive across the call; RNDRESEEDCRNG takes no argument.
    let failed = unsafe {
        libc::ioctl(fd, RNDADDENTROPY as _, info.as_ptr()) != 0
            || libc::ioctl(fd, RNDRESEEDCRNG as _) != 0
    };
    if failed {
        return Err(io::Error::other(format!(
            "reseeding the RNG: {}",
            io::Error::last_os_error()
        )));
    }
    Ok(())
}

fn decode_hex(text: &str) -> io::Result<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16);
    let bytes = text.as_bytes();
    if bytes.len() % 2 != 0 || bytes.len() > 2 * protocol::MAX_SEED {
        return Err(io::Error::other("a malformed seed"));
    }
    bytes
        .chunks(2)
        .map(|pair| match (digit(pair[0]), digit(pair[1])) {
            (Some(h), Some(l)) => Ok((h * 16 + l) as u8),
            _ => Err(io::Error::other("a malformed seed")),
        })
        .collect()
}

/// Loads the modules `cordon.load=` names, each after the ones it depends on,
/// with the parameters the command line gives it (`virtio_mmio.device=...`, which
/// QEMU's microvm adds), as modprobe would.
fn load_modules(cmdline: &str) -> io::Result<()> {
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    let wanted: Vec<&str> = words
        .iter()
        .filter_map(|w| w.strip_prefix(LOAD_OPTION))
        .flat_map(|v| v.split(','))
        .filter(|v| !v.is_empty())
        .collect();
    let list = match std::fs::read_to_string(Path::new("/").join(GUEST_MODULE_LIST)) {
        Ok(list) => list,
        // A kernel with everything built in: the host put no modules in.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let table: HashMap<&str, (&str, Vec<&str>)> = list
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let name = f.next()?;
            let file = f.next()?;
            let deps = f
                .next()
                .unwrap_or("")
                .split(',')
                .filter(|d| !d.is_empty())
                .collect();
            Some((name, (file, deps)))
        })
        .collect();
    let mut loaded = Vec::new();
    for name in wanted {
        load(name, &table, &words, &mut loaded, 0)?;
    }
    Ok(())
}

fn load<'a>(
    name: &'a str,
    table: &HashMap<&'a str, (&'a str, Vec<&'a str>)>,
    cmdline: &[&str],
    loaded: &mut Vec<&'a str>,
    depth: usize,
) -> io::Result<()> {
    if loaded.contains(&name) || depth > 32 {
        return Ok(());
    }
    // Not in the list: built into this kernel.
    let Some((file, deps)) = table.get(name) else {
        return Ok(());
    };
    for dep in deps {
        load(dep, table, cmdline, loaded, depth + 1)?;
    }
    let prefix = format!("{name}.");
    let params: Vec<&str> = cmdline
        .iter()
        .filter_map(|w| w.strip_prefix(prefix.as_str()))
        .collect();
    let params = std::ffi::CString::new(params.join(" ")).map_err(io::Error::other)?;
    let fd = File::open(file)?;
    match rustix::system::finit_module(&fd, &params, 0) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(io::Error::other(format!("loading module {name}: {e}"))),
    }
    loaded.push(name);
    Ok(())
}

/// Opens the virtio-serial port named [`PORT_NAME`] (`/dev/vportNpM`; there is no
/// udev to make `/dev/virtio-ports/cordon`), waiting for it to appear.
fn open_port() -> io::Result<File> {
    let start = Instant::now();
    loop {
        if let Some(dev) = find_port()? {
            return std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&dev);
        }
        if start.elapsed() > PORT_WAIT {
            return Err(io::Error::other(format!(
                "no virtio-serial port named {PORT_NAME} after {} s",
                PORT_WAIT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn find_port() -> io::Result<Option<PathBuf>> {
    let dir = match std::fs::read_dir("/sys/class/virtio-ports") {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    for entry in dir {
        let entry = entry?;
        let name = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if name.trim_end() == PORT_NAME {
            let dev = Path::new("/dev").join(entry.file_name());
            if dev.exists() {
                return Ok(Some(dev));
            }
        }
    }
    Ok(None)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One `Exec` request.
struct Request {
    id: u32,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    cwd: String,
    uid: u32,
    gid: u32,
    /// The stdin chunks the host sends, when it sends them.
    input: Option<Receiver<Vec<u8>>>,
    /// A pseudo-terminal of this size instead of pipes.
    tty: Option<TtySize>,
    /// A stream to the host's control endpoint at this descriptor, opened
    /// through the channel's streams.
    control: Option<(i32, Arc<crate::mux::Mux>)>,
    /// How to confine the command (see [`protocol::Confine`]).
    confine: Option<protocol::Confine>,
    /// The guest's cgroup hierarchy, if it has one.
    cgroups: Option<Arc<Cgroups>>,
}

/// The guest's cgroup v2 hierarchy, held by a descriptor of its root: a
/// command with a process or memory limit gets a cgroup of its own below it
/// (the guest's processes and memory are the guest kernel's to count, not
/// the host's). `memory`: whether the memory controller is enabled.
struct Cgroups {
    root: OwnedFd,
    memory: bool,
}

impl Cgroups {
    /// Mounts cgroup2 at `/sys/fs/cgroup` (the agent's own `/sys`) and enables
    /// the pids and memory controllers below its root.
    fn mount() -> io::Result<Cgroups> {
        use rustix::fs::{Mode, OFlags};
        use rustix::mount::MountFlags;
        const AT: &str = "/sys/fs/cgroup";
        let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
        mount("cgroup2", AT, "cgroup2", flags, "")?;
        let root = rustix::fs::open(
            AT,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        write_file_at(&root, "cgroup.subtree_control", b"+pids")?;
        // A kernel without it refuses commands with a memory limit.
        let memory = write_file_at(&root, "cgroup.subtree_control", b"+memory").is_ok();
        Ok(Cgroups { root, memory })
    }

    /// A cgroup of its own for command `id`, of at most `pids` processes and
    /// threads and `memory` bytes (no swap); the command joins it between
    /// fork and exec (see [`CommandCgroup::procs`]).
    fn limit(
        self: &Arc<Self>,
        id: u32,
        pids: Option<u64>,
        memory: Option<u64>,
    ) -> io::Result<CommandCgroup> {
        use rustix::fs::{Mode, OFlags};
        if memory.is_some() && !self.memory {
            return Err(io::Error::other(
                "the guest kernel has no memory controller to hold the memory limit (--memory)",
            ));
        }
        let name = format!("command-{id}");
        match rustix::fs::mkdirat(&self.root, name.as_str(), Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(io::Error::other(format!("making its cgroup: {e}"))),
        }
        let dir = rustix::fs::openat(
            &self.root,
            name.as_str(),
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let mut group = CommandCgroup {
            cgroups: self.clone(),
            name,
            dir: dir.try_clone()?,
            procs: None,
        };
        if let Some(max) = pids {
            write_file_at(&dir, "pids.max", max.to_string().as_bytes())?;
        }
        if let Some(max) = memory {
            write_file_at(&dir, "memory.max", max.to_string().as_bytes())?;
            // Absent without swap support, and then there is none to use.
            let _ = write_file_at(&dir, "memory.swap.max", b"0");
        }
        group.procs = Some(rustix::fs::openat(
            &dir,
            "cgroup.procs",
            OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?);
        Ok(group)
    }
}

/// A command's cgroup, removed when dropped (once the command ended; a
/// process it left behind keeps it, and its limit, until it ends too).
struct CommandCgroup {
    cgroups: Arc<Cgroups>,
    name: String,
    /// The cgroup's directory.
    dir: OwnedFd,
    /// Its `cgroup.procs`, opened by the agent: writing `0` to it moves the
    /// writer in, which the command does after std's setuid (cgroup v2 checks
    /// the opener's credentials).
    procs: Option<OwnedFd>,
}

impl Drop for CommandCgroup {
    fn drop(&mut self) {
        self.procs = None;
        let _ = rustix::fs::unlinkat(
            &self.cgroups.root,
            self.name.as_str(),
            rustix::fs::AtFlags::REMOVEDIR,
        );
    }
}

impl CommandCgroup {
    /// How many of its processes the kernel killed for its memory limit
    /// (`oom_kill` of `memory.events`; 0 without the memory controller).
    fn oom_kills(&self) -> u32 {
        use rustix::fs::{Mode, OFlags};
        let Ok(file) = rustix::fs::openat(
            &self.dir,
            "memory.events",
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            return 0;
        };
        let mut text = String::new();
        let _ = File::from(file).read_to_string(&mut text);
        cordon_sandbox::limits::oom_kill_count(&text)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0)
    }
}

/// Writes `data` to the file `name` of directory `dir` (a cgroup's control file).
fn write_file_at(dir: &OwnedFd, name: &str, data: &[u8]) -> io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    let file = rustix::fs::openat(dir, name, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| io::Error::other(format!("opening {name}: {e}")))?;
    rustix::io::write(&file, data).map_err(|e| io::Error::other(format!("writing {name}: {e}")))?;
    Ok(())
}

/// The commands' seccomp filters, one per combination of the policy's
/// switches (`nested_userns`, `unix_sockets`), compiled at boot: before a
/// template is saved, so a restored session's first command does not compile
/// its filter with code TCG must translate again.
static FILTERS: std::sync::OnceLock<[SeccompPlan; 4]> = std::sync::OnceLock::new();

/// Index into [`FILTERS`] of a combination of the switches.
fn filter_index(nested_userns: bool, unix_sockets: bool) -> usize {
    usize::from(nested_userns) << 1 | usize::from(unix_sockets)
}

/// Compiles [`FILTERS`].
fn compile_filters() -> io::Result<()> {
    let plan = |index: usize| {
        let switch = |value| cordon_policy::Sourced::new(value, cordon_policy::Origin::Default);
        let switches = cordon_policy::Switches {
            nested_userns: switch(index & 2 != 0),
            unix_sockets: switch(index & 1 != 0),
        };
        SeccompPlan::build(&switches, false).map_err(|e| io::Error::other(e.to_string()))
    };
    let plans = [plan(0)?, plan(1)?, plan(2)?, plan(3)?];
    let _ = FILTERS.set(plans);
    Ok(())
}

/// Confines the command as the OS backend confines its own (see
/// [`protocol::Confine`]): the filter was compiled at boot
/// ([`compile_filters`]), and the child applies it just before exec.
fn confine_command(
    command: &mut Command,
    confine: protocol::Confine,
    (uid, gid): (u32, u32),
    cgroup: Option<&CommandCgroup>,
) -> io::Result<()> {
    use std::os::unix::process::CommandExt;
    let procs = match cgroup.and_then(|c| c.procs.as_ref()) {
        Some(procs) => Some(procs.try_clone()?),
        None => None,
    };
    let index = filter_index(confine.nested_userns, confine.unix_sockets);
    let seccomp = FILTERS
        .get()
        .map(|plans| &plans[index])
        .ok_or_else(|| io::Error::other("the seccomp filters were not compiled"))?;
    use rustix::process::{Gid, Uid};
    // SAFETY: the closure runs in the forked child before exec and only makes
    // system calls (write, prctl, setgroups, setresgid, setresuid, capset,
    // seccomp) on what was made before the fork;
    // it allocates nothing and takes no lock.
    unsafe {
        command.pre_exec(move || {
            // First: the process limit holds from here on.
            if let Some(procs) = &procs {
                rustix::io::write(procs, b"0")?;
            }
            // The bounding set while still root (std's own switch of uid
            // would come before this and leave it full), then the user: a
            // uid other than 0 loses the other sets with the switch; guest
            // root gives them up as the OS backend's supervisor does.
            cordon_sandbox::confine::caps::drop_bounding_set();
            rustix::thread::set_thread_groups(&[])?;
            rustix::thread::set_thread_res_gid(
                Gid::from_raw(gid),
                Gid::from_raw(gid),
                Gid::from_raw(gid),
            )?;
            rustix::thread::set_thread_res_uid(
                Uid::from_raw(uid),
                Uid::from_raw(uid),
                Uid::from_raw(uid),
            )?;
            if uid == 0 {
                cordon_sandbox::confine::caps::drop_all()?;
            }
            rustix::thread::set_no_new_privs(true)?;
            seccomp.install()
        });
    }
    Ok(())
}

/// Runs one command: `Started` (or `Failed`), its output, then `Exited`.
fn exec(request: Request, writer: &Arc<Mutex<File>>, reaper: &Reaper) {
    use std::os::unix::process::CommandExt;
    let Request {
        id,
        argv,
        env,
        cwd,
        uid,
        gid,
        input,
        tty,
        control,
        confine,
        cgroups,
    } = request;
    let send = |m: Message| {
        if !matches!(m, Message::Started { .. }) {
            reaper.forget(id);
        }
        let _ = protocol::write_message(&mut *lock(writer), &m);
    };
    let Some((program, args)) = argv.split_first() else {
        return send(Message::Failed {
            id,
            error: "an empty argv".into(),
            status: 125,
        });
    };
    // Checked first: std's spawn reports a missing directory as it reports a
    // missing program.
    if !Path::new(&cwd).is_dir() {
        return send(Message::Failed {
            id,
            error: format!("the working directory {cwd} is not a directory in the VM"),
            status: 125,
        });
    }
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(env)
        .current_dir(&cwd)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The agent keeps SIGCHLD blocked in every thread (its reaper takes it
    // with sigwaitinfo), and std's fork does not give the child an empty mask:
    // a command would start with SIGCHLD blocked, and a shell that waits for
    // a background job with sigsuspend (dash's `cmd & wait`) would never wake.
    // SAFETY: runs in the child between fork and exec; sigprocmask on a set
    // made here, on the stack: no allocation, no lock.
    unsafe {
        command.pre_exec(|| {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            if libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let tty = match tty
        .map(|size| open_tty(size, uid, gid, &mut command))
        .transpose()
    {
        Ok(tty) => tty,
        Err(e) => {
            return send(Message::Failed {
                id,
                error: format!("cannot open a pseudo-terminal in the VM: {e}"),
                status: 125,
            });
        }
    };
    let control = match control.map(|(fd, mux)| control_stream(fd, &mut command).map(|s| (s, mux)))
    {
        Some(Err(e)) => {
            return send(Message::Failed {
                id,
                error: format!("cannot make the control stream in the VM: {e}"),
                status: 125,
            });
        }
        Some(Ok(stream)) => Some(stream),
        None => None,
    };
    // Last, so that the terminal's and the control stream's steps above keep
    // the agent's privileges: the command's own confinement.
    // Kept until the command ended (removed then).
    let mut held_cgroup = None;
    if confine.is_none() {
        // Unconfined: std switches the user (see `confine_command` otherwise).
        command.uid(uid).gid(gid);
    }
    if let Some(confine) = confine {
        let limited = confine.pids.is_some() || confine.memory.is_some();
        let cgroup = match &cgroups {
            _ if !limited => Ok(None),
            Some(cgroups) => cgroups.limit(id, confine.pids, confine.memory).map(Some),
            None => Err(io::Error::other(
                "the guest has no cgroup hierarchy to hold the limits (--pids, --memory)",
            )),
        };
        let confined = cgroup.and_then(|cgroup| {
            confine_command(&mut command, confine, (uid, gid), cgroup.as_ref())?;
            Ok(cgroup)
        });
        match confined {
            Ok(cgroup) => held_cgroup = cgroup,
            Err(e) => {
                return send(Message::Failed {
                    id,
                    error: format!("cannot confine the command in the VM: {e}"),
                    status: 125,
                });
            }
        }
    }
    // Last of the steps in the child: a terminal's command runs below a
    // session leader of its own (see `lead_the_session`).
    if tty.is_some() {
        // SAFETY: runs in the forked child after every other step; makes only
        // system calls (see `lead_the_session`), allocates nothing, takes no lock.
        unsafe { command.pre_exec(lead_the_session) };
    }
    // Spawned under the reaper's lock: the reaper cannot take the status before
    // the pid is registered, nor reap the child std's spawn waits for itself when
    // exec fails.
    let child = {
        let mut waiting = lock(&reaper.state);
        match command.spawn() {
            Ok(child) => {
                waiting.insert(child.id() as i32, None);
                // Registered before the reaper can see it stop.
                if tty.is_some() {
                    reaper.stoppable(id, child.id() as i32, writer.clone());
                }
                child
            }
            Err(e) => {
                drop(waiting);
                // The shell's statuses: not found, found but not executable.
                let status = if e.kind() == io::ErrorKind::NotFound {
                    127
                } else {
                    126
                };
                return send(Message::Failed {
                    id,
                    error: format!("{program}: {e}"),
                    status,
                });
            }
        }
    };
    // The slave's copies held by the command's description go: the master
    // reads its end once the command and what it started have closed theirs.
    // So does the command's end of its control stream.
    drop(command);
    if let Some((ours, mux)) = control {
        if let Ok(local) = crate::mux::Local::new(ours) {
            let _ = mux.open_next(local, Vec::new(), true);
        }
    }
    let pid = child.id();
    reaper.started(id, pid as i32);
    send(Message::Started { id, pid });
    reaper.announced(id);
    let mut child = child;
    let mut terminal_out = None;
    if let Some(Tty {
        master,
        output,
        input: to,
    }) = tty
    {
        // The terminal is the command's stdin and its only output.
        reaper.with_tty(id, master);
        terminal_out = Some(output);
        if let Some(input) = input {
            let writer = writer.clone();
            std::thread::spawn(move || feed(input, to, id, &writer));
        }
    } else if let (Some(input), Some(to)) = (input, child.stdin.take()) {
        // Not waited for: a command may end without reading its input.
        let writer = writer.clone();
        std::thread::spawn(move || feed(input, to, id, &writer));
    }
    // Every output chunk goes out before `Exited`: the pumps end when the pipes
    // close (the command and whatever inherited them have exited).
    std::thread::scope(|s| {
        if let Some(out) = terminal_out {
            s.spawn(move || pump(out, protocol::KIND_STDOUT, id, writer));
        }
        if let Some(out) = child.stdout {
            s.spawn(move || pump(out, protocol::KIND_STDOUT, id, writer));
        }
        if let Some(err) = child.stderr {
            s.spawn(move || pump(err, protocol::KIND_STDERR, id, writer));
        }
    });
    // No signal for it after its end: its pid may be another process's soon.
    reaper.forget(id);
    let status = reaper.wait(pid as i32);
    let oom_kills = held_cgroup.as_ref().map_or(0, CommandCgroup::oom_kills);
    send(Message::Exited {
        id,
        status,
        oom_kills,
    });
}

/// A stream for `command` at its descriptor `fd` (one end of a socket pair,
/// moved there between fork and exec); returns the agent's end.
fn control_stream(fd: i32, command: &mut Command) -> io::Result<std::os::unix::net::UnixStream> {
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::process::CommandExt;
    if fd < 3 {
        return Err(io::Error::other(format!(
            "descriptor {fd} is one of the command's standard streams"
        )));
    }
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let theirs = OwnedFd::from(theirs);
    let raw = theirs.as_raw_fd();
    // SAFETY: runs in the child between fork and exec, and makes only dup2
    // and fcntl system calls on descriptors it owns (`theirs`, kept alive by
    // the closure until the command's description is dropped).
    unsafe {
        command.pre_exec(move || {
            let _keep = &theirs;
            let to = std::os::fd::OwnedFd::from_raw_fd(fd);
            let mut to = std::mem::ManuallyDrop::new(to);
            if raw == fd {
                rustix::io::fcntl_setfd(&*to, rustix::io::FdFlags::empty())?;
            } else {
                rustix::io::dup2(std::os::fd::BorrowedFd::borrow_raw(raw), &mut to)?;
            }
            Ok(())
        });
    }
    Ok(ours)
}

/// A command's pseudo-terminal, on the agent's side.
struct Tty {
    /// For resizes.
    master: Arc<OwnedFd>,
    /// The command's output, read here.
    output: File,
    /// The command's input, written here.
    input: File,
}

/// Opens a pseudo-terminal of `size` for `command`: the slave (owned by the
/// command's user, as a login's is) on its stdin, stdout and stderr and its new
/// session's controlling terminal. Returns the master's ends.
fn open_tty(size: TtySize, uid: u32, gid: u32, command: &mut Command) -> io::Result<Tty> {
    use rustix::pty::OpenptFlags;
    use std::os::unix::process::CommandExt;
    let master =
        rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    rustix::pty::unlockpt(&master)?;
    let path = rustix::pty::ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(
        path.as_c_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    rustix::fs::fchown(
        &slave,
        Some(rustix::process::Uid::from_raw(uid)),
        Some(rustix::process::Gid::from_raw(gid)),
    )?;
    rustix::termios::tcsetwinsize(
        &master,
        rustix::termios::Winsize {
            ws_row: size.rows,
            ws_col: size.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )?;
    command
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    // SAFETY: runs in the child between fork and exec, and makes two system
    // calls (setsid, ioctl), no allocation and no lock.
    unsafe {
        command.pre_exec(|| {
            rustix::process::setsid()?;
            rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())?;
            Ok(())
        });
    }
    Ok(Tty {
        output: File::from(master.try_clone()?),
        input: File::from(master.try_clone()?),
        master: Arc::new(master),
    })
}

/// The last step in the child of a command with a terminal: it forks, and the
/// child goes on to exec the command in a process group of its own, the
/// terminal's foreground group; this process stays as the session's leader
/// until the command ends, and never returns.
///
/// Why: the session leader's group is orphaned (its parent, the agent, is in
/// another session), and the kernel discards a stop signal to an orphaned
/// group; pi suspends with `kill(0, SIGTSTP)` and would hang. A group whose
/// parent is in the same session is not orphaned, so the command stops as it
/// would in a login's shell. (The OS backend's supervisor plays this part on
/// the host; see `cordon_sandbox`'s terminal.rs.)
///
/// The leader passes every signal it gets (the host's, through the agent) to
/// the command's group; when the command stops it stops itself (SIGSTOP),
/// which the agent reports to the host, and when continued it continues the
/// command's group; it ends as the command ended. Its descriptors beyond the
/// terminal are closed, std's exec-error pipe among them, so the agent learns
/// of the command's exec as without the leader.
///
/// Only system calls after the fork, made directly: this runs in the child of
/// a multithreaded process (glibc's `fork` and `raise` would take locks or use
/// the forking thread's cached identity).
fn lead_the_session() -> io::Result<()> {
    // SAFETY: sigset_t is plain bits; the sets are locals.
    let (all, mut before) = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        (all, std::mem::zeroed::<libc::sigset_t>())
    };
    // Every signal blocked before the fork, to be taken with sigwaitinfo: none
    // is lost between the fork and the loop.
    // SAFETY: both sets are valid locals.
    if unsafe { libc::sigprocmask(libc::SIG_SETMASK, &all, &mut before) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a plain fork by the system call (no atfork handlers, no locks);
    // both sides make only system calls until the command's exec.
    let forked = unsafe { libc::syscall(libc::SYS_fork) };
    if forked < 0 {
        return Err(io::Error::last_os_error());
    }
    if forked == 0 {
        // The command: its own group, the terminal's foreground (SIGTTOU is
        // blocked, so a background group may take it), then the mask it had.
        rustix::process::setpgid(None, None)?;
        rustix::termios::tcsetpgrp(rustix::stdio::stdin(), rustix::process::getpid())?;
        // SAFETY: `before` is the mask saved above.
        if unsafe { libc::sigprocmask(libc::SIG_SETMASK, &before, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        return Ok(());
    }
    let command = forked as i32;
    // Both sides set the group, so a signal passed on finds it whatever ran first.
    let group = rustix::process::Pid::from_raw(command);
    let _ = rustix::process::setpgid(group, group);
    // SAFETY: closes descriptors 3 and up of this process, which uses none.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    loop {
        // SAFETY: waits for one of the blocked signals; no info wanted.
        let signal = unsafe { libc::sigwaitinfo(&all, std::ptr::null_mut()) };
        match signal {
            libc::SIGCHLD => {
                let mut status = 0;
                // SAFETY: waits for the command only, without blocking.
                while unsafe {
                    libc::waitpid(command, &mut status, libc::WNOHANG | libc::WUNTRACED)
                } == command
                {
                    if libc::WIFSTOPPED(status) {
                        // SAFETY: stops this process until the host continues it.
                        unsafe { libc::syscall(libc::SYS_kill, libc::getpid(), libc::SIGSTOP) };
                    } else if libc::WIFEXITED(status) {
                        // SAFETY: ends this process, as the command ended.
                        unsafe { libc::_exit(libc::WEXITSTATUS(status)) };
                    } else if libc::WIFSIGNALED(status) {
                        end_by_signal(libc::WTERMSIG(status));
                    }
                }
            }
            // Continued (by the host through the agent): so is the command.
            libc::SIGCONT => {
                // SAFETY: signals the command's group.
                unsafe { libc::kill(-command, libc::SIGCONT) };
            }
            signal if signal > 0 => {
                // SAFETY: signals the command's group.
                unsafe { libc::kill(-command, signal) };
            }
            _ => {}
        }
    }
}

/// Ends the session leader by `signal`, as the command ended (else with the
/// shell's 128 + signal).
fn end_by_signal(signal: i32) -> ! {
    // SAFETY: the default action for `signal`, unblocked, sent to this process;
    // if it does not end it, _exit does.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        let mut only: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut only);
        libc::sigaddset(&mut only, signal);
        libc::sigprocmask(libc::SIG_UNBLOCK, &only, std::ptr::null_mut());
        libc::syscall(libc::SYS_kill, libc::getpid(), signal);
        libc::_exit(128 + signal)
    }
}

/// Writes the host's stdin chunks to the command, acknowledging each (written,
/// or dropped once the command closed its stdin) so the host sends the next;
/// an empty chunk, or the request's end, closes the command's stdin.
fn feed(input: Receiver<Vec<u8>>, mut to: impl io::Write, id: u32, writer: &Mutex<File>) {
    let mut open = true;
    for chunk in input {
        if chunk.is_empty() {
            return;
        }
        open = open && to.write_all(&chunk).is_ok();
        if protocol::write_message(&mut *lock(writer), &Message::StdinAck { id }).is_err() {
            return;
        }
    }
}

/// Sends what `from` yields as data frames of `kind`, a chunk at a time: when the
/// host reads slowly, the write blocks and so does the command (no buffering here).
fn pump(mut from: impl Read, kind: u8, id: u32, writer: &Mutex<File>) {
    let mut buf = vec![0u8; protocol::DATA_CHUNK];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if protocol::write_data(&mut *lock(writer), kind, id, &buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// The channel's writing end, shared by the agent's threads.
type Writer = Arc<Mutex<File>>;

/// Reaps every child of PID 1 and hands the status of registered ones to whoever
/// waits for them; orphans' statuses are dropped.
#[derive(Default)]
struct Reaper {
    state: Mutex<HashMap<i32, Option<Status>>>,
    done: Condvar,
    /// Where the host's signals for each open request go.
    targets: Mutex<HashMap<u32, Target>>,
    /// Where the host's stdin chunks for each open request go (at most
    /// [`protocol::STDIN_WINDOW`] unacknowledged, so never more are held).
    inputs: Mutex<HashMap<u32, SyncSender<Vec<u8>>>>,
    /// The terminal (its master) of each open request that has one.
    ttys: Mutex<HashMap<u32, Arc<OwnedFd>>>,
    /// The session leaders of the requests with a terminal, by pid.
    stoppable: Mutex<HashMap<i32, Stoppable>>,
}

/// A request with a terminal, whose stops are reported to the host: only
/// after its `Started` (a command may stop at once, before the request's
/// thread has said it started).
struct Stoppable {
    id: u32,
    writer: Writer,
    /// `Started` was sent.
    announced: bool,
    /// It stopped before that: `Stopped` goes out right after `Started`.
    pending: bool,
}

/// The process a request's signals go to.
enum Target {
    /// Not started yet: the signals to send once it has.
    Pending(Vec<i32>),
    Running(i32),
}

/// Sends `signal` (1 to 64; anything else is ignored) to `pid`.
fn kill(pid: i32, signal: i32) {
    if (1..=64).contains(&signal) {
        // SAFETY: kill(2) takes no pointers; `pid` is positive (a child's).
        unsafe { libc::kill(pid, signal) };
    }
}

impl Reaper {
    /// Request `id` is about to start.
    fn expect(&self, id: u32) {
        lock(&self.targets).insert(id, Target::Pending(Vec::new()));
    }

    /// The host's `signal` for request `id`: sent now, or once it started.
    fn signal(&self, id: u32, signal: i32) {
        match lock(&self.targets).get_mut(&id) {
            Some(Target::Pending(signals)) if signals.len() < 64 => signals.push(signal),
            Some(Target::Running(pid)) => kill(*pid, signal),
            _ => {}
        }
    }

    /// Request `id` started as `pid`: the signals that came before go to it.
    fn started(&self, id: u32, pid: i32) {
        let mut targets = lock(&self.targets);
        if let Some(Target::Pending(signals)) = targets.insert(id, Target::Running(pid)) {
            for signal in signals {
                kill(pid, signal);
            }
        }
    }

    /// Request `id` ended (or never started): its signals and input go nowhere.
    fn forget(&self, id: u32) {
        lock(&self.targets).remove(&id);
        lock(&self.inputs).remove(&id);
        lock(&self.ttys).remove(&id);
        lock(&self.stoppable).retain(|_, s| s.id != id);
    }

    /// Request `id`'s command has the terminal whose master is `master`.
    fn with_tty(&self, id: u32, master: Arc<OwnedFd>) {
        lock(&self.ttys).insert(id, master);
    }

    /// Request `id`'s command has a terminal and `pid` leads its session: its
    /// stops are reported on `writer`.
    fn stoppable(&self, id: u32, pid: i32, writer: Writer) {
        let stoppable = Stoppable {
            id,
            writer,
            announced: false,
            pending: false,
        };
        lock(&self.stoppable).insert(pid, stoppable);
    }

    /// Request `id`'s `Started` was sent: a stop that came first goes now.
    fn announced(&self, id: u32) {
        let mut all = lock(&self.stoppable);
        if let Some(s) = all.values_mut().find(|s| s.id == id) {
            s.announced = true;
            if std::mem::take(&mut s.pending) {
                let _ = protocol::write_message(&mut *lock(&s.writer), &Message::Stopped { id });
            }
        }
    }

    /// Child `pid` stopped: a terminal's command is reported to the host (once
    /// its `Started` was).
    fn stopped(&self, pid: i32) {
        let mut all = lock(&self.stoppable);
        let Some(s) = all.get_mut(&pid) else {
            return;
        };
        if s.announced {
            let id = s.id;
            let _ = protocol::write_message(&mut *lock(&s.writer), &Message::Stopped { id });
        } else {
            s.pending = true;
        }
    }

    /// The host's terminal changed size: so does request `id`'s (the kernel
    /// sends SIGWINCH to its foreground group).
    fn resize(&self, id: u32, size: TtySize) {
        if let Some(master) = lock(&self.ttys).get(&id) {
            let _ = rustix::termios::tcsetwinsize(
                &**master,
                rustix::termios::Winsize {
                    ws_row: size.rows,
                    ws_col: size.cols,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                },
            );
        }
    }

    /// Where request `id`'s stdin chunks will be found.
    fn input(&self, id: u32) -> Receiver<Vec<u8>> {
        // One more than the window: the empty chunk that ends the input is not
        // acknowledged.
        let (tx, rx) = std::sync::mpsc::sync_channel(protocol::STDIN_WINDOW as usize + 1);
        lock(&self.inputs).insert(id, tx);
        rx
    }

    /// A stdin chunk for request `id`; never blocks the channel (a host that
    /// overruns its window loses the chunk).
    fn stdin(&self, id: u32, data: Vec<u8>) {
        let mut inputs = lock(&self.inputs);
        if let Some(tx) = inputs.get(&id) {
            let end = data.is_empty();
            if tx.try_send(data).is_err() || end {
                inputs.remove(&id);
            }
        }
    }

    fn run(&self) {
        // SAFETY: a set with SIGCHLD, blocked in every thread since `run` began.
        let set = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGCHLD);
            set
        };
        loop {
            // SAFETY: waits for the blocked SIGCHLD; the info pointer may be null.
            unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
            // Reaped under the lock that spawns hold: a child std's spawn reaps
            // itself (when exec fails) is never taken from under it.
            // Any child (waitpid(-1)): rustix's `waitpid(None)` is waitpid(0),
            // the agent's own process group only, which would never reap a
            // command in a session or group of its own (a terminal's, `setsid`).
            // Stops too: a terminal's command that stopped is reported (once the
            // lock is given up: the channel may be slow to take the message).
            let mut stopped = Vec::new();
            let mut state = lock(&self.state);
            let options =
                rustix::process::WaitOptions::NOHANG | rustix::process::WaitOptions::UNTRACED;
            while let Ok(Some((pid, st))) = rustix::process::wait(options) {
                let pid = pid.as_raw_nonzero().get();
                let status = match (st.exit_status(), st.terminating_signal()) {
                    (Some(code), _) => Status::Code(code),
                    (None, Some(sig)) => Status::Signal(sig),
                    _ if st.stopped() => {
                        stopped.push(pid);
                        continue;
                    }
                    _ => continue,
                };
                if let Some(slot) = state.get_mut(&pid) {
                    *slot = Some(status);
                    self.done.notify_all();
                }
            }
            drop(state);
            for pid in stopped {
                self.stopped(pid);
            }
        }
    }

    fn wait(&self, pid: i32) -> Status {
        let mut state = lock(&self.state);
        loop {
            if let Some(Some(status)) = state.get(&pid) {
                let status = *status;
                state.remove(&pid);
                return status;
            }
            state = self.done.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_hex_and_bounded() {
        assert_eq!(decode_hex("00ff7a").unwrap(), [0, 255, 0x7a]);
        for bad in ["0", "zz", "0g", &"00".repeat(protocol::MAX_SEED + 1)] {
            assert!(decode_hex(bad).is_err(), "{bad}");
        }
        // Too short to be worth crediting, checked before any device is opened.
        assert!(reseed(&[0; 16]).is_err());
    }
}
