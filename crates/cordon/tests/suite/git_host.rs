//! Nothing a sandbox writes makes the host's git run code: for every way git finds
//! settings in a writable root (nested repositories, submodules and gitlinks,
//! gitfiles, commondir chains, a bare repository at any level, `include.path`,
//! hooks of a repository made inside), the sandbox plants a command, and then the
//! host's own git runs where a user would run it (`git status`, `git log` in a
//! terminal, `git commit`). The effect asserted is the marker file the planted
//! command would create on the host. Every case first runs without cordon, as a
//! positive control: there the same steps do leave the marker.
//!
//! Also: a project config's deny cannot unprotect, a writable main `.git` of a
//! worktree keeps its settings, and placeholders survive two sandboxes at once and
//! a killed run.

use crate::common;

use common::*;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

/// Exported at the top of every script: commits need an identity, and the fixture's
/// home has no git config.
const IDENTITY: &str = "export GIT_AUTHOR_NAME=a GIT_AUTHOR_EMAIL=a@example.com \
                        GIT_COMMITTER_NAME=a GIT_COMMITTER_EMAIL=a@example.com; ";

/// Makes a commit in the bare repository `GIT_DIR` names (plumbing only).
const BARE_COMMIT: &str = "t=$(git mktree </dev/null) && c=$(git commit-tree $t -m x) && \
                           git update-ref HEAD $c";

/// One way of planting a command for the host's git.
struct Case {
    name: &'static str,
    /// Run on the host in the workspace before the sandbox (may be empty).
    setup: &'static str,
    /// The sandbox's steps, each a script run in the workspace (several runs for
    /// attacks spread over runs); `MARK` stands for the marker's path.
    inside: &'static [&'static str],
    /// Directories (relative to the workspace) where the host's git then runs.
    probe_in: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "submodule-gitlink",
        setup: "git init -q . && git commit -q --allow-empty -m base",
        inside: &[
            "git init -q sub && git -C sub commit -q --allow-empty -m x && \
                   git -C sub config core.fsmonitor 'touch MARK; false' && \
                   git update-index --add --cacheinfo 160000,$(git -C sub rev-parse HEAD),sub",
        ],
        probe_in: &["."],
    },
    Case {
        name: "gitfile-redirect",
        setup: "git init -q ../up && git -C ../up commit -q --allow-empty -m u && \
                git init -q . && git -c protocol.file.allow=always submodule -q add ../up sub && \
                git commit -q -m sub",
        inside: &[
            "cp -r .git/modules/sub evilgd && git config -f evilgd/config --unset core.worktree; \
                   git config -f evilgd/config core.fsmonitor 'touch MARK; false' && \
                   echo 'gitdir: ../evilgd' > sub/.git",
        ],
        probe_in: &[".", "sub"],
    },
    Case {
        name: "bare-root",
        setup: "",
        inside: &[
            "export GIT_DIR=.; git init -q --bare . && git config pager.log 'touch MARK; cat' && \
                   git config pager.status 'touch MARK; cat' && BARE_COMMIT",
        ],
        probe_in: &["."],
    },
    Case {
        name: "bare-root-after-rm-head",
        setup: "git init -q . && git commit -q --allow-empty -m base",
        inside: &[
            "rm -f .git/HEAD; export GIT_DIR=.; git init -q --bare . && \
                   git config pager.log 'touch MARK; cat' && BARE_COMMIT",
        ],
        probe_in: &["."],
    },
    Case {
        name: "nested-repo-config",
        setup: "git init -q vendor/lib && git -C vendor/lib commit -q --allow-empty -m v",
        inside: &["git -C vendor/lib config core.pager 'touch MARK; cat'"],
        probe_in: &["vendor/lib"],
    },
    Case {
        name: "include-path",
        setup: "git init -q vendor/lib && git -C vendor/lib commit -q --allow-empty -m v",
        inside: &[
            "printf '[core]\\n\\tpager = touch MARK; cat\\n' > evil.cfg && \
                   git -C vendor/lib config include.path ../../../evil.cfg",
        ],
        probe_in: &["vendor/lib"],
    },
    Case {
        name: "commondir-chain",
        setup: "git init -q . && git commit -q --allow-empty -m base",
        inside: &[
            "mkdir -p elsewhere wtgd wt && cp -r .git/objects .git/refs elsewhere/ && \
                   printf '[core]\\n\\tfsmonitor = touch MARK; false\\n' > elsewhere/config && \
                   git rev-parse HEAD > wtgd/HEAD && echo ../elsewhere > wtgd/commondir && \
                   echo 'gitdir: ../wtgd' > wt/.git",
        ],
        probe_in: &["wt"],
    },
    Case {
        name: "hook-in-new-repo",
        setup: "",
        inside: &[
            "git init -q && printf '#!/bin/sh\\ntouch MARK\\n' > .git/hooks/pre-commit && \
                   chmod +x .git/hooks/pre-commit",
        ],
        probe_in: &["."],
    },
    Case {
        name: "hooks-symlink-in-nested-repo",
        setup: "git init -q vendor/lib && git -C vendor/lib commit -q --allow-empty -m v",
        inside: &[
            "mkdir -p h && printf '#!/bin/sh\\ntouch MARK\\n' > h/pre-commit && chmod +x h/pre-commit && \
                   rm -rf vendor/lib/.git/hooks && ln -s ../../../h vendor/lib/.git/hooks",
        ],
        probe_in: &["vendor/lib"],
    },
    Case {
        // The repository's own config points hooks into the workspace (husky).
        name: "hooks-path-in-workspace",
        setup: "git init -q . && git config core.hooksPath .husky && mkdir .husky && \
                git commit -q --allow-empty -m b",
        inside: &[
            "printf '#!/bin/sh\\ntouch MARK\\n' > .husky/pre-commit && chmod +x .husky/pre-commit",
        ],
        probe_in: &["."],
    },
    Case {
        // A directory made unlistable: the user's git still reaches `d/.git` by name.
        name: "unlistable-dir",
        setup: "",
        inside: &["git init -q d && git -C d commit -q --allow-empty -m x && \
                   git -C d config core.pager 'touch MARK; cat' && chmod 100 d"],
        probe_in: &["d"],
    },
    Case {
        // Old content moved into place by a later run: the first run leaves a
        // repository that git does not take for one (no HEAD), the second makes it
        // one by a rename, which keeps the files' old change times.
        name: "two-runs-moved-into-place",
        setup: "",
        inside: &[
            "export GIT_DIR=stash; git init -q --bare stash && git config pager.log 'touch MARK; cat' && \
             BARE_COMMIT && mv stash/HEAD stash/HEAD.x",
            "mv stash/HEAD.x stash/HEAD && mkdir d && mv stash d/.git && \
             git --git-dir=d/.git config core.bare false",
        ],
        probe_in: &["d"],
    },
];

