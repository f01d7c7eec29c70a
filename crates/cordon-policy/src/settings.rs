//! The policy's settings: the values the flags, the config files and a project's
//! tighten-only layer each set whole (the resource limits, the VM's resources),
//! declared once, in the table of [`with_settings!`] below: the key, the kind of
//! value, the field of the resolved policy it fills with its built-in default,
//! the unit, the bounds, and the help line. From that one entry come:
//!
//! - its flag, `--KEY` with `-` for `_`, in [`crate::Flags`] (parsing, `--help`,
//!   shell completions);
//! - its config key, in [`crate::ConfigFile`] (and so in the known-fields list
//!   that an unknown key's error and its suggestion use), checked as it is read
//!   with the flag's messages;
//! - its layering: the user's config and the flags replace it, a project's config
//!   may only lower it ([`crate::tighten::lower`], warned about otherwise);
//! - its field in the resolved [`crate::Policy`] (so in `cordon policy --json`
//!   and what a backend reads), and its row in `cordon policy` ([`SettingRow`]).
//!
//! docs/config.md's fields table and its tighten-only list, and the README's
//! options table, are checked against the keys and flags by the docs suite.
//!
//! Adding a setting to a group is one entry in the table (and its bounds
//! function), plus its use; a new group also adds its field to `Policy`.

use crate::config::ConfigFile;
use crate::error::PolicyError;
use crate::model::{Origin, Sourced};
use crate::tighten::{self, Decision};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::marker::PhantomData;

/// The settings table: groups, each a struct of the resolved policy (the field
/// GROUP of [`crate::Policy`], a `Policy::settings` section in `cordon policy`
/// headed by CAPTION), of entries:
///
/// ```text
/// /// The group's doc.
/// #[derive(...)]
/// GROUP: STRUCT ("CAPTION") {
///     /// The help line (`--help`, and the field's doc).
///     KEY => FIELD: KIND, SLOT = DEFAULT, unit "UNIT", check BOUNDS;
/// }
/// ```
///
/// KEY is the config key and, with `-` for `_`, the flag; FIELD the group's
/// field, of type SLOT (`Option<Sourced<V>>` where no value is a value, else
/// `Sourced<V>`) with the built-in DEFAULT (an `Option<V>` or a `V`); KIND how the
/// value is written and shown ([`Kind`]); UNIT what project-config warnings call
/// it; BOUNDS a function saying why a value is out of bounds.
///
/// It hands the table to `$then!`, after `$pass`: the items below are made that
/// way.
macro_rules! with_settings {
    ($($then:ident)::+ ! { $($pass:tt)* }) => {
        $($then)::+ ! { $($pass)*
            /// Resource limits of the sandbox. `None` means unlimited.
            #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
            limits: Limits ("the sandbox's resources") {
                /// Memory limit, e.g. 512M or 2G.
                memory => memory: $crate::settings::Size, Option<Sourced<u64>> = None,
                    unit "bytes", check more_than_zero_bytes;
                /// Maximum number of processes and threads (default 4096, as an rlimit).
                pids => pids: $crate::settings::Count, Option<Sourced<u64>> = Some($crate::defaults::DEFAULT_PIDS),
                    unit "processes", check at_least_one;
                /// CPU limit, e.g. 1 or 1.5.
                cpus => cpus: $crate::settings::Number, Option<Sourced<f64>> = None,
                    unit "CPUs", check positive_number;
            }
            /// The VM's resources, for `--backend vm` (issue: VM backend).
            #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
            vm: VmResources ("the VM's resources, for --backend vm") {
                /// Memory of the VM (--backend vm), e.g. 512M or 4G (default 1G).
                vm_memory => memory: $crate::settings::Size, Sourced<u64> = 1 << 30,
                    unit "bytes", check vm_memory_bounds;
                /// Virtual CPUs of the VM (--backend vm) (default 2).
                vm_cpus => cpus: $crate::settings::Count, Sourced<u64> = 2,
                    unit "vCPUs", check vm_cpus_bounds;
            }
        }
    };
}
pub(crate) use with_settings;

