//! The docs stay true to the code: a check of every Markdown file of the repository
//! (README.md, docs/, integrations/pi/, bench/, ...) against what it describes.
//!
//! - every relative link names a file in the repository, and every `#anchor` a
//!   heading of that file;
//! - the config keys: the table of docs/config.md lists exactly the keys a config
//!   file may hold ([`cordon_policy::known_fields`]), every JSON example that is a
//!   config parses as one, and no code span names a key that does not exist
//!   (`allow_domains`);
//! - the presets table of docs/config.md is [`cordon_policy::PRESETS`], and its
//!   built-in secrets table is [`cordon_policy::defaults::HOME_SECRETS`];
//! - the README's options table is the options of `cordon run --help`, and every
//!   `cordon SUBCOMMAND --flag ...` written in a doc names a subcommand and flags
//!   that exist.
//!
//! Reads files and runs `cordon SUBCOMMAND --help`; no sandbox, no network.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

/// Every Markdown file of the repository but build output and installed packages.
fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("a directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if !matches!(name.as_str(), "target" | "node_modules" | ".git") {
                    walk(&path, out);
                }
            } else if name.ends_with(".md") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo(), &mut out);
    assert!(
        out.iter().any(|p| p.ends_with("docs/config.md")),
        "no docs found under {}",
        repo().display()
    );
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rel(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// A Markdown file split into prose lines (fenced code blanked out) and its
/// fenced code blocks (language, text).
struct Doc {
    path: PathBuf,
    prose: Vec<String>,
    blocks: Vec<(String, String)>,
}

impl Doc {
    fn load(path: &Path) -> Doc {
        let text = read(path);
        let mut prose = Vec::new();
        let mut blocks = Vec::new();
        let mut fence: Option<(String, String)> = None;
        for line in text.lines() {
            let trimmed = line.trim_start();
            match &mut fence {
                None if trimmed.starts_with("```") => {
                    fence = Some((
                        trimmed.trim_start_matches('`').trim().to_string(),
                        String::new(),
                    ));
                    prose.push(String::new());
                }
                None => prose.push(line.to_string()),
                Some(_) if trimmed.starts_with("```") => {
                    blocks.push(fence.take().unwrap());
                    prose.push(String::new());
                }
                Some((_, body)) => {
                    body.push_str(line);
                    body.push('\n');
                    prose.push(String::new());
                }
            }
        }
        assert!(fence.is_none(), "{}: a code block is not closed", rel(path));
        Doc {
            path: path.to_path_buf(),
            prose,
            blocks,
        }
    }

    /// The prose as one text (code spans may wrap across lines).
    fn prose_text(&self) -> String {
        self.prose.join("\n")
    }

    /// The inline code spans of the prose, whitespace runs made one space.
    fn code_spans(&self) -> Vec<String> {
        let text = self.prose_text();
        let mut spans = Vec::new();
        let mut rest = text.as_str();
        while let Some(start) = rest.find('`') {
            let ticks = rest[start..].chars().take_while(|c| *c == '`').count();
            let after = &rest[start + ticks..];
            let closing = "`".repeat(ticks);
            let Some(end) = after.find(&closing) else {
                break;
            };
            let span = after[..end]
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            spans.push(span);
            rest = &after[end + ticks..];
        }
        spans
    }

    /// The anchors GitHub makes for this file's headings.
    fn anchors(&self) -> BTreeSet<String> {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut out = BTreeSet::new();
        for line in &self.prose {
            let Some(title) = line.strip_prefix('#') else {
                continue;
            };
            let title = title.trim_start_matches('#');
            if !title.starts_with(' ') {
                continue;
            }
            let slug = slug(title.trim());
            let n = seen.entry(slug.clone()).or_insert(0);
            out.insert(if *n == 0 {
                slug.clone()
            } else {
                format!("{slug}-{n}")
            });
            *n += 1;
        }
        out
    }
}

/// GitHub's heading anchor: lower case, spaces to `-`, punctuation but `-` and `_`
/// dropped.
fn slug(title: &str) -> String {
    title
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The targets of the inline links `[text](target)` in the prose, outside code spans.
fn links(doc: &Doc) -> Vec<String> {
    let mut text = doc.prose_text();
    // Code spans hold no links: blank them.
    let mut out = String::with_capacity(text.len());
    let mut in_code = false;
    for c in text.chars() {
        if c == '`' {
            in_code = !in_code;
        }
        out.push(if in_code { ' ' } else { c });
    }
    text = out;
    let mut targets = Vec::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        let Some(end) = after.find(')') else { break };
        targets.push(after[..end].trim().to_string());
        rest = &after[end..];
    }
    targets
}

#[test]
fn relative_links_resolve() {
    let root = repo();
    let docs: Vec<Doc> = markdown_files().iter().map(|p| Doc::load(p)).collect();
    let mut problems = Vec::new();
    let mut checked = 0;
    for doc in &docs {
        for target in links(doc) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() {
                doc.path.clone()
            } else {
                doc.path.parent().unwrap().join(path)
            };
            let Ok(file) = file.canonicalize() else {
                problems.push(format!(
                    "{}: link to {target}: no such file",
                    rel(&doc.path)
                ));
                continue;
            };
            if !file.starts_with(&root) {
                problems.push(format!(
                    "{}: link to {target}: outside the repository ({})",
                    rel(&doc.path),
                    file.display()
                ));
                continue;
            }
            if let Some(anchor) = anchor {
                let anchors = if file.extension().is_some_and(|e| e == "md") {
                    Doc::load(&file).anchors()
                } else {
                    BTreeSet::new()
                };
                if !anchors.contains(anchor) {
                    problems.push(format!(
                        "{}: link to {target}: {} has no heading #{anchor} (it has: {})",
                        rel(&doc.path),
                        rel(&file),
                        anchors.into_iter().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} relative links found: is the link parser broken?"
    );
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

/// The first column's code spans of the Markdown table that follows `heading`.
fn table_keys(doc: &Doc, heading: &str) -> Vec<String> {
    let start = doc
        .prose
        .iter()
        .position(|l| l.trim() == heading)
        .unwrap_or_else(|| panic!("{}: no heading {heading:?}", rel(&doc.path)));
    let mut keys = Vec::new();
    let mut in_table = false;
    for line in &doc.prose[start + 1..] {
        let line = line.trim();
        if line.starts_with('|') {
            in_table = true;
            let first = line.trim_matches('|').split('|').next().unwrap_or("");
            let mut rest = first;
            while let Some(a) = rest.find('`') {
                let Some(b) = rest[a + 1..].find('`') else {
                    break;
                };
                keys.push(rest[a + 1..a + 1 + b].to_string());
                rest = &rest[a + 2 + b..];
            }
        } else if in_table {
            break;
        }
    }
    keys
}

fn config_md() -> Doc {
    Doc::load(&repo().join("docs/config.md"))
}

#[test]
fn config_fields_table_is_the_schema() {
    let documented: BTreeSet<String> = table_keys(&config_md(), "### Fields").into_iter().collect();
    let known: BTreeSet<String> = cordon_policy::known_fields()
        .iter()
        .map(|k| k.to_string())
        .chain(["$schema".to_string()])
        .collect();
    let undocumented: Vec<_> = known.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&known).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "docs/config.md's Fields table and crates/cordon-policy/src/config.rs differ: \
         keys the table lacks: {undocumented:?}; keys in the table that do not exist: {unknown:?}"
    );
}

/// Every setting of the table in crates/cordon-policy/src/settings.rs is named
/// twice in config.md's tighten-only section: where a project may lower it, and
/// among what it may not (a larger value).
#[test]
fn tighten_only_section_names_every_setting() {
    let doc = config_md();
    let text = doc.prose_text();
    let start = text
        .find("## Project configs may only tighten")
        .expect("config.md: the tighten-only section");
    let end = text[start + 2..]
        .find("\n## ")
        .map_or(text.len(), |e| start + 2 + e);
    let section = Doc {
        path: doc.path.clone(),
        prose: text[start..end].lines().map(str::to_string).collect(),
        blocks: Vec::new(),
    };
    let spans = section.code_spans();
    let missing: Vec<&str> = cordon_policy::settings::KEYS
        .iter()
        .copied()
        .filter(|key| spans.iter().filter(|s| s == key).count() < 2)
        .collect();
    assert!(
        missing.is_empty(),
        "docs/config.md's tighten-only section lacks {missing:?} where a project may lower it or where a larger value is ignored"
    );
}

/// A code span that looks like a config key (`allow_...`, `"deny_...":`) names one
/// that exists: `allow_domains` for `allow_domain` is caught.
#[test]
fn config_keys_named_in_docs_exist() {
    let known: BTreeSet<&str> = cordon_policy::known_fields().iter().copied().collect();
    // The first words of the keys, which other snake_case names (syscalls,
    // /proc files) do not start with.
    let prefixes: BTreeSet<String> = known
        .iter()
        .filter_map(|k| k.split_once('_').map(|(p, _)| format!("{p}_")))
        .collect();
    let mut problems = Vec::new();
    let mut seen = 0;
    for path in markdown_files() {
        let doc = Doc::load(&path);
        for span in doc.code_spans() {
            // `allow_write`, `"allow_write"`, `"allow_write": [...]`, `pi.allow_domain`.
            let word = span.trim_start_matches('"');
            let word = word.strip_prefix("pi.").unwrap_or(word);
            let end = word
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(word.len());
            let (key, after) = word.split_at(end);
            let keyish = after.is_empty() || after.starts_with('"');
            if !keyish || !key.contains('_') {
                continue;
            }
            if !prefixes.iter().any(|p| key.starts_with(p.as_str())) {
                continue;
            }
            seen += 1;
            if !known.contains(key) {
                problems.push(format!("{}: `{span}` names no config key", rel(&path)));
            }
        }
    }
    assert!(
        seen > 20,
        "only {seen} config keys found in the docs: is the span parser broken?"
    );
    assert!(
        problems.is_empty(),
        "config keys that do not exist (crates/cordon-policy/src/config.rs, known_fields: the fields of ConfigFile):\n{}",
        problems.join("\n")
    );
}

/// Every ```json block that is a config (at least half of its keys are config
/// keys: a `status` reply has a `backend` too) parses as a config file: no
/// unknown key, no bad value.
#[test]
fn config_examples_parse() {
    let known: BTreeSet<&str> = cordon_policy::known_fields().iter().copied().collect();
    let mut problems = Vec::new();
    let mut parsed = 0;
    for path in markdown_files() {
        let doc = Doc::load(&path);
        for (lang, body) in &doc.blocks {
            if lang != "json" {
                continue;
            }
            let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(body) else {
                continue;
            };
            let config_keys = fields
                .keys()
                .filter(|k| known.contains(k.as_str()) || *k == "$schema")
                .count();
            if config_keys == 0 || config_keys * 2 < fields.len() {
                continue;
            }
            parsed += 1;
            if let Err(e) = cordon_policy::parse_config(body.as_bytes(), &path) {
                problems.push(format!(
                    "{}: an example config does not parse: {e}\n{body}",
                    rel(&path)
                ));
            }
        }
    }
    assert!(parsed >= 5, "only {parsed} config examples found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn presets_table_is_the_presets() {
    let doc = config_md();
    let start = doc
        .prose
        .iter()
        .position(|l| l.trim() == "### Presets")
        .expect("### Presets");
    let mut documented = BTreeMap::new();
    for line in doc.prose[start + 1..].iter().map(|l| l.trim()) {
        if !line.starts_with("| `") {
            if !documented.is_empty() {
                break;
            }
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let name = cells[0].trim_matches('`').to_string();
        let hosts: Vec<String> = cells[1]
            .split(',')
            .map(|h| h.trim().trim_matches('`').to_string())
            .collect();
        documented.insert(name, hosts);
    }
    let code: BTreeMap<String, Vec<String>> = cordon_policy::PRESETS
        .iter()
        .map(|(n, h)| (n.to_string(), h.iter().map(|h| h.to_string()).collect()))
        .collect();
    assert_eq!(
        documented, code,
        "docs/config.md's Presets table differs from crates/cordon-policy/src/presets.rs"
    );
}

#[test]
fn built_in_secrets_table_is_the_defaults() {
    let documented: BTreeSet<String> = table_keys(&config_md(), "## Built-in secrets")
        .into_iter()
        .collect();
    let code: BTreeSet<String> = cordon_policy::defaults::HOME_SECRETS
        .iter()
        .map(|s| s.to_string())
        .collect();
    let missing: Vec<_> = code.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&code).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/config.md's Built-in secrets table and defaults::HOME_SECRETS differ: \
         not in the table: {missing:?}; in the table but not hidden: {extra:?}"
    );
}

/// The options of `cordon SUB --help`: each flag, and whether it takes a value.
fn options(sub: &str) -> BTreeMap<String, bool> {
    let out = Command::new(env!("CARGO_BIN_EXE_cordon"))
        .args([sub, "--help"])
        .output()
        .expect("run cordon --help");
    assert!(out.status.success(), "cordon {sub} --help failed");
    let help = String::from_utf8(out.stdout).expect("UTF-8 help");
    let mut flags = BTreeMap::new();
    for line in help.lines() {
        let line = line.trim_start();
        let line = line.strip_prefix("-h, ").unwrap_or(line);
        let line = line.strip_prefix("-V, ").unwrap_or(line);
        if let Some(rest) = line.strip_prefix("--") {
            let mut words = rest.split_whitespace();
            let name = words.next().unwrap_or("");
            if !name.is_empty() {
                let takes_value = words.next().is_some_and(|w| w.starts_with('<'));
                flags.insert(format!("--{name}"), takes_value);
            }
        }
    }
    assert!(
        flags.contains_key("--help"),
        "cordon {sub} --help lists no options"
    );
    flags
}

const SUBCOMMANDS: &[&str] = &[
    "run",
    "shell",
    "pi",
    "serve",
    "doctor",
    "policy",
    "completions",
    "vm",
];

#[test]
fn readme_options_table_is_cordon_run_help() {
    let readme = Doc::load(&repo().join("README.md"));
    let start = readme
        .prose
        .iter()
        .position(|l| l.starts_with("Options of `run`"))
        .expect("README: the options table's heading line");
    let mut documented = BTreeSet::new();
    let mut in_table = false;
    for line in &readme.prose[start + 1..] {
        if let Some(row) = line.strip_prefix("| `--") {
            in_table = true;
            let flag = row.split([' ', '`']).next().unwrap();
            documented.insert(format!("--{flag}"));
        } else if in_table && !line.starts_with('|') {
            break;
        }
    }
    let mut help: BTreeSet<String> = options("run").into_keys().collect();
    help.remove("--help");
    assert_eq!(
        documented, help,
        "the README's options table and `cordon run --help` differ"
    );
    // "Options of run, shell, pi, serve and policy": each has every one of them.
    for sub in ["shell", "pi", "serve", "policy"] {
        let theirs = options(sub);
        let missing: Vec<_> = help.iter().filter(|f| !theirs.contains_key(*f)).collect();
        assert!(missing.is_empty(), "cordon {sub} lacks {missing:?}");
    }
}

/// Every `cordon SUB ...` the docs write (in code spans and code blocks) names a
/// subcommand that exists and, up to the command it runs, options it has.
#[test]
fn cordon_commands_in_docs_exist() {
    let help: BTreeMap<&str, BTreeMap<String, bool>> =
        SUBCOMMANDS.iter().map(|s| (*s, options(s))).collect();
    let mut problems = Vec::new();
    let mut checked = 0;
    for path in markdown_files() {
        let doc = Doc::load(&path);
        let mut commands = doc.code_spans();
        for (lang, body) in &doc.blocks {
            if matches!(lang.as_str(), "" | "sh" | "bash" | "console" | "shell") {
                commands.extend(body.replace("\\\n", " ").lines().map(str::to_string));
            }
        }
        for text in commands {
            // A shell comment is prose.
            let text = match text.find(" #") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            // A command line starts with cordon (after a prompt or sudo); elsewhere
            // the word is prose in a message (`... run cordon in a scope`).
            let words: Vec<&str> = text
                .split_whitespace()
                .skip_while(|w| matches!(*w, "$" | "#" | "sudo"))
                .collect();
            if words.first() != Some(&"cordon") {
                continue;
            }
            let Some(sub) = words.get(1) else {
                continue;
            };
            // `cordon run`, `cordon doctor --json`; not `cordon:` (a message)
            // nor `cordon pi: ...` (an origin).
            if !sub.chars().all(|c| c.is_ascii_lowercase()) {
                continue;
            }
            let Some(flags) = help.get(sub) else {
                problems.push(format!("{}: `{text}`: no subcommand {sub}", rel(&path)));
                continue;
            };
            checked += 1;
            let mut rest = words[2..].iter();
            while let Some(word) = rest.next() {
                let word = word.trim_matches(|c| c == '`' || c == '(' || c == ')');
                if word == "--" || !word.starts_with("--") {
                    break; // the command (or pi's arguments) begins
                }
                let (flag, inline_value) = match word.split_once('=') {
                    Some((f, _)) => (f, true),
                    None => (word, false),
                };
                match flags.get(flag) {
                    Some(true) if !inline_value => {
                        rest.next();
                    }
                    Some(_) => {}
                    // `cordon pi`: a flag cordon does not have starts pi's.
                    None if *sub == "pi" => break,
                    None => {
                        problems.push(format!(
                            "{}: `{text}`: cordon {sub} has no {flag}",
                            rel(&path)
                        ));
                        break;
                    }
                }
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} cordon commands found in the docs"
    );
    assert!(
        problems.is_empty(),
        "commands the docs show that cordon does not have:\n{}",
        problems.join("\n")
    );
}

/// The code spans of the paragraph (or list item) that holds `marker`.
fn spans_after(doc: &Doc, marker: &str) -> Vec<String> {
    let text = doc.prose_text();
    let start = text
        .find(marker)
        .unwrap_or_else(|| panic!("{}: no {marker:?}", rel(&doc.path)));
    let rest = &text[start..];
    // To the end of the list item or paragraph.
    let end = ["\n- ", "\n\n"]
        .iter()
        .filter_map(|e| rest.find(e))
        .min()
        .unwrap_or(rest.len());
    let part = Doc {
        path: doc.path.clone(),
        prose: rest[..end].lines().map(str::to_string).collect(),
        blocks: Vec::new(),
    };
    part.code_spans()
}

/// The environment allowlist, as config.md and the README list it, is DEFAULT_ENV.
#[test]
fn environment_allowlist_is_the_defaults() {
    let code: Vec<String> = cordon_policy::defaults::DEFAULT_ENV
        .iter()
        .map(|v| v.to_string())
        .collect();
    for (file, marker) in [
        (
            "docs/config.md",
            "- Environment: only these variables are passed",
        ),
        ("README.md", "- **Environment.** An allowlist"),
    ] {
        let doc = Doc::load(&repo().join(file));
        let spans = spans_after(&doc, marker);
        let listed: Vec<String> = spans
            .into_iter()
            .filter(|s| s.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .take(code.len())
            .collect();
        assert_eq!(
            listed, code,
            "{file}: the environment allowlist differs from defaults::DEFAULT_ENV"
        );
    }
}

/// The protected paths config.md lists are defaults::PROTECTED, and the home
/// files table names every entry of HOME_PROTECTED and CONFIG_PROTECTED.
#[test]
fn protected_paths_are_the_defaults() {
    let doc = config_md();
    let spans = spans_after(&doc, "- Protected paths: inside every writable root");
    let listed: Vec<&str> = spans
        .iter()
        .map(String::as_str)
        .filter(|s| s.starts_with('.'))
        .take(cordon_policy::defaults::PROTECTED.len())
        .collect();
    assert_eq!(
        listed,
        cordon_policy::defaults::PROTECTED,
        "docs/config.md's protected paths differ from defaults::PROTECTED"
    );
    let table: BTreeSet<String> = table_keys(&doc, "### Protected home files")
        .into_iter()
        .collect();
    let missing: Vec<String> = cordon_policy::HOME_PROTECTED
        .iter()
        .map(|p| p.to_string())
        .chain(
            cordon_policy::CONFIG_PROTECTED
                .iter()
                .map(|p| format!(".config/{p}")),
        )
        .filter(|p| !table.contains(p))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/config.md's Protected home files table lacks {missing:?}"
    );
}