/// The host's git where a user would run it: `git status` and `git log` in a
/// terminal (pagers run only there), then a commit (hooks).
fn probe_script(dir: &Path) -> String {
    format!(
        "{IDENTITY} cd {} || exit 0; for c in 'git status' 'git log -1' \
         'git commit -q --allow-empty -m probe'; do \
         script -qec \"$c\" /dev/null </dev/null >/dev/null 2>&1; done; true",
        dir.display()
    )
}

fn script_for(step: &str, marker: &Path) -> String {
    format!(
        "{IDENTITY}{}",
        step.replace("BARE_COMMIT", BARE_COMMIT)
            .replace("MARK", &marker.display().to_string())
    )
}

/// Runs `case` in `work` (fresh) with or without cordon; true if a marker appeared.
fn plant_and_probe(fx: &Fixture, case: &Case, work: &Path, sandboxed: bool) -> bool {
    set_up(fx, case, work);
    probe_planted(fx, case, work, sandboxed)
}

/// Makes `work` and runs the case's setup there on the host.
fn set_up(fx: &Fixture, case: &Case, work: &Path) {
    fx.mkdir(work);
    if !case.setup.is_empty() {
        fx.host_sh(&format!(
            "{IDENTITY}cd {} && {}",
            work.display(),
            case.setup
        ))
        .assert_success();
    }
}

