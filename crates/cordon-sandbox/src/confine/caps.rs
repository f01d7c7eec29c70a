//! Dropping every capability for good, also for a sandbox started by root (uid 0
//! inside): empty bounding set, no ambient capabilities, securebits that stop exec
//! from granting root its capabilities back, then no_new_privs.

use rustix::io::Errno;
use rustix::thread::{CapabilitiesSecureBits as Secure, CapabilitySet, CapabilitySets};
use std::io;

/// Runs in the supervisor before it starts the command. No allocation.
pub fn drop_all() -> io::Result<()> {
    drop_bounding_set();
    rustix::thread::clear_ambient_capability_set()?;
    rustix::thread::clear_ambient_capability_set()?;
    rustix::thread::set_capabilities_secure_bits(
        Secure::NO_ROOT
            | Secure::NO_ROOT_LOCKED
            | Secure::NO_SETUID_FIXUP
            | Secure::NO_SETUID_FIXUP_LOCKED
            | Secure::KEEP_CAPS_LOCKED
            | Secure::NO_CAP_AMBIENT_RAISE
            | Secure::NO_CAP_AMBIENT_RAISE_LOCKED,
    )?;
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: CapabilitySet::empty(),
            permitted: CapabilitySet::empty(),
            inheritable: CapabilitySet::empty(),
        },
    )?;
    rustix::thread::set_no_new_privs(true)?;
    Ok(())
}

/// Empties the bounding set (needs CAP_SETPCAP; without it, nothing is
/// dropped): no exec can grant a capability again. No allocation. Before a
/// switch to another uid, which clears the other sets but not this one.
pub fn drop_bounding_set() {
    // Every capability number the kernel may know, not only those rustix names:
    // EINVAL past the last capability this kernel knows.
    for cap in 0..=63u32 {
        let one = CapabilitySet::from_bits_retain(1 << cap);
        if rustix::thread::remove_capability_from_bounding_set(one) == Err(Errno::INVAL) {
            break;
        }
    }
}
