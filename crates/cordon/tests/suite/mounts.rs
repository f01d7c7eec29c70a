//! Mounts (`--mount SOURCE:TARGET[:ro|rw]`, `"mount"` in the user config): a host
//! path shown at another path inside, and the attacks on them. Each test runs as
//! root and as the ordinary test user, and checks the effect on the host.

use crate::common;

use common::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A directory of the user's, outside the workspace, with one file.
fn datasets(fx: &Fixture) -> std::path::PathBuf {
    let dir = fx.root.join("datasets");
    fx.write(&dir.join("f"), "dataset-original\n");
    dir
}

/// A target that does not exist on the host: made inside, never on the host.
fn fresh_target() -> String {
    format!("/cordon-test-data-{}", random_hex(4))
}

#[test]
fn a_hidden_source_is_refused_naming_the_rule() {
    for_each_user("mount-hidden-source", |fx| {
        for source in ["~/.ssh", "~/.ssh/id_rsa", "~/.pi/agent/auth.json"] {
            let out = fx.sh_with(&["--mount", &format!("{source}:/data")], "cat /data/*");
            out.assert_status(125);
            out.assert_stderr_contains("the source lies in the hidden path");
            out.assert_stderr_contains("(built-in default)");
            assert_absent(&out, &fx.marker);
        }
    });
}

#[test]
fn a_read_only_mount_cannot_be_written() {
    for_each_user("mount-ro", |fx| {
        let src = datasets(fx);
        let target = fresh_target();
        let before = snapshots(&[src.clone(), src.join("f")]);
        let mount = format!("{}:{target}", src.display());
        let out = fx.sh_with(
            &["--mount", &mount],
            &format!(
                "cat {target}/f; echo x > {target}/f; echo write=$?; rm -f {target}/f; \
                 touch {target}/new; mkdir {target}/d; ls {target}"
            ),
        );
        out.assert_success();
        out.assert_stdout_contains("dataset-original");
        assert!(!out.stdout_str().contains("write=0"), "{out}");
        assert_all_unchanged(&before);
        assert!(!Path::new(&target).exists(), "{target} made on the host");
    });
}

#[test]
fn a_read_write_mount_writes_to_its_source_as_the_user() {
    for_each_user("mount-rw", |fx| {
        let src = datasets(fx);
        let target = fresh_target();
        let mount = format!("{}:{target}:rw", src.display());
        let out = fx.sh_with(
            &["--mount", &mount],
            &format!(
                "echo made-inside > {target}/new && echo changed > {target}/f && echo wrote; \
                 mkdir -p {target}/.git/hooks; echo evil > {target}/.git/hooks/pre-commit; \
                 echo hook=$?"
            ),
        );
        out.assert_success();
        out.assert_stdout_contains("wrote");
        let made = src.join("new");
        assert_eq!(fs::read_to_string(&made).unwrap(), "made-inside\n", "{out}");
        assert_eq!(fs::read_to_string(src.join("f")).unwrap(), "changed\n");
        let meta = fs::metadata(&made).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (fx.user.uid, fx.user.gid));
        // The source is a writable root: a repository made there inside is judged
        // when the run ends, so no hook of the sandbox's is left for git to run.
        assert!(!src.join(".git/hooks/pre-commit").exists(), "{out}");
        assert!(!Path::new(&target).exists(), "{target} made on the host");
    });
}

#[test]
fn a_mount_shows_only_what_the_view_shows() {
    // Mounting the home elsewhere does not show its secrets there.
    for_each_user("mount-home", |fx| {
        let target = fresh_target();
        let mount = format!("{}:{target}", fx.home.display());
        let out = fx.sh_with(
            &["--mount", &mount],
            &format!(
                "cat {target}/notes.txt; cat {target}/.ssh/id_rsa {target}/.aws/credentials \
                 {target}/.pi/agent/auth.json; ls -a {target}/.ssh; echo done"
            ),
        );
        out.assert_success();
        out.assert_stdout_contains("plain-home-file");
        out.assert_stdout_contains("done");
        assert_absent(&out, &fx.marker);
    });
}

#[test]
fn a_target_in_or_over_a_guarded_path_is_refused() {
    for_each_user("mount-target", |fx| {
        let src = datasets(fx);
        let work = fx.work.canonicalize().unwrap();
        let home = fx.home.canonicalize().unwrap();
        let hooks = work.join(".git/hooks");
        let before = snapshots(&[work.join(".git"), home.join(".ssh")]);
        for (target, want) in [
            (home.join(".ssh"), "the target lies in the hidden path"),
            (hooks.clone(), "the target lies in the protected path"),
            (work.clone(), "the target would cover the writable root"),
            (home.clone(), "the target would cover"),
        ] {
            let mount = format!("{}:{}:rw", src.display(), target.display());
            let out = fx.sh_with(&["--mount", &mount], "echo ran");
            out.assert_status(125);
            out.assert_stderr_contains(want);
            assert!(!out.stdout_str().contains("ran"), "{out}");
        }
        assert_all_unchanged(&before);
    });
}
