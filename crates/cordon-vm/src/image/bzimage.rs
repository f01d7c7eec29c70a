//! The uncompressed kernel (vmlinux) inside an x86 bzImage, and the checks that
//! QEMU can boot it directly by PVH.
//!
//! A bzImage is real-mode setup code followed by a small decompressor and the
//! compressed kernel; its boot header (Documentation/arch/x86/boot.rst) says where
//! that payload is: `payload_offset` and `payload_length`, counted from the start
//! of the protected-mode code. The payload is the compressed ELF vmlinux followed by
//! its uncompressed size (4 bytes, little endian). Booting the ELF by PVH skips the
//! decompressor, which costs seconds under TCG.

use super::ImageError;
use std::io::Read;

const XZ_MAGIC: &[u8] = b"\xfd7zXZ\0";
const ZSTD_MAGIC: &[u8] = b"\x28\xb5\x2f\xfd";
const ELF_MAGIC: &[u8] = b"\x7fELF";
/// The largest vmlinux accepted (a Debian kernel is about 65 MiB).
const MAX_VMLINUX: usize = 512 << 20;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Whether `image` has the boot header of a bzImage ("HdrS").
pub fn is_bzimage(image: &[u8]) -> bool {
    image.get(0x202..0x206) == Some(b"HdrS")
}

/// The kernel release a bzImage names in its header (`6.1.0-57-amd64`), if any.
pub fn kernel_release(image: &[u8]) -> Option<String> {
    if !is_bzimage(image) {
        return None;
    }
    let at = usize::from(u16_at(image, 0x20e)?) + 0x200;
    let tail = image.get(at..)?;
    let end = tail.iter().take(256).position(|&b| b == 0)?;
    let text = std::str::from_utf8(&tail[..end]).ok()?;
    text.split_whitespace().next().map(str::to_owned)
}

/// The ELF vmlinux of `image`: unpacked from a bzImage, or `image` itself when it
/// is an ELF already. Checked to carry the PVH entry point QEMU boots.
pub fn vmlinux(image: &[u8]) -> Result<Vec<u8>, ImageError> {
    let elf = if image.starts_with(ELF_MAGIC) {
        image.to_vec()
    } else if is_bzimage(image) {
        unpack(image)?
    } else {
        return Err(ImageError::Kernel(
            "neither a bzImage (no HdrS boot header) nor an ELF vmlinux".into(),
        ));
    };
    if !has_pvh_note(&elf) {
        return Err(ImageError::Kernel(
            "the kernel has no PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY); build it with CONFIG_PVH=y".into(),
        ));
    }
    Ok(elf)
}