/// Plants the case in `work` (set up), sandboxed or not, then runs the host's
/// git where the case says; whether the planted command ran.
fn probe_planted(fx: &Fixture, case: &Case, work: &Path, sandboxed: bool) -> bool {
    let marker = fx.root.join(format!(
        "ran-{}-{}-{}",
        case.name,
        work.parent()
            .and_then(Path::file_name)
            .map_or("w".into(), |n| n.to_string_lossy()),
        if sandboxed { "cordon" } else { "control" }
    ));
    // The planted command must not run while planting (e.g. `git config` runs no
    // pager), but the marker is checked only after the probe anyway.
    for step in case.inside {
        let script = script_for(step, &marker);
        if sandboxed {
            let ws = work.display().to_string();
            let mut cmd = fx.sh_cmd_with(&["--workspace", &ws], &script);
            cmd.current_dir(work);
            // Refusing a step is a fine defence too: only the marker counts.
            run_cmd(cmd, None, RUN_DEADLINE);
        } else {
            fx.host_sh(&format!("cd {} && {script}", work.display()))
                .assert_success();
        }
    }
    for dir in case.probe_in {
        fx.host_sh(&probe_script(&work.join(dir)));
    }
    marker.exists()
}

#[test]
fn planted_git_settings_never_run_on_the_host() {
    for_each_user("planted_git_settings_never_run_on_the_host", |fx| {
        let mut failed = Vec::new();
        for case in CASES {
            let control = fx.root.join(format!("control-{}", case.name)).join("w");
            assert!(
                plant_and_probe(fx, case, &control, false),
                "control {}: without cordon, the host's git did not run the planted command",
                case.name
            );
            let work = fx.root.join(format!("case-{}", case.name)).join("w");
            if plant_and_probe(fx, case, &work, true) {
                failed.push(case.name);
            }
        }
        assert!(
            failed.is_empty(),
            "the host's git ran a command the sandbox planted: {failed:?}"
        );
    });
}

/// The same attacks in trees that an earlier audit walked and kept listings of
/// (cordon-gitguard's `listing`): each set up, left still for longer than the
/// listings' racy margin, audited once by a run that changes nothing, then
/// planted. The audit after the planting takes the unchanged directories'
/// entries from the listings and must find the same.
#[test]
fn planted_git_settings_never_run_on_the_host_in_a_tree_audited_before() {
    for_each_user(
        "planted_git_settings_never_run_on_the_host_in_a_tree_audited_before",
        |fx| {
            let works: Vec<_> = CASES
                .iter()
                .map(|case| {
                    let work = fx.root.join(format!("old-{}", case.name)).join("w");
                    set_up(fx, case, &work);
                    // A directory no run changes, so that every tree has a
                    // listing to keep (the root changes at every run: its
                    // placeholders).
                    fx.mkdir(&work.join("untouched"));
                    work
                })
                .collect();
            std::thread::sleep(cordon_gitguard::listing::RACY_MARGIN + Duration::from_millis(200));
            for work in &works {
                let ws = work.display().to_string();
                let mut cmd = fx.sh_cmd_with(&["--workspace", &ws], "true");
                cmd.current_dir(work);
                run_cmd(cmd, None, RUN_DEADLINE).assert_success();
                // The positive control: that run kept the listings the next
                // uses, in the user's run-record directory (/dev/shm, or /tmp
                // where that is no tmpfs).
                let name = format!(
                    "cordon-{}/listings-{}",
                    fx.user.uid,
                    cordon_gitguard::pending::stem(&work.canonicalize().unwrap())
                );
                assert!(
                    ["/dev/shm", "/tmp"]
                        .iter()
                        .any(|base| fs::metadata(Path::new(base).join(&name))
                            .is_ok_and(|m| m.len() > 0)),
                    "no listings kept ({name} in /dev/shm or /tmp)"
                );
            }
            let failed: Vec<&str> = CASES
                .iter()
                .zip(&works)
                .filter(|(case, work)| probe_planted(fx, case, work, true))
                .map(|(case, _)| case.name)
                .collect();
            assert!(
                failed.is_empty(),
                "the host's git ran a command the sandbox planted: {failed:?}"
            );
        },
    );
}

