//! `--backend vm` restored from template snapshots (QEMU ≥ 8.2; docs/vm.md,
//! "Snapshots"), for real under TCG: clones of one template are made unique
//! (RNG) and current (clock), see the same files as a cold boot, survive a
//! damaged template, and leave no QEMU when cordon is killed while restoring.
//! The template of each configuration is shared with vm_backend.rs's tests
//! (the same cache per user); each boot is bounded. Skipped without QEMU, a
//! kernel, or (where snapshots are what is tested) QEMU ≥ 8.2.

use crate::common;
use common::vm::{missing, qemu_left_after, vm_cmd, wait_for_qemu_below};

use common::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The configuration these tests restore (the view test's, so its template is shared).
const OPTS: [&str; 4] = ["--vm-memory", "384M", "--vm-cpus", "1"];

/// Why snapshots cannot be tested here, if they cannot.
fn no_snapshots(fx: &Fixture) -> Option<String> {
    if let Some(why) = missing() {
        return Some(why);
    }
    let status = fx.cordon(&["vm", "status"]);
    let line = status
        .stdout_str()
        .lines()
        .find(|l| l.trim_start().starts_with("snapshots "))
        .unwrap_or("")
        .to_string();
    (!line.contains("snapshots on")).then(|| format!("no snapshots here: {line}"))
}

/// `cordon run --backend vm OPTS -- sh -c SCRIPT` with the VM's timings on stderr.
fn timed(fx: &Fixture, env: &[(&str, &str)], script: &str) -> Output {
    let mut cmd = vm_cmd(fx, &OPTS, script);
    cmd.env("CORDON_VM_TIMINGS", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_cmd(cmd, None, Duration::from_secs(150))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `name=VALUE` in `out`'s stdout.
fn field(out: &Output, name: &str) -> String {
    let prefix = format!("{name}=");
    out.stdout_str()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .unwrap_or_else(|| panic!("no {name}= in\n{out}"))
}

/// Two sessions restored from one template read different bytes from the
/// guest's /dev/urandom and have the host's clock (both would have the
/// template's without the reseed and the reset); their writes to the workspace
/// reach the host as the user's, a secret of the home is not readable and the
/// home not writable, as in a cold boot (the positive control, which
/// `CORDON_VM_SNAPSHOTS=off` forces).
#[test]
fn restored_sessions_are_unique_current_and_see_the_policys_view() {
    for_each_user("vm-snap", |fx| {
        if let Some(why) = no_snapshots(fx) {
            return eprintln!("skipped: {why}");
        }
        // Makes the template if no other test did yet.
        timed(fx, &[], "true").assert_success();
        let script = |name: &str| {
            format!(
                r#"W={work}; H={home}
                echo "rng=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
                echo "now=$(date +%s)"
                echo {name} > "$W/from-{name}"
                echo x > "$H/vm-snap-{name}" && echo "WROTE home"
                cat "$H/.ssh/id_rsa"
                exit 3"#,
                work = fx.work.display(),
                home = fx.home.display(),
            )
        };
        let mut rngs = Vec::new();
        for (name, env) in [
            ("a", &[][..]),
            ("b", &[][..]),
            ("cold", &[("CORDON_VM_SNAPSHOTS", "off")][..]),
        ] {
            let before = now();
            let out = timed(fx, env, &script(name));
            let after = now();
            out.assert_status(3);
            let how = if name == "cold" { "cold" } else { "restored" };
            out.assert_stderr_contains(&format!("cordon: vm timings: {how} "));
            assert!(!out.stderr_str().contains("did not restore"), "{out}");
            let guest_now: u64 = field(&out, "now").parse().unwrap();
            assert!(
                before.saturating_sub(2) <= guest_now && guest_now <= after + 2,
                "the guest's clock {guest_now} is not the host's ({before}..{after})\n{out}"
            );
            rngs.push(field(&out, "rng"));
            let written = fx.work.join(format!("from-{name}"));
            assert_eq!(fs::read_to_string(&written).unwrap(), format!("{name}\n"));
            assert_eq!(fs::metadata(&written).unwrap().uid(), fx.user.uid);
            assert!(!out.stdout_str().contains("WROTE"), "{out}");
            assert_not_exists(&fx.home.join(format!("vm-snap-{name}")));
            out.assert_not_printed(&fx.marker);
        }
        assert_eq!(rngs[0].len(), 64, "{rngs:?}");
        assert_ne!(
            rngs[0], rngs[1],
            "two clones of one template share their RNG"
        );
    });
}

/// The template files in `dir`.
fn templates(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let name = p.file_name().unwrap().to_string_lossy();
                    name.starts_with("template-") && name.ends_with(".snap")
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A first run in an empty cache makes the boot files and the template,
/// showing its steps as `cordon vm setup` does. A template cut short, or with
/// garbage where QEMU's header is, is detected (QEMU refuses it), said once on
/// stderr, removed and made again by a cold boot that runs the command all the
/// same: no hang, no failure; the next session restores the new template and
/// shows no steps.
#[test]
fn a_damaged_template_is_made_again() {
    for_each_user("vm-snap-damaged", |fx| {
        if let Some(why) = no_snapshots(fx) {
            return eprintln!("skipped: {why}");
        }
        // A cache of its own: the template damaged is this test's only.
        let cache_home = fx.root.join("cache-home");
        fx.mkdir(&cache_home);
        fx.chown_tree(&cache_home);
        let dir = cache_home.join("cordon/vm");
        let run = || {
            let mut cmd = vm_cmd(fx, &OPTS, "echo ran");
            cmd.env("XDG_CACHE_HOME", &cache_home)
                .env("CORDON_VM_TIMINGS", "1");
            let started = Instant::now();
            let out = run_cmd(cmd, None, Duration::from_secs(150));
            out.assert_success().assert_stdout_contains("ran");
            assert!(started.elapsed() < Duration::from_secs(120), "{out}");
            out
        };
        // A first run makes the boot files and the template, showing its
        // steps on stderr (stdout is the command's alone).
        let first = run();
        first
            .assert_stderr_contains("making the template")
            .assert_stderr_contains("cordon: [1/2] the VM's kernel and initramfs")
            .assert_stderr_contains("cordon: [2/2] the template snapshot");
        assert_eq!(first.stdout_str(), "ran\n", "{first}");
        let made = templates(&dir);
        assert_eq!(made.len(), 1, "{made:?}");
        let template = &made[0];
        let len = fs::metadata(template).unwrap().len();
        type Damage<'a> = (&'a str, &'a dyn Fn(&Path));
        let damages: [Damage; 2] = [
            ("cut short", &|p| {
                let f = fs::OpenOptions::new().write(true).open(p).unwrap();
                f.set_len(len / 3).unwrap();
            }),
            ("garbage header", &|p| {
                use std::os::unix::fs::FileExt;
                let f = fs::OpenOptions::new().write(true).open(p).unwrap();
                f.write_all_at(&[0x5a; 4096], 0).unwrap();
            }),
        ];
        for (what, damage) in damages {
            damage(template);
            let out = run();
            out.assert_stderr_contains("did not restore");
            out.assert_stderr_contains("making the template")
                .assert_stderr_contains("cordon: [1/1] the template snapshot, made again");
            // Whole again (its device state may differ by a few bytes).
            let now = fs::metadata(template).map(|m| m.len()).unwrap_or(0);
            assert!(
                now.abs_diff(len) < 4096,
                "{what}: the template was not made again ({now} bytes, was {len})\n{out}"
            );
            // Nothing to make: no steps shown.
            let restored = run();
            restored.assert_stderr_contains("cordon: vm timings: restored ");
            assert!(!restored.stderr_str().contains("cordon: ["), "{restored}");
        }
    });
}

/// A SIGKILL of cordon while its VM is being restored (QEMU started, the
/// command not yet run) leaves no QEMU.
#[test]
fn sigkill_during_restore_leaves_no_qemu() {
    for_each_user("vm-snap-kill", |fx| {
        if let Some(why) = no_snapshots(fx) {
            return eprintln!("skipped: {why}");
        }
        timed(fx, &[], "true").assert_success();
        let started = fx.work.join("started");
        let mut cmd: Command = vm_cmd(
            fx,
            &OPTS,
            &format!("touch {}; sleep 600", started.display()),
        );
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let mut cordon = cmd.spawn().unwrap();
        let qemu = wait_for_qemu_below(cordon.id(), Duration::from_secs(60));
        assert!(!qemu.is_empty(), "QEMU never started below cordon");
        cordon.kill().unwrap();
        let command_ran = started.exists();
        cordon.wait().unwrap();
        let left = qemu_left_after(&qemu, Duration::from_secs(10));
        assert!(left.is_empty(), "QEMU {left:?} outlived SIGKILLed cordon");
        assert!(
            !command_ran,
            "the command ran before the kill: not during the restore"
        );
    });
}