fn unpack(image: &[u8]) -> Result<Vec<u8>, ImageError> {
    let bad = |what: &str| ImageError::Kernel(format!("bzImage: {what}"));
    let protocol = u16_at(image, 0x206).ok_or_else(|| bad("truncated header"))?;
    if protocol < 0x208 {
        return Err(bad(&format!(
            "boot protocol {protocol:#x} predates payload_offset (2.08)"
        )));
    }
    let setup_sects = match image[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512;
    let offset = u32_at(image, 0x248).ok_or_else(|| bad("truncated header"))? as usize;
    let length = u32_at(image, 0x24c).ok_or_else(|| bad("truncated header"))? as usize;
    let payload = start
        .checked_add(offset)
        .and_then(|a| Some(a..a.checked_add(length)?))
        .and_then(|r| image.get(r))
        .filter(|p| p.len() > 4)
        .ok_or_else(|| bad("the payload lies outside the file"))?;
    let (data, size) = payload.split_at(payload.len() - 4);
    let size = u32::from_le_bytes(size.try_into().expect("4 bytes")) as usize;
    if size > MAX_VMLINUX {
        return Err(bad(&format!("an uncompressed size of {size} bytes")));
    }
    let mut out = Vec::with_capacity(size);
    if data.starts_with(XZ_MAGIC) {
        lzma_rust2::XzReader::new(data, false)
            .take(MAX_VMLINUX as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| bad(&format!("XZ payload: {e}")))?;
    } else if data.starts_with(ZSTD_MAGIC) {
        let mut dec =
            ruzstd::StreamingDecoder::new(data).map_err(|e| bad(&format!("zstd payload: {e}")))?;
        (&mut dec)
            .take(MAX_VMLINUX as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| bad(&format!("zstd payload: {e}")))?;
    } else {
        let magic: Vec<String> = data.iter().take(4).map(|b| format!("{b:02x}")).collect();
        return Err(bad(&format!(
            "payload compressed in a format cordon does not unpack (magic {}); XZ and zstd are supported: \
             name an uncompressed vmlinux instead",
            magic.join(" ")
        )));
    }
    if out.len() != size || !out.starts_with(ELF_MAGIC) {
        return Err(bad(&format!(
            "the payload unpacked to {} bytes, not the {size} bytes of an ELF it announces",
            out.len()
        )));
    }
    Ok(out)
}

/// Whether the ELF (64-bit, little endian) has a note `Xen` of type 18
/// (XEN_ELFNOTE_PHYS32_ENTRY), which QEMU needs to boot it by PVH.
pub fn has_pvh_note(elf: &[u8]) -> bool {
    pvh_note(elf).is_some()
}

fn pvh_note(elf: &[u8]) -> Option<()> {
    // ELFCLASS64, little endian.
    if !elf.starts_with(ELF_MAGIC) || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return None;
    }
    let phoff = usize::try_from(u64_at(elf, 0x20)?).ok()?;
    let phentsize = usize::from(u16_at(elf, 0x36)?);
    let phnum = usize::from(u16_at(elf, 0x38)?);
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(elf, ph)? != 4 {
            continue; // not PT_NOTE
        }
        let off = usize::try_from(u64_at(elf, ph + 8)?).ok()?;
        let size = usize::try_from(u64_at(elf, ph + 32)?).ok()?;
        let notes = elf.get(off..off.checked_add(size)?)?;
        let mut at = 0;
        while at + 12 <= notes.len() {
            let namesz = u32_at(notes, at)? as usize;
            let descsz = u32_at(notes, at + 4)? as usize;
            let kind = u32_at(notes, at + 8)?;
            let name = notes.get(at + 12..at + 12 + namesz)?;
            if kind == 18 && name.starts_with(b"Xen") {
                return Some(());
            }
            at += 12 + namesz.div_ceil(4) * 4 + descsz.div_ceil(4) * 4;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_kernel() {
        assert!(vmlinux(b"hello").is_err());
        assert!(vmlinux(&[0u8; 4096]).is_err());
        // A header that points its payload past the end of the file.
        let mut fake = vec![0u8; 4096];
        fake[0x202..0x206].copy_from_slice(b"HdrS");
        fake[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        fake[0x248..0x24c].copy_from_slice(&100_000u32.to_le_bytes());
        fake[0x24c..0x250].copy_from_slice(&100_000u32.to_le_bytes());
        assert!(matches!(vmlinux(&fake), Err(ImageError::Kernel(m)) if m.contains("outside")));
        // An ELF without the PVH note.
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(ELF_MAGIC);
        elf[4] = 2;
        elf[5] = 1;
        assert!(matches!(vmlinux(&elf), Err(ImageError::Kernel(m)) if m.contains("PVH")));
    }

    /// Debian's kernel, when installed: unpacked, the release read, the note found.
    #[test]
    fn debian_kernel_unpacks() {
        let Some(kernel) = super::super::find_kernel(None).ok() else {
            eprintln!("skipped: no kernel in /boot (apt-get install linux-image-amd64)");
            return;
        };
        let image = std::fs::read(&kernel.image).unwrap();
        let release = kernel_release(&image).unwrap();
        assert_eq!(Some(release.as_str()), kernel.release.as_deref());
        let elf = vmlinux(&image).unwrap();
        assert!(has_pvh_note(&elf));
    }
}
