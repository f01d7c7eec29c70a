//! `cordon pi`'s host side: the whole pi agent runs inside the sandbox, its
//! credentials stay outside.
//!
//! pi's config dir is visible read-only, its `sessions/` read-write, `auth.json`
//! hidden. Every LLM credential pi would use becomes a broker secret scoped to its
//! provider's hosts ([`import`], a pure function of the files' contents and the
//! environment); inside, pi sees placeholders (in its environment, and in copies of
//! `models.json` and `auth.json` laid over the real ones, [`RunDir`]). The
//! providers pi is configured for are allowed on the network.

pub mod config_value;
mod import;
mod run_dir;
mod setup;

pub use import::{Contents, Import, PiConfig, Secret, import};
pub use run_dir::{Overlay, RunDir};
pub use setup::{INSTALL_HINT, PiSetup, find_pi};
