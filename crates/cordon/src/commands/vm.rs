//! `cordon vm setup|status`: the VM backend's cache of boot files and template
//! snapshots.

use crate::cli::VmAction;
use crate::progress::{Notes, TerminalProgress};
use cordon_backend::{Command, Degraded, Outcome, Program, Terminal};
use cordon_vm::Progress;
use cordon_vm::image::{self, Image, cache};
use cordon_vm::snapshot;
use std::path::Path;

pub fn vm(action: VmAction) -> Result<u8, String> {
    match action {
        VmAction::Setup => setup(),
        VmAction::Status => status(),
    }
}

/// Makes (or finds) the current boot files and the template of the default
/// VM (the user's config's memory and vCPUs), then prunes the others.
fn setup() -> Result<u8, String> {
    let (workspace, policy) = default_policy()?;
    let spec = image::session_spec(kernel_of(&policy)).map_err(|e| e.to_string())?;
    eprintln!(
        "cordon vm setup: the kernel {} and this cordon ({}) into {}",
        spec.kernel.image.display(),
        spec.agent.display(),
        spec.cache.display()
    );
    let progress = TerminalProgress::new("cordon vm setup", Notes::Stdout);
    progress.begin(3);
    progress.step("the kernel and the initramfs");
    let made = image::assemble(&spec).map_err(|e| e.to_string())?;
    for (path, cached) in [
        (&made.vmlinux, made.vmlinux_cached),
        (&made.initramfs, made.initramfs_cached),
    ] {
        let how = if cached { "cached already" } else { "made" };
        progress.println(&format!("{how}: {}", path.display()));
    }
    progress.step("the template snapshot (a boot of the default VM, if missing)");
    let templates = cordon_vm::backend::session_qemu()
        .and_then(|qemu| snapshot::templates_of(&made, &qemu, &spec.cache));
    match &templates {
        Some(prefix) => make_template(&spec.cache, prefix, &progress, &policy)?,
        None => {
            let why = cordon_vm::backend::session_qemu()
                .map(|qemu| cordon_vm::doctor::snapshot_state(&qemu))
                .unwrap_or_else(|| "off: no qemu-system-x86_64 in PATH".into());
            progress.println(&format!("no template: snapshots are {why}"));
        }
    }
    progress.step("removing what this cordon, kernel and QEMU do not use");
    let keep = cache::Current {
        image: Some(&made),
        templates: templates.as_deref(),
    };
    for gone in cache::prune(&spec.cache, keep).map_err(|e| e.to_string())? {
        progress.println(&format!(
            "removed: {} ({}, {}, not used by this cordon, kernel and QEMU)",
            gone.path.display(),
            gone.kind,
            size(gone.bytes)
        ));
    }
    progress.finish();
    drop(workspace);
    Ok(0)
}

/// The policy of a session of the user's defaults (their config, no flags) on
/// an empty workspace of its own, which lives as long as the directory
/// returned: what `vm setup` boots and what `vm status` and `doctor` report on.
pub fn default_policy() -> Result<(EmptyDir, cordon_policy::Policy), String> {
    let workspace = EmptyDir::new()?;
    let inputs = cordon_session::inputs::from_env(
        Some(workspace.0.clone()),
        None,
        crate::cli::flags_from_env()?,
    )
    .map_err(|e| e.to_string())?;
    let policy = cordon_policy::resolve(&inputs).map_err(|e| e.to_string())?;
    Ok((workspace, policy))
}

/// The kernel `policy` names, if it names one.
fn kernel_of(policy: &cordon_policy::Policy) -> Option<&Path> {
    policy.vm_kernel.as_ref().map(|k| k.value.as_path())
}

/// Makes the template of the default VM, as a first run would: a session of
/// the default policy on an empty workspace runs `true`, and boots (and saves
/// the template) only if it is missing.
fn make_template(
    cache_dir: &Path,
    prefix: &str,
    progress: &TerminalProgress,
    policy: &cordon_policy::Policy,
) -> Result<(), String> {
    let templates = |dir: &Path| -> Vec<std::path::PathBuf> {
        cache::entries(dir, cache::Current::default())
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.kind == "template")
            .map(|e| e.path)
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            })
            .collect()
    };
    let before = templates(cache_dir);
    let backend = cordon_vm::VmBackend::default();
    let egress = super::egress::additions(policy)?;
    let session = cordon_session::session::start(&backend, policy, Degraded::default(), egress)
        .map_err(|e| e.to_string())?;
    let command = Command {
        program: Program::Named("true".into()),
        args: Vec::new(),
        cwd: None,
        terminal: Terminal::Inherit,
        timeout: None,
    };
    let outcome =
        cordon_session::run::run(session, command, &mut |_| {}).map_err(|e| e.to_string())?;
    if !matches!(outcome, Outcome::Exited { status: 0, .. }) {
        return Err(format!("the template's VM did not run `true`: {outcome:?}"));
    }
    for path in templates(cache_dir) {
        let how = if before.contains(&path) {
            "cached already"
        } else {
            "made"
        };
        progress.println(&format!("{how}: {}", path.display()));
    }
    Ok(())
}

/// An empty directory of its own under the temporary directory, removed when dropped.
pub struct EmptyDir(std::path::PathBuf);

impl EmptyDir {
    fn new() -> Result<EmptyDir, String> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::env::temp_dir().join(format!("cordon-vm-setup-{}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| {
                format!(
                    "a workspace for the template's boot, {}: {e}",
                    dir.display()
                )
            })?;
        Ok(EmptyDir(dir))
    }
}

impl Drop for EmptyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Lists the cache, marking what the current cordon, kernel and QEMU use
/// (found without making anything: the files are named by a hash of their
/// inputs).
fn status() -> Result<u8, String> {
    let dir = image::cache_dir().map_err(|e| e.to_string())?;
    let (_workspace, policy) = default_policy()?;
    let current = image::session_spec(kernel_of(&policy)).and_then(|spec| image::cached(&spec));
    let in_use: Option<&Image> = current.as_ref().ok().and_then(Option::as_ref);
    let qemu = cordon_vm::backend::session_qemu();
    let templates = in_use
        .zip(qemu.as_ref())
        .and_then(|(image, qemu)| snapshot::templates_of(image, qemu, &dir));
    let keep = cache::Current {
        image: in_use,
        templates: templates.as_deref(),
    };
    let entries = cache::entries(&dir, keep).map_err(|e| e.to_string())?;
    println!("cache: {}", dir.display());
    if entries.is_empty() {
        println!("  empty (cordon vm setup, or a first --backend vm run, fills it)");
    }
    for e in &entries {
        let mark = if e.current { "in use" } else { "old" };
        println!(
            "  {:<7} {:<10} {:>9}  {}",
            mark,
            e.kind,
            size(e.bytes),
            e.path.display()
        );
    }
    let total: u64 = entries.iter().map(|e| e.bytes).sum();
    println!("  total {}", size(total));
    match &current {
        Ok(Some(_)) => {}
        Ok(None) => println!("  this cordon's files are not made yet: cordon vm setup makes them"),
        Err(e) => println!("  which files this cordon would use is unknown: {e}"),
    }
    match &qemu {
        Some(qemu) => println!("  snapshots {}", cordon_vm::doctor::snapshot_state(qemu)),
        None => println!("  snapshots off: no qemu-system-x86_64 in PATH"),
    }
    Ok(0)
}

fn size(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