#[test]
fn a_neutralised_config_keeps_its_safe_settings_and_the_original() {
    for_each_user(
        "a_neutralised_config_keeps_its_safe_settings_and_the_original",
        |fx| {
            let out = fx.sh(&format!(
                "{IDENTITY} git init -q && git remote add origin https://example.com/r.git && \
                 git config core.fsmonitor 'touch x; false' && git commit -q --allow-empty -m one && echo ok"
            ));
            out.assert_stdout_contains("ok");
            out.assert_stderr_contains("neutralised");
            out.assert_stderr_contains("core.fsmonitor");
            let config = fs::read_to_string(fx.work.join(".git/config")).unwrap();
            assert!(config.contains("https://example.com/r.git"), "{config}");
            assert!(!config.contains("fsmonitor"), "{config}");
            let kept = fs::read_to_string(fx.work.join(".git/config.cordon-quarantine")).unwrap();
            assert!(kept.contains("fsmonitor"), "{kept}");
            // The repository made inside works on the host.
            fx.host_sh("git log --oneline -1")
                .assert_stdout_contains("one");
            // A second run that changes nothing neutralises nothing.
            let again = fx.sh("git status --short >/dev/null; echo ok");
            again.assert_stdout_contains("ok");
            assert!(!again.stderr_str().contains("neutralised"), "{again}");
        },
    );
}

/// `.cordon.json` may add denies; a deny of a protected path keeps it protected,
/// whether or not it exists.
#[test]
fn a_project_deny_of_a_protected_path_keeps_it_protected() {
    for_each_user(
        "a_project_deny_of_a_protected_path_keeps_it_protected",
        |fx| {
            fx.host_sh(&format!(
                "{IDENTITY} git init -q . && git commit -q --allow-empty -m b"
            ))
            .assert_success();
            fx.write(
                &fx.work.join(".cordon.json"),
                "{\"deny_read\": [\".git/commondir\", \".vscode\", \".pi\", \".git/hooks\"]}\n",
            );
            let out = fx.sh(
                "mkdir -p .vscode .pi/extensions; echo '{}' > .vscode/tasks.json; \
                 echo evil > .pi/extensions/x.ts; echo ../evil > .git/commondir; \
                 mkdir -p .git/hooks; echo evil > .git/hooks/pre-commit; echo script-done",
            );
            out.assert_stdout_contains("script-done");
            for p in [".vscode", ".pi", ".git/commondir", ".git/hooks/pre-commit"] {
                assert_not_exists(&fx.work.join(p));
            }
            // Control: the same steps without cordon do create them.
            fx.host_sh(
                "mkdir -p c/.vscode && echo '{}' > c/.vscode/tasks.json && echo ../evil > c/commondir",
            )
            .assert_success();
            assert!(fx.work.join("c/.vscode/tasks.json").exists());
        },
    );
}

/// The README advises `--allow-write MAIN/.git` for a worktree: the main git dir's
/// settings stay read-only, and nothing is protected as `MAIN/.git/.git/...`.
#[test]
fn a_writable_main_git_dir_of_a_worktree_keeps_its_settings() {
    for_each_user(
        "a_writable_main_git_dir_of_a_worktree_keeps_its_settings",
        |fx| {
            let main = fx.root.join("main");
            fx.mkdir(&main);
            let wt = fx.root.join("wt");
            fx.host_sh(&format!(
                "{IDENTITY} cd {} && git init -q . && git commit -q --allow-empty -m b && git worktree add -q {} ",
                main.display(),
                wt.display()
            ))
            .assert_success();
            let gitdir = main.join(".git");
            let policy = fx.cordon(&[
                "policy",
                "--workspace",
                &wt.display().to_string(),
                "--allow-write",
                &gitdir.display().to_string(),
            ]);
            policy.assert_success();
            assert!(
                !policy.stdout_str().contains("/.git/.git/"),
                "protected names applied below the git dir as if it were a workspace\n{policy}"
            );
            let before = snapshots(&[
                gitdir.join("config"),
                gitdir.join("hooks"),
                gitdir.join("worktrees/wt/commondir"),
            ]);
            let marker = fx.root.join("ran");
            let mut cmd = fx.sh_cmd_with(
                &[
                    "--workspace",
                    &wt.display().to_string(),
                    "--allow-write",
                    &gitdir.display().to_string(),
                ],
                &format!(
                    "{IDENTITY} G={g}; printf '#!/bin/sh\\ntouch {m}\\n' > $G/hooks/pre-commit; chmod +x $G/hooks/pre-commit; \
                     git config core.pager 'touch {m}; cat'; echo ../evil > $G/commondir; \
                     echo /tmp > $G/worktrees/wt/commondir; \
                     git commit -q --allow-empty -m inside && echo committed-inside",
                    g = gitdir.display(),
                    m = marker.display()
                ),
            );
            cmd.current_dir(&wt);
            let out = run_cmd(cmd, None, RUN_DEADLINE);
            out.assert_stdout_contains("committed-inside");
            assert_all_unchanged(&before);
            assert_not_exists(&gitdir.join("commondir"));
            fx.host_sh(&probe_script(&wt));
            fx.host_sh(&probe_script(&main));
            assert_not_exists(&marker);
        },
    );
}

