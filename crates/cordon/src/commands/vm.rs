//! `cordon vm setup|status`: the VM backend's cache of boot files.

use crate::cli::VmAction;
use cordon_vm::image::{self, cache};
use std::time::Instant;

pub fn vm(action: VmAction) -> Result<u8, String> {
    match action {
        VmAction::Setup => setup(),
        VmAction::Status => status(),
    }
}

/// Makes (or finds) the current boot files, then prunes the others.
fn setup() -> Result<u8, String> {
    let spec = image::session_spec().map_err(|e| e.to_string())?;
    eprintln!(
        "cordon vm setup: the kernel {} and this cordon ({}) into {}",
        spec.kernel.image.display(),
        spec.agent.display(),
        spec.cache.display()
    );
    let start = Instant::now();
    let made = image::assemble(&spec).map_err(|e| e.to_string())?;
    for (path, cached) in [
        (&made.vmlinux, made.vmlinux_cached),
        (&made.initramfs, made.initramfs_cached),
    ] {
        let how = if cached { "cached already" } else { "made" };
        println!("{how}: {}", path.display());
    }
    eprintln!("  in {:.1} s", start.elapsed().as_secs_f64());
    for gone in cache::prune(&spec.cache, &made).map_err(|e| e.to_string())? {
        println!(
            "removed: {} ({}, {}, not used by this cordon and kernel)",
            gone.path.display(),
            gone.kind,
            size(gone.bytes)
        );
    }
    Ok(0)
}

/// Lists the cache, marking what the current cordon and kernel use (found
/// without making anything: the files are named by a hash of their inputs).
fn status() -> Result<u8, String> {
    let dir = image::cache_dir().map_err(|e| e.to_string())?;
    let current = image::session_spec().and_then(|spec| image::cached(&spec));
    let in_use = current.as_ref().ok().and_then(Option::as_ref);
    let entries = cache::entries(&dir, in_use).map_err(|e| e.to_string())?;
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
    Ok(0)
}

fn size(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