/// What [`with_settings!`] makes: given the table, the settings' fields of a
/// struct declared elsewhere (`@flags`: [`crate::Flags`]; `@config`:
/// [`crate::ConfigFile`], where the table's fields go between the struct's two
/// blocks of fields), or the groups and what resolves them (`@items`).
macro_rules! settings {
    (@flags
        $(#[$attr:meta])* pub struct $name:ident { $($fixed:tt)* }
        $(
            $(#[$gattr:meta])* $group:ident: $gty:ident ($caption:literal) {
                $(
                    $(#[$attr_:meta])*
                    $key:ident => $field:ident: $kind:ty, $slot:ty = $default:expr,
                        unit $unit:literal, check $check:expr;
                )*
            }
        )*
    ) => {
        $(#[$attr])*
        pub struct $name {
            $($fixed)*
            $($(
                $(#[$attr_])*
                #[cfg_attr(
                    feature = "cli",
                    arg(long, value_name = <$kind as $crate::settings::Kind>::VALUE_NAME)
                )]
                pub $key: Option<<$kind as $crate::settings::Kind>::Flag>,
            )*)*
        }
    };
    (@config
        $(#[$attr:meta])* pub struct $name:ident { $($before:tt)* } { $($after:tt)* }
        $(
            $(#[$gattr:meta])* $group:ident: $gty:ident ($caption:literal) {
                $(
                    $(#[$attr_:meta])*
                    $key:ident => $field:ident: $kind:ty, $slot:ty = $default:expr,
                        unit $unit:literal, check $check:expr;
                )*
            }
        )*
    ) => {
        $(#[$attr])*
        pub struct $name {
            $($before)*
            $($(
                $(#[$attr_])*
                #[serde(default)]
                pub $key: $crate::settings::ConfigValue<$crate::settings::setting::$key>,
            )*)*
            $($after)*
        }
    };
    (@items
        $(
            $(#[$gattr:meta])* $group:ident: $gty:ident ($caption:literal) {
                $(
                    $(#[$attr_:meta])*
                    $key:ident => $field:ident: $kind:ty, $slot:ty = $default:expr,
                        unit $unit:literal, check $check:expr;
                )*
            }
        )*
    ) => {
        $(
            $(#[$gattr])*
            pub struct $gty {
                $( $(#[$attr_])* pub $field: $slot, )*
            }

            impl $gty {
                /// The built-in defaults.
                pub fn defaults() -> $gty {
                    $gty { $( $field: <$slot as Slot>::built_in($default), )* }
                }

                /// Each setting of the group, as `cordon policy` shows it.
                pub fn rows(&self) -> Vec<SettingRow<'_>> {
                    vec![$( SettingRow::of::<setting::$key, _>(stringify!($field), &self.$field), )*]
                }
            }
        )*

        /// One type per setting, naming it in [`ConfigValue`] and the generic
        /// code that checks, layers and shows it.
        #[allow(non_camel_case_types)]
        pub mod setting {
            use super::*;
            $($(
                $(#[$attr_])*
                #[derive(Debug, Clone, Copy, PartialEq, Eq)]
                pub struct $key;

                impl Setting for $key {
                    type Kind = $kind;
                    const KEY: &'static str = stringify!($key);
                    const UNIT: &'static str = $unit;
                    fn bounds(value: &Value<Self>) -> Result<(), &'static str> {
                        ($check)(value)
                    }
                }
            )*)*
        }

        /// Every setting's config key, in the table's order.
        pub const KEYS: &[&str] = &[$($( stringify!($key), )*)*];

        /// Every group of settings, as resolution builds them.
        #[derive(Debug, Clone)]
        pub(crate) struct Settings {
            $( pub $group: $gty, )*
        }

        impl Settings {
            pub(crate) fn defaults() -> Settings {
                Settings { $( $group: $gty::defaults(), )* }
            }

            /// A trusted config's values (the user's, or its `pi` section): each
            /// replaces the current one.
            pub(crate) fn apply_config(&mut self, c: &ConfigFile, origin: &Origin) {
                $($(
                    if let Some(value) = c.$key.0 {
                        self.$group.$field.set(Sourced::new(value, origin.clone()));
                    }
                )*)*
            }

            /// The flags' values: each replaces the current one.
            pub(crate) fn apply_flags(&mut self, f: &crate::Flags) -> Result<(), PolicyError> {
                $($(
                    if let Some(raw) = &f.$key {
                        self.$group.$field.set(from_flag::<setting::$key>(raw)?);
                    }
                )*)*
                Ok(())
            }

            /// A project config's values: each taken only when lower than the
            /// current one; the others are returned, to be warned about.
            pub(crate) fn tighten(&mut self, c: &ConfigFile, origin: &Origin) -> Vec<Ignored> {
                let mut ignored = Vec::new();
                $($(
                    if let Some(value) = c.$key.0 {
                        ignored.extend(lower::<setting::$key, _>(&mut self.$group.$field, value, origin));
                    }
                )*)*
                ignored
            }
        }

        impl crate::Policy {
            /// Every group of settings, in the table's order, as `cordon policy`
            /// shows them.
            pub fn settings(&self) -> Vec<SettingGroup<'_>> {
                vec![$( SettingGroup {
                    name: stringify!($group),
                    caption: $caption,
                    rows: self.$group.rows(),
                }, )*]
            }
        }
    };
}
pub(crate) use settings;

/// A group of settings as `cordon policy` shows it: its field of the policy, what
/// it is, and its settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingGroup<'a> {
    pub name: &'static str,
    pub caption: &'static str,
    pub rows: Vec<SettingRow<'a>>,
}

with_settings!(settings! { @items });

/// How a setting's value is written on the command line and in a config file,
/// and shown.
pub trait Kind {
    /// The resolved value.
    type Value: Copy + PartialOrd + fmt::Display + fmt::Debug + 'static;
    /// What the command line hands over (clap parses it when it is not a string).
    type Flag: Clone + fmt::Debug + Send + Sync + 'static;
    /// The value's name in `--help`.
    const VALUE_NAME: &'static str;
    fn from_flag(flag: &Self::Flag) -> Result<Self::Value, String>;
    /// The value as a config file writes it; `key` names it in errors.
    fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
        key: &'static str,
    ) -> Result<Self::Value, D::Error>;
    /// The value as `cordon policy` shows it.
    fn show(value: &Self::Value) -> String;
}

/// A size in bytes: `512M`, `1.5G`, `2GiB` or a number of bytes
/// ([`crate::parse_size`]); a config file may also write the number itself.
pub struct Size;

/// A number written as itself, on the command line and in a config file.
pub struct Plain<T>(PhantomData<T>);

/// A whole number.
pub type Count = Plain<u64>;

/// A number, fractions allowed.
pub type Number = Plain<f64>;

impl Kind for Size {
    type Value = u64;
    type Flag = String;
    const VALUE_NAME: &'static str = "SIZE";

    fn from_flag(flag: &String) -> Result<u64, String> {
        crate::values::parse_size(flag).map_err(|e| e.to_string())
    }

    fn deserialize<'de, D: Deserializer<'de>>(d: D, key: &'static str) -> Result<u64, D::Error> {
        d.deserialize_any(SizeVisitor { key })
    }

    fn show(value: &u64) -> String {
        crate::values::size_text(*value)
    }
}

/// A size in a config file: a number of bytes or a string for `parse_size`.
struct SizeVisitor {
    key: &'static str,
}

impl Visitor<'_> for SizeVisitor {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a size such as \"512M\" or \"2G\", or a number of bytes")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v)
            .map_err(|_| E::custom(format!("invalid {} {v}: must be positive", self.key)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        Err(E::custom(format!(
            "invalid {} {v}: write a fractional size as a string with a unit, e.g. \"1.5G\"",
            self.key
        )))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        crate::values::parse_size(v).map_err(E::custom)
    }
}

impl<T> Kind for Plain<T>
where
    T: Copy + PartialOrd + fmt::Display + fmt::Debug + Send + Sync + 'static,
    T: for<'de> Deserialize<'de>,
{
    type Value = T;
    type Flag = T;
    const VALUE_NAME: &'static str = "N";

    fn from_flag(flag: &T) -> Result<T, String> {
        Ok(*flag)
    }

    fn deserialize<'de, D: Deserializer<'de>>(d: D, _: &'static str) -> Result<T, D::Error> {
        T::deserialize(d)
    }

    fn show(value: &T) -> String {
        value.to_string()
    }
}

/// A setting of the table (the types of [`setting`]).
pub trait Setting {
    type Kind: Kind;
    /// The config key; the flag is `--KEY` with `-` for `_`.
    const KEY: &'static str;
    /// What project-config warnings call the value's unit.
    const UNIT: &'static str;
    /// Why `value` is out of bounds, if it is.
    fn bounds(value: &Value<Self>) -> Result<(), &'static str>;

    /// The flag, as origins and hints name it.
    fn flag() -> String {
        format!("--{}", Self::KEY.replace('_', "-"))
    }

    /// `value` if it is within bounds, else the message for it.
    fn check(value: Value<Self>) -> Result<Value<Self>, String> {
        Self::bounds(&value).map(|()| value).map_err(|why| {
            let shown = <Self::Kind as Kind>::show(&value);
            format!("invalid {} {shown}: {why}", Self::KEY)
        })
    }
}

/// The value of setting `S`.
pub type Value<S> = <<S as Setting>::Kind as Kind>::Value;

/// Where the policy keeps a setting: `Option<Sourced<V>>` (none is a value, e.g.
/// no limit) or `Sourced<V>` (there is always one).
pub(crate) trait Slot {
    type Value;
    /// The built-in default as the table writes it: an `Option<V>` or a `V`.
    type Default;
    fn built_in(default: Self::Default) -> Self;
    fn current(&self) -> Option<&Sourced<Self::Value>>;
    fn set(&mut self, value: Sourced<Self::Value>);
}

impl<V> Slot for Option<Sourced<V>> {
    type Value = V;
    type Default = Option<V>;
    fn built_in(default: Option<V>) -> Self {
        default.map(|v| Sourced::new(v, Origin::Default))
    }
    fn current(&self) -> Option<&Sourced<V>> {
        self.as_ref()
    }
    fn set(&mut self, value: Sourced<V>) {
        *self = Some(value);
    }
}

impl<V> Slot for Sourced<V> {
    type Value = V;
    type Default = V;
    fn built_in(default: V) -> Self {
        Sourced::new(default, Origin::Default)
    }
    fn current(&self) -> Option<&Sourced<V>> {
        Some(self)
    }
    fn set(&mut self, value: Sourced<V>) {
        *self = value;
    }
}

/// A flag's value of `S`, checked, with the flag as its origin.
fn from_flag<S: Setting>(raw: &<S::Kind as Kind>::Flag) -> Result<Sourced<Value<S>>, PolicyError> {
    let origin = Origin::Flag { flag: S::flag() };
    let checked = S::Kind::from_flag(raw).and_then(S::check);
    match checked {
        Ok(value) => Ok(Sourced::new(value, origin)),
        Err(message) => Err(PolicyError::Value { origin, message }),
    }
}

/// A project config's value that would loosen the policy, for its warning.
pub(crate) struct Ignored {
    pub field: &'static str,
    /// How it would loosen the policy.
    pub detail: String,
    /// Where it belongs instead.
    pub hint: String,
}

/// A project config's `value` of `S`: taken when lower than the current one,
/// else returned as ignored if it is higher.
fn lower<S: Setting, T: Slot<Value = Value<S>>>(
    slot: &mut T,
    value: Value<S>,
    origin: &Origin,
) -> Option<Ignored> {
    let current = slot.current().map(|c| (c.value, c.origin.clone()));
    match (
        tighten::lower(current.as_ref().map(|c| &c.0), &value),
        current,
    ) {
        (Decision::Take, _) => {
            slot.set(Sourced::new(value, origin.clone()));
            None
        }
        (Decision::Ignore, Some((now, by))) => {
            let unit = S::UNIT;
            Some(Ignored {
                field: S::KEY,
                detail: format!(": {value} {unit} is more than the current {now} {unit} ({by})"),
                hint: tighten::user_config_or(&S::flag()),
            })
        }
        _ => None,
    }
}

/// One setting as `cordon policy` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingRow<'a> {
    /// The config key (`memory`, `vm_cpus`).
    pub key: &'static str,
    /// The field in its group (`memory`, `cpus`).
    pub name: &'static str,
    /// The value as shown (`2G`), or `None` for none (no limit).
    pub value: Option<String>,
    pub origin: Option<&'a Origin>,
}

impl<'a> SettingRow<'a> {
    fn of<S: Setting, T: Slot<Value = Value<S>>>(name: &'static str, slot: &'a T) -> Self {
        let current = slot.current();
        SettingRow {
            key: S::KEY,
            name,
            value: current.map(|c| S::Kind::show(&c.value)),
            origin: current.map(|c| &c.origin),
        }
    }
}

/// A setting as a config file writes it (`None` when the file does not), its
/// bounds checked as it is read, so an error names the file, line and column.
pub struct ConfigValue<S: Setting>(pub Option<Value<S>>, PhantomData<S>);

impl<S: Setting> ConfigValue<S> {
    pub fn new(value: Option<Value<S>>) -> Self {
        ConfigValue(value, PhantomData)
    }
}

impl<S: Setting> Default for ConfigValue<S> {
    fn default() -> Self {
        ConfigValue::new(None)
    }
}

impl<S: Setting> Clone for ConfigValue<S> {
    fn clone(&self) -> Self {
        ConfigValue::new(self.0)
    }
}

impl<S: Setting> fmt::Debug for ConfigValue<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<S: Setting> PartialEq for ConfigValue<S> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

/// So that `c.memory == Some(2 << 30)`.
impl<S: Setting> PartialEq<Option<Value<S>>> for ConfigValue<S> {
    fn eq(&self, other: &Option<Value<S>>) -> bool {
        self.0 == *other
    }
}

impl<S: Setting> Serialize for ConfigValue<S>
where
    Value<S>: Serialize,
{
    fn serialize<Z: Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, S: Setting> Deserialize<'de> for ConfigValue<S> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_option(ConfigVisitor(PhantomData))
    }
}

/// `null`, or a value of `S` within bounds.
struct ConfigVisitor<S>(PhantomData<S>);

impl<'de, S: Setting> Visitor<'de> for ConfigVisitor<S> {
    type Value = ConfigValue<S>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a value of \"{}\"", S::KEY)
    }
    fn visit_none<E: de::Error>(self) -> Result<ConfigValue<S>, E> {
        Ok(ConfigValue::new(None))
    }
    fn visit_unit<E: de::Error>(self) -> Result<ConfigValue<S>, E> {
        Ok(ConfigValue::new(None))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<ConfigValue<S>, D::Error> {
        let value = S::Kind::deserialize(d, S::KEY)?;
        S::check(value)
            .map(|v| ConfigValue::new(Some(v)))
            .map_err(de::Error::custom)
    }
}

fn more_than_zero_bytes(bytes: &u64) -> Result<(), &'static str> {
    match bytes {
        0 => Err("must be more than 0 bytes"),
        _ => Ok(()),
    }
}

fn at_least_one(n: &u64) -> Result<(), &'static str> {
    match n {
        0 => Err("must be at least 1"),
        _ => Ok(()),
    }
}

fn positive_number(n: &f64) -> Result<(), &'static str> {
    if n.is_finite() && *n > 0.0 {
        Ok(())
    } else {
        Err("must be a positive number")
    }
}

/// The VM's memory: enough for its kernel and cordon's agent (128M) and no more
/// than a host can give (1T), in whole MiB (what QEMU's `-m` takes).
fn vm_memory_bounds(bytes: &u64) -> Result<(), &'static str> {
    const MIB: u64 = 1 << 20;
    if *bytes < 128 * MIB {
        Err("must be at least 128M")
    } else if *bytes > 1 << 40 {
        Err("must be at most 1T")
    } else if bytes % MIB != 0 {
        Err("must be a whole number of MiB")
    } else {
        Ok(())
    }
}

/// The VM's vCPUs: 1 to 64.
fn vm_cpus_bounds(n: &u64) -> Result<(), &'static str> {
    match n {
        1..=64 => Ok(()),
        _ => Err("must be from 1 to 64"),
    }
}