/// Waits until `path` exists.
fn wait_for(path: &Path, within: Duration) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < within,
            "{} did not appear in time",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A way to start the second sandbox: its name, options and environment.
type Variant<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, String)>);

/// Placeholders are shared by every sandbox of the user that mounts them: one that
/// ends first never removes those another still has mounted, however each was
/// started (the workspace of one, a writable root of the other; another TMPDIR or
/// XDG_RUNTIME_DIR).
#[test]
fn a_sandbox_ending_first_leaves_the_others_protection() {
    for_each_user(
        "a_sandbox_ending_first_leaves_the_others_protection",
        |fx| {
            let w2 = fx.root.join("w2");
            fx.mkdir(&w2);
            let w2s = w2.display().to_string();
            let variants: [Variant; 2] = [
                ("allow-write", vec!["--allow-write", &w2s], vec![]),
                (
                    "other-env",
                    vec!["--workspace", &w2s],
                    vec![
                        ("TMPDIR", fx.outside.display().to_string()),
                        ("XDG_RUNTIME_DIR", fx.outside.display().to_string()),
                    ],
                ),
            ];
            for (name, opts, env) in variants {
                let ready = |who: &str| w2.join(format!("{who}-ready-{name}"));
                // First the one with W2 as its workspace: it makes the placeholders.
                let mut first = fx.sh_cmd_with(
                    &["--workspace", &w2s],
                    &format!("touch {}; sleep 1", ready("first").display()),
                );
                first.current_dir(&w2);
                let mut first = spawn_quiet(first);
                wait_for(&ready("first"), Duration::from_secs(20));
                // Then the other, which writes once the first has ended.
                let go = w2.join(format!("go-{name}"));
                let mut second = fx.sh_cmd_with(
                    &opts,
                    &format!(
                        "touch {r}; while [ ! -e {go} ]; do sleep 0.05; done; \
                     mkdir -p {w}/.vscode; echo evil > {w}/.vscode/tasks.json; \
                     echo evil > {w}/.cordon.json; true",
                        r = ready("second").display(),
                        go = go.display(),
                        w = w2s
                    ),
                );
                for (k, v) in &env {
                    second.env(k, v);
                }
                let mut second = spawn_quiet(second);
                wait_for(&ready("second"), Duration::from_secs(20));
                wait_deadline(&mut first, RUN_DEADLINE, "the first sandbox");
                fx.write(&go, "");
                wait_deadline(&mut second, RUN_DEADLINE, "the second sandbox");
                assert_not_exists(&w2.join(".vscode/tasks.json"));
                let cordon_json = fs::read(w2.join(".cordon.json")).unwrap_or_default();
                assert!(
                    cordon_json.is_empty(),
                    ".cordon.json written on the host ({name})"
                );
            }
            // Control: outside cordon the same write lands.
            fx.host_sh(&format!(
                "mkdir -p {w}/c/.vscode && echo x > {w}/c/.vscode/tasks.json",
                w = w2s
            ))
            .assert_success();
            assert!(w2.join("c/.vscode/tasks.json").exists());
            // Once both ended, no placeholder is left.
            for p in [".vscode", ".pi", ".idea", ".cordon.json"] {
                assert_not_exists(&w2.join(p));
            }
        },
    );
}

