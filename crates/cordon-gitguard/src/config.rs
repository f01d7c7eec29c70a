//! Git's config format, read strictly enough to tell which settings a file holds,
//! and an allowlist of settings that never make git run a program.
//!
//! Git runs commands named by many settings (`core.fsmonitor`, `core.pager`,
//! `pager.*`, `core.hooksPath`, `core.sshCommand`, `include.path`, filter, diff and
//! merge drivers, `alias.*`, `credential.helper`, ...) and grows new ones, so the
//! judgement is an allowlist: a setting not named here counts as one that may run
//! code. A file that does not parse counts as wholly unsafe.

use std::fmt::Write as _;

/// One `section[.subsection].key = value` of a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Lower case, as git compares it.
    pub section: String,
    /// Case-sensitive, as git compares it.
    pub subsection: Option<String>,
    /// Lower case, as git compares it.
    pub key: String,
    /// `None` for a bare `key` (boolean true).
    pub value: Option<String>,
}

impl Entry {
    /// The setting's name as `git config` prints it.
    pub fn name(&self) -> String {
        match &self.subsection {
            Some(sub) => format!("{}.{}.{}", self.section, sub, self.key),
            None => format!("{}.{}", self.section, self.key),
        }
    }
}

/// Why a config file could not be read as git config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub problem: &'static str,
}

/// Parses a config file's text into its entries, in order.
pub fn parse(text: &str) -> Result<Vec<Entry>, ParseError> {
    let mut parser = Parser {
        chars: text.chars().collect(),
        pos: 0,
        line: 1,
    };
    parser.entries()
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    line: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn fail<T>(&self, problem: &'static str) -> Result<T, ParseError> {
        Err(ParseError {
            line: self.line,
            problem,
        })
    }

    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\r')) {
            self.bump();
        }
    }

    fn skip_comment(&mut self) {
        while let Some(c) = self.peek() {
            if c == '\n' {
                break;
            }
            self.bump();
        }
    }

    fn entries(&mut self) -> Result<Vec<Entry>, ParseError> {
        let mut out = Vec::new();
        let mut section: Option<(String, Option<String>)> = None;
        // A UTF-8 byte order mark is allowed at the start.
        if self.peek() == Some('\u{feff}') {
            self.bump();
        }
        loop {
            self.skip_blanks();
            match self.peek() {
                None => return Ok(out),
                Some('\n') => {
                    self.bump();
                }
                Some('#' | ';') => self.skip_comment(),
                Some('[') => {
                    self.bump();
                    section = Some(self.section_header()?);
                }
                Some(c) if c.is_ascii_alphabetic() => {
                    let Some((name, sub)) = &section else {
                        return self.fail("a setting before any [section]");
                    };
                    let key = self.key();
                    let value = self.value()?;
                    out.push(Entry {
                        section: name.clone(),
                        subsection: sub.clone(),
                        key,
                        value,
                    });
                }
                Some(_) => return self.fail("an unexpected character"),
            }
        }
    }

    /// After `[`: `name]`, `name "sub"]` or the old `name.sub]`.
    fn section_header(&mut self) -> Result<(String, Option<String>), ParseError> {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                name.push(c.to_ascii_lowercase());
                self.bump();
            } else {
                break;
            }
        }
        if name.is_empty() {
            return self.fail("an empty section name");
        }
        match self.bump() {
            Some(']') => Ok(match name.split_once('.') {
                Some((section, sub)) => (section.to_string(), Some(sub.to_string())),
                None => (name, None),
            }),
            Some(' ' | '\t') => {
                self.skip_blanks();
                if self.bump() != Some('"') {
                    return self.fail("a section header without a quoted subsection");
                }
                let mut sub = String::new();
                loop {
                    match self.bump() {
                        Some('"') => break,
                        Some('\\') => match self.bump() {
                            Some('\n') | None => return self.fail("an unterminated subsection"),
                            Some(c) => sub.push(c),
                        },
                        Some('\n') | None => return self.fail("an unterminated subsection"),
                        Some(c) => sub.push(c),
                    }
                }
                if self.bump() != Some(']') {
                    return self.fail("a section header not closed by ]");
                }
                if name.contains('.') {
                    return self.fail("a dotted section name with a subsection");
                }
                Ok((name, Some(sub)))
            }
            _ => self.fail("a malformed section header"),
        }
    }

    fn key(&mut self) -> String {
        let mut key = String::new();
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == '-' {
                key.push(c.to_ascii_lowercase());
                self.bump();
            } else {
                break;
            }
        }
        key
    }

    /// After a key: `= value`, or nothing (a boolean), up to the end of the line.
    fn value(&mut self) -> Result<Option<String>, ParseError> {
        self.skip_blanks();
        match self.peek() {
            None | Some('\n') => return Ok(None),
            Some('#' | ';') => {
                self.skip_comment();
                return Ok(None);
            }
            Some('=') => {
                self.bump();
            }
            Some(_) => return self.fail("a setting name followed by neither = nor a line end"),
        }
        self.skip_blanks();
        let mut value = String::new();
        // Blanks outside quotes are kept only when something follows them.
        let mut pending_blanks = String::new();
        let mut quoted = false;
        loop {
            let Some(c) = self.peek() else {
                if quoted {
                    return self.fail("an unterminated quote");
                }
                break;
            };
            match c {
                '\n' if quoted => return self.fail("an unterminated quote"),
                '\n' => break,
                '#' | ';' if !quoted => {
                    self.skip_comment();
                    break;
                }
                ' ' | '\t' | '\r' if !quoted => {
                    pending_blanks.push(c);
                    self.bump();
                }
                '"' => {
                    value.push_str(&std::mem::take(&mut pending_blanks));
                    quoted = !quoted;
                    self.bump();
                }
                '\\' => {
                    value.push_str(&std::mem::take(&mut pending_blanks));
                    self.bump();
                    match self.bump() {
                        Some('\n') => {}
                        Some('n') => value.push('\n'),
                        Some('t') => value.push('\t'),
                        Some('b') => value.push('\u{8}'),
                        Some('"') => value.push('"'),
                        Some('\\') => value.push('\\'),
                        _ => return self.fail("an invalid escape"),
                    }
                }
                _ => {
                    value.push_str(&std::mem::take(&mut pending_blanks));
                    value.push(c);
                    self.bump();
                }
            }
        }
        Ok(Some(value))
    }
}

