//! The kernel modules cordon's initramfs carries: found in `/lib/modules/<release>`
//! through `modules.dep`, with every dependency, in an order that loads
//! dependencies first; built-in ones (`modules.builtin`) are skipped.

use super::ImageError;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

/// One module: its name (`virtio_mmio`), its file, and the modules it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    pub path: PathBuf,
    pub deps: Vec<String>,
}

/// The name a module file stands for: the file name up to `.ko`, `-` as `_`.
fn module_name(file: &str) -> Option<String> {
    let base = file.rsplit('/').next()?;
    let stem = base.split_once(".ko").map(|(s, _)| s)?;
    Some(stem.replace('-', "_"))
}

/// The modules `names` need from `dir` (`/lib/modules/<release>`), each after its
/// dependencies. A name built into the kernel is left out; one neither built in nor
/// found is an error.
pub fn resolve(dir: &Path, names: &[&str]) -> Result<Vec<Module>, ImageError> {
    let dep_file = dir.join("modules.dep");
    let text =
        std::fs::read_to_string(&dep_file).map_err(|e| ImageError::Io(dep_file.clone(), e))?;
    let mut table: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in text.lines() {
        let Some((file, deps)) = line.split_once(':') else {
            continue;
        };
        let Some(name) = module_name(file) else {
            continue;
        };
        let deps = deps.split_whitespace().filter_map(module_name).collect();
        table.insert(name, (file.to_string(), deps));
    }
    let builtin: BTreeSet<String> = std::fs::read_to_string(dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(module_name)
        .collect();
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for name in names {
        visit(
            &name.replace('-', "_"),
            dir,
            &table,
            &builtin,
            &mut seen,
            &mut out,
            0,
        )?;
    }
    Ok(out)
}

fn visit(
    name: &str,
    dir: &Path,
    table: &BTreeMap<String, (String, Vec<String>)>,
    builtin: &BTreeSet<String>,
    seen: &mut BTreeSet<String>,
    out: &mut Vec<Module>,
    depth: usize,
) -> Result<(), ImageError> {
    if seen.contains(name) {
        return Ok(());
    }
    if depth > 64 {
        return Err(ImageError::Modules(format!(
            "a dependency loop at {name} in modules.dep"
        )));
    }
    let Some((file, deps)) = table.get(name) else {
        if builtin.contains(name) {
            seen.insert(name.to_string());
            return Ok(());
        }
        return Err(ImageError::Modules(format!(
            "module {name} is neither in {}/modules.dep nor built in; the kernel cannot drive cordon's VM devices \
             (install the kernel's modules, or name a kernel that has CONFIG_{} enabled)",
            dir.display(),
            name.to_uppercase()
        )));
    };
    for dep in deps {
        visit(dep, dir, table, builtin, seen, out, depth + 1)?;
    }
    seen.insert(name.to_string());
    out.push(Module {
        name: name.to_string(),
        path: dir.join(file),
        deps: deps
            .iter()
            .filter(|d| !builtin.contains(*d))
            .cloned()
            .collect(),
    });
    Ok(())
}

/// The largest module accepted, uncompressed.
const MAX_MODULE: u64 = 64 << 20;

/// A module file's ELF bytes from its contents `data`: `.ko` as is, `.ko.xz` and
/// `.ko.zst` unpacked (the guest then needs no decompressor).
pub fn unpack(path: &Path, data: Vec<u8>) -> Result<Vec<u8>, ImageError> {
    let bad = |e: String| ImageError::Modules(format!("{}: {e}", path.display()));
    let name = path.to_string_lossy();
    let out = if name.ends_with(".ko") {
        data
    } else if name.ends_with(".ko.xz") {
        let mut out = Vec::new();
        lzma_rust2::XzReader::new(&data[..], false)
            .take(MAX_MODULE + 1)
            .read_to_end(&mut out)
            .map_err(|e| bad(e.to_string()))?;
        out
    } else if name.ends_with(".ko.zst") {
        let mut out = Vec::new();
        let dec = ruzstd::StreamingDecoder::new(&data[..]).map_err(|e| bad(e.to_string()))?;
        dec.take(MAX_MODULE + 1)
            .read_to_end(&mut out)
            .map_err(|e| bad(e.to_string()))?;
        out
    } else {
        return Err(bad(
            "a module compression cordon does not unpack (only .ko, .ko.xz, .ko.zst)".into(),
        ));
    };
    if out.len() as u64 > MAX_MODULE || !out.starts_with(b"\x7fELF") {
        return Err(bad("not an ELF module".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_first_builtins_skipped_missing_named() {
        let dir = std::env::temp_dir().join(format!("cordon-vm-modules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("modules.dep"),
            "kernel/a/virtio_mmio.ko: kernel/a/virtio_ring.ko kernel/a/virtio.ko\n\
             kernel/a/virtio_ring.ko: kernel/a/virtio.ko\n\
             kernel/a/virtio.ko:\n\
             kernel/b/virtio_console.ko.xz: kernel/a/virtio.ko kernel/a/virtio_ring.ko kernel/c/core.ko\n",
        )
        .unwrap();
        std::fs::write(dir.join("modules.builtin"), "kernel/c/core.ko\n").unwrap();
        let got = resolve(&dir, &["virtio-mmio", "virtio_console"]).unwrap();
        let names: Vec<&str> = got.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            ["virtio", "virtio_ring", "virtio_mmio", "virtio_console"]
        );
        assert_eq!(got[3].deps, ["virtio", "virtio_ring"]);
        assert!(got[3].path.ends_with("kernel/b/virtio_console.ko.xz"));
        let err = resolve(&dir, &["vsock"]).unwrap_err().to_string();
        assert!(
            err.contains("vsock") && err.contains("CONFIG_VSOCK"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