/// A run killed with SIGKILL leaves its placeholders; the next run removes them.
#[test]
fn placeholders_of_a_killed_run_are_removed_by_the_next() {
    for_each_user(
        "placeholders_of_a_killed_run_are_removed_by_the_next",
        |fx| {
            let ready = fx.work.join("ready");
            let mut cmd = fx.sh_cmd(&format!("touch {}; sleep 60", ready.display()));
            cmd.current_dir(&fx.work);
            let mut child = spawn_quiet(cmd);
            wait_for(&ready, Duration::from_secs(20));
            assert!(
                fx.work.join(".vscode").exists(),
                "no placeholder while running"
            );
            let _ = child.kill();
            let _ = child.wait();
            let _ = wait_gone("sleep 60", Duration::from_secs(10));
            assert!(
                fx.work.join(".vscode").exists(),
                "control: a killed run leaves its placeholder"
            );
            fx.sh("true").assert_success();
            for p in [".vscode", ".pi", ".idea", ".cordon.json"] {
                assert_not_exists(&fx.work.join(p));
            }
        },
    );
}

/// Placeholders never get into git: inside, `git status` does not list them and
/// `git add -A` does not commit them, in an existing repository and in one made
/// inside; on the host, `git status` stays clean.
#[test]
fn placeholders_stay_out_of_git() {
    for_each_user("placeholders_stay_out_of_git", |fx| {
        fx.host_sh(&format!(
            "{IDENTITY} git init -q . && git add -A && git commit -q -m base"
        ))
        .assert_success();
        let out = fx.sh(&format!(
            "{IDENTITY} test -f .vscode && echo placeholder-present; \
             echo status:; git status --porcelain; echo end; \
             git add -A && git commit -q -m inside; git show --name-only --format= HEAD; \
             mkdir fresh && cd fresh && git init -q && echo x > f && git add -A && \
             git commit -q -m new && git show --name-only --format= HEAD"
        ));
        // Control: the placeholders are there inside.
        out.assert_stdout_contains("placeholder-present");
        let text = out.stdout_str();
        for name in [".vscode", ".idea", ".pi", ".cordon.json"] {
            assert!(!text.contains(name), "git inside saw {name}\n{out}");
        }
        let host = fx.host_sh("git status --porcelain -- . ':!fresh'");
        host.assert_success();
        assert!(
            host.stdout_str().trim().is_empty(),
            "the host's git status is not clean\n{host}"
        );
        // The commit made inside holds nothing of cordon's.
        let files = fx.host_sh("git show --name-only --format= HEAD");
        assert!(!files.stdout_str().contains(".vscode"), "{files}");
    });
}

/// A run killed before its audit (SIGKILL) leaves what it planted; the next run on
/// the workspace audits from the killed run's start, so it is neutralised then.
#[test]
fn a_killed_runs_plants_are_judged_by_the_next_run() {
    for_each_user("a_killed_runs_plants_are_judged_by_the_next_run", |fx| {
        let marker = fx.root.join("ran");
        let ready = fx.work.join("ready");
        let mut cmd = fx.sh_cmd(&format!(
            "{IDENTITY} git init -q sub && git -C sub commit -q --allow-empty -m x && \
             git -C sub config core.pager 'touch {}; cat' && touch {} && sleep 60",
            marker.display(),
            ready.display()
        ));
        cmd.current_dir(&fx.work);
        let mut child = spawn_quiet(cmd);
        wait_for(&ready, Duration::from_secs(30));
        let _ = child.kill();
        let _ = child.wait();
        let _ = wait_gone("sleep 60", Duration::from_secs(10));
        // Control: the killed run did plant the setting, and nothing judged it.
        let config = fx.work.join("sub/.git/config");
        assert!(
            fs::read_to_string(&config).unwrap().contains("pager"),
            "control: the killed run's setting is not there"
        );
        // Past the next run's own margin for coarse file times (1 s): only the
        // killed run's record can bring its writes into the next audit.
        std::thread::sleep(Duration::from_millis(1500));
        let out = fx.sh("true");
        out.assert_success();
        out.assert_stderr_contains("neutralised core.pager");
        assert!(
            !fs::read_to_string(&config).unwrap().contains("pager"),
            "{out}"
        );
        fx.host_sh(&probe_script(&fx.work.join("sub")));
        assert_not_exists(&marker);
    });
}
