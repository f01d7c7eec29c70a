//! The isolation layers in force for a session: a typed list, which `cordon serve`
//! reports (`status`'s `layers`) and `cordon policy` prints.

use serde::ser::{Serialize, SerializeMap, Serializer};

/// A namespace of its own that the session's processes live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Namespace {
    User,
    Mount,
    Pid,
    Net,
    Ipc,
    Uts,
    Cgroup,
}

impl Namespace {
    /// The kernel's name, as in `/proc/PID/ns/`, but `mount` for `mnt`.
    pub fn name(self) -> &'static str {
        match self {
            Namespace::User => "user",
            Namespace::Mount => "mount",
            Namespace::Pid => "pid",
            Namespace::Net => "net",
            Namespace::Ipc => "ipc",
            Namespace::Uts => "uts",
            Namespace::Cgroup => "cgroup",
        }
    }
}

/// One layer in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layer {
    /// Namespaces of the session's own.
    Namespaces(Vec<Namespace>),
    /// Landlock, at the kernel's ABI version.
    Landlock { abi: u32 },
    /// A seccomp filter on every process.
    Seccomp,
    /// No capabilities, in any set.
    NoCapabilities,
    /// `no_new_privs`: no exec gains privileges (setuid, file capabilities).
    NoNewPrivs,
    /// The command runs in a virtual machine (the VM backend), with KVM or on
    /// QEMU's emulator (TCG); the other layers are then those of the host
    /// process that runs the VM (QEMU).
    Vm { kvm: bool },
}

/// The layers in force, in the order the backend lists them. Only layers that
/// hold are listed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layers(pub Vec<Layer>);

impl Layers {
    pub fn iter(&self) -> impl Iterator<Item = &Layer> {
        self.0.iter()
    }

    /// The namespaces of the session's own (none if it has none).
    pub fn namespaces(&self) -> &[Namespace] {
        self.iter()
            .find_map(|l| match l {
                Layer::Namespaces(n) => Some(n.as_slice()),
                _ => None,
            })
            .unwrap_or(&[])
    }

    /// The Landlock ABI in force, 0 when Landlock is not.
    pub fn landlock_abi(&self) -> u32 {
        self.iter()
            .find_map(|l| match l {
                Layer::Landlock { abi } => Some(*abi),
                _ => None,
            })
            .unwrap_or(0)
    }

    pub fn contains(&self, layer: &Layer) -> bool {
        self.0.contains(layer)
    }
}

/// The shape of docs/serve.md's `status.layers`: `{"namespaces": [...],
/// "landlock": ABI or 0, "seccomp": bool, "capabilities": "none" or "some",
/// "no_new_privs": bool}`; every key is always there, and `"vm": "kvm"` or
/// `"tcg"` too when the session runs in a VM.
impl Serialize for Layers {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let names: Vec<&str> = self.namespaces().iter().map(|n| n.name()).collect();
        let mut map = serializer.serialize_map(None)?;
        if let Some(kvm) = self.iter().find_map(|l| match l {
            Layer::Vm { kvm } => Some(*kvm),
            _ => None,
        }) {
            map.serialize_entry("vm", if kvm { "kvm" } else { "tcg" })?;
        }
        map.serialize_entry("namespaces", &names)?;
        map.serialize_entry("landlock", &self.landlock_abi())?;
        map.serialize_entry("seccomp", &self.contains(&Layer::Seccomp))?;
        let capabilities = if self.contains(&Layer::NoCapabilities) {
            "none"
        } else {
            "some"
        };
        map.serialize_entry("capabilities", capabilities)?;
        map.serialize_entry("no_new_privs", &self.contains(&Layer::NoNewPrivs))?;
        map.end()
    }
}

/// One line: `namespaces user, mount, pid; Landlock ABI 7; seccomp; no
/// capabilities; no_new_privs`.
impl std::fmt::Display for Layers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, layer) in self.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            match layer {
                Layer::Namespaces(names) => {
                    f.write_str("namespaces ")?;
                    for (j, n) in names.iter().enumerate() {
                        if j > 0 {
                            f.write_str(", ")?;
                        }
                        f.write_str(n.name())?;
                    }
                }
                Layer::Landlock { abi } => write!(f, "Landlock ABI {abi}")?,
                Layer::Seccomp => f.write_str("seccomp")?,
                Layer::NoCapabilities => f.write_str("no capabilities")?,
                Layer::NoNewPrivs => f.write_str("no_new_privs")?,
                Layer::Vm { kvm: true } => f.write_str("QEMU VM on KVM")?,
                Layer::Vm { kvm: false } => f.write_str("QEMU VM on TCG")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Layers {
        Layers(vec![
            Layer::Namespaces(vec![Namespace::User, Namespace::Mount, Namespace::Net]),
            Layer::Landlock { abi: 7 },
            Layer::Seccomp,
            Layer::NoCapabilities,
            Layer::NoNewPrivs,
        ])
    }

    #[test]
    fn serializes_to_the_documented_status_shape() {
        assert_eq!(
            serde_json::to_value(full()).unwrap(),
            serde_json::json!({
                "namespaces": ["user", "mount", "net"],
                "landlock": 7,
                "seccomp": true,
                "capabilities": "none",
                "no_new_privs": true,
            })
        );
        // A layer not in force is reported as such, never claimed.
        assert_eq!(
            serde_json::to_value(Layers(vec![Layer::Seccomp])).unwrap(),
            serde_json::json!({
                "namespaces": [],
                "landlock": 0,
                "seccomp": true,
                "capabilities": "some",
                "no_new_privs": false,
            })
        );
    }

    #[test]
    fn a_vm_is_named_only_when_there_is_one() {
        let mut layers = full();
        layers.0.insert(0, Layer::Vm { kvm: false });
        let json = serde_json::to_value(&layers).unwrap();
        assert_eq!(json["vm"], "tcg");
        assert!(serde_json::to_value(full()).unwrap().get("vm").is_none());
        assert!(
            layers
                .to_string()
                .starts_with("QEMU VM on TCG; namespaces user")
        );
    }

    #[test]
    fn prints_on_one_line() {
        assert_eq!(
            full().to_string(),
            "namespaces user, mount, net; Landlock ABI 7; seccomp; no capabilities; no_new_privs"
        );
    }
}