/// Whether git runs no program because of this setting. Names follow git's
/// documentation (git-config(1)); each listed setting takes a flag, a number, a
/// name or a path that git reads as data, never as a command.
pub fn is_safe(entry: &Entry) -> bool {
    let value = entry.value.as_deref().unwrap_or("true");
    let key = entry.key.as_str();
    match (entry.section.as_str(), entry.subsection.as_deref()) {
        ("core", None) => matches!(
            key,
            "repositoryformatversion"
                | "filemode"
                | "bare"
                | "logallrefupdates"
                | "ignorecase"
                | "precomposeunicode"
                | "symlinks"
                | "autocrlf"
                | "safecrlf"
                | "eol"
                | "checkroundtripencoding"
                | "sparsecheckout"
                | "sparsecheckoutcone"
                | "quotepath"
                | "abbrev"
                | "compression"
                | "loosecompression"
                | "bigfilethreshold"
                | "checkstat"
                | "trustctime"
                | "untrackedcache"
                | "splitindex"
                | "commitgraph"
                | "multipackindex"
                | "preloadindex"
                | "longpaths"
                | "whitespace"
                | "warnambiguousrefs"
                | "protecthfs"
                | "protectntfs"
                | "hidedotfiles"
                | "fsync"
                | "fsyncmethod"
                | "packedgitlimit"
                | "packedgitwindowsize"
                | "deltabasecachelimit"
                | "filesrefdeletelockfile"
        ),
        ("extensions", None) => matches!(
            key,
            "objectformat" | "worktreeconfig" | "refstorage" | "preciousobjects" | "noop"
        ),
        ("remote", Some(_)) => match key {
            "url" | "pushurl" => is_plain_url(value),
            "fetch" | "push" | "tagopt" | "mirror" | "prune" | "prunetags"
            | "skipdefaultupdate" | "skipfetchall" | "promisor" | "partialclonefilter" => true,
            _ => false,
        },
        ("branch", Some(_)) => {
            matches!(
                key,
                "remote" | "merge" | "rebase" | "pushremote" | "description"
            )
        }
        ("submodule", Some(_)) => match key {
            "url" => is_plain_url(value),
            "update" => matches!(value, "checkout" | "rebase" | "merge" | "none"),
            "active" | "branch" | "fetchrecursesubmodules" | "ignore" | "shallow" => true,
            _ => false,
        },
        // The drivers `git lfs install` writes, and nothing else of a filter.
        ("filter", Some("lfs")) => matches!(
            (key, value),
            ("clean", "git-lfs clean -- %f")
                | ("smudge", "git-lfs smudge -- %f")
                | ("process", "git-lfs filter-process")
                | ("required", "true")
        ),
        ("user", None) => matches!(key, "name" | "email" | "signingkey" | "useconfigonly"),
        ("init", None) => key == "defaultbranch",
        ("pull", None) => matches!(key, "rebase" | "ff"),
        ("push", None) => matches!(key, "default" | "autosetupremote" | "followtags"),
        ("fetch", None) => matches!(key, "prune" | "prunetags" | "writecommitgraph" | "parallel"),
        ("merge", None) => matches!(key, "ff" | "conflictstyle" | "renames" | "log"),
        ("rebase", None) => matches!(key, "autosquash" | "autostash" | "updaterefs" | "stat"),
        ("diff", None) => matches!(
            key,
            "algorithm" | "renames" | "colormoved" | "mnemonicprefix" | "noprefix" | "context"
        ),
        ("status", None) => matches!(
            key,
            "showuntrackedfiles" | "short" | "branch" | "submodulesummary" | "relativepaths"
        ),
        ("index", None) => matches!(key, "version" | "threads" | "skiphash"),
        ("gc", None) => matches!(
            key,
            "auto" | "autopacklimit" | "autodetach" | "reflogexpire"
        ),
        ("color", _) | ("advice", None) | ("i18n", None) | ("rerere", None) => true,
        ("commit", None) => matches!(key, "gpgsign" | "verbose" | "status" | "cleanup"),
        ("tag", None) => matches!(key, "gpgsign" | "sort"),
        ("log", None) => matches!(key, "date" | "decorate" | "follow" | "abbrevcommit"),
        ("worktree", None) => key == "guessremote",
        _ => false,
    }
}

/// A URL or path that names a place, not a program: no transport helper
/// (`ext::`, `fd::`, any `<helper>::`), no leading `-` (an option to ssh).
fn is_plain_url(value: &str) -> bool {
    !value.starts_with('-') && !value.contains("::")
}

/// The entries as a config file git reads back to the same settings.
pub fn render(entries: &[Entry]) -> String {
    let mut out = String::new();
    let mut current: Option<(&str, Option<&str>)> = None;
    for e in entries {
        let header = (e.section.as_str(), e.subsection.as_deref());
        if current != Some(header) {
            match header.1 {
                Some(sub) => {
                    let sub = sub.replace('\\', "\\\\").replace('"', "\\\"");
                    let _ = writeln!(out, "[{} \"{}\"]", header.0, sub);
                }
                None => {
                    let _ = writeln!(out, "[{}]", header.0);
                }
            }
            current = Some(header);
        }
        match &e.value {
            None => {
                let _ = writeln!(out, "\t{}", e.key);
            }
            Some(v) => {
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
                    .replace('\t', "\\t")
                    .replace('\u{8}', "\\b");
                let _ = writeln!(out, "\t{} = \"{}\"", e.key, v);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<(String, Option<String>)> {
        parse(text)
            .unwrap()
            .into_iter()
            .map(|e| (e.name(), e.value))
            .collect()
    }

    #[test]
    fn reads_what_git_init_writes() {
        let text = "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n\tlogallrefupdates = true\n";
        let entries = parse(text).unwrap();
        assert_eq!(entries.len(), 4);
        assert!(entries.iter().all(is_safe));
    }

    #[test]
    fn reads_the_forms_git_accepts() {
        let text = "\u{feff}# c\n[Core] Pager = \"less\" ; c\n[remote \"o\\\"x\"]\n url = a b  \n[pager.status]\nbare\n[a]k=\"x\\ny\"\\\n z\n";
        assert_eq!(
            names(text),
            vec![
                ("core.pager".into(), Some("less".into())),
                ("remote.o\"x.url".into(), Some("a b".into())),
                ("pager.status.bare".into(), None),
                ("a.k".into(), Some("x\ny z".into())),
            ]
        );
    }

    #[test]
    fn what_does_not_parse_is_an_error() {
        for bad in [
            "k = v\n",
            "[core\n",
            "[core \"x]\n",
            "[core]\nk = \"open\n",
            "[core]\nk = \\q\n",
            "[core]\n=v\n",
            "[]\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn code_running_settings_are_not_safe() {
        for text in [
            "[core]\nfsmonitor = touch /tmp/P\n",
            "[core]\npager = x\n",
            "[core]\nhooksPath = h\n",
            "[core]\nsshCommand = x\n",
            "[core]\neditor = x\n",
            "[pager]\nstatus = x\n",
            "[include]\npath = ../x\n",
            "[includeIf \"gitdir:/\"]\npath = ../x\n",
            "[filter \"x\"]\nclean = x\n",
            "[filter \"lfs\"]\nclean = sh -c x\n",
            "[diff \"x\"]\ntextconv = x\n",
            "[diff]\nexternal = x\n",
            "[alias]\nst = !x\n",
            "[credential]\nhelper = !x\n",
            "[remote \"o\"]\nurl = ext::sh -c x\n",
            "[remote \"o\"]\nuploadpack = x\n",
            "[submodule \"s\"]\nupdate = !x\n",
            "[gpg]\nprogram = x\n",
            "[sequence]\neditor = x\n",
            "[protocol \"ext\"]\nallow = always\n",
        ] {
            let entries = parse(text).unwrap();
            assert!(!entries.iter().all(is_safe), "{text:?}");
        }
    }

    #[test]
    fn rendering_reads_back_the_same() {
        let text = "[remote \"o\\\"r\"]\nurl = \"a\\\\b c\"\n[user]\nname = \"x\\ty\"\n[b]\nflag\n";
        let entries = parse(text).unwrap();
        assert_eq!(parse(&render(&entries)).unwrap(), entries);
    }
}
