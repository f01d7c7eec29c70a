//! `find` and `grep`: parallel walks with ripgrep's crates.

use crate::error::ToolError;
use crate::guard::{Guard, Need, is_placeholder, lossy, verdict};
use crate::protocol::{FindParams, FindResult, GrepMatch, GrepParams, GrepResult};
use crate::server::Token;
use cordon_policy::Access;
use globset::{GlobBuilder, GlobMatcher};
use grep_regex::{RegexMatcher, RegexMatcherBuilder};
use grep_searcher::{BinaryDetection, Searcher, SearcherBuilder, Sink, SinkContext, SinkMatch};
use ignore::{WalkBuilder, WalkState};
use std::collections::{BTreeMap, BinaryHeap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Longest `text` of a grep match, in bytes (minified files have huge lines).
pub const MAX_LINE: usize = 4096;
/// Most context lines before and after a match.
pub const MAX_CONTEXT: u64 = 10_000;

/// A glob on paths relative to the walk's root; without `/` it matches file names.
struct PathGlob {
    matcher: GlobMatcher,
    by_name: bool,
}

impl PathGlob {
    fn new(param: &str, pattern: &str) -> Result<PathGlob, ToolError> {
        let pattern = pattern.strip_prefix("./").unwrap_or(pattern);
        if pattern.is_empty() {
            return Err(ToolError::invalid(param, "must not be empty"));
        }
        let glob = GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| ToolError::invalid(param, format!("is not a valid glob ({e})")))?;
        Ok(PathGlob {
            matcher: glob.compile_matcher(),
            by_name: !pattern.contains('/'),
        })
    }

    fn is_match(&self, rel: &Path) -> bool {
        if self.by_name {
            rel.file_name().is_some_and(|n| self.matcher.is_match(n))
        } else {
            self.matcher.is_match(rel)
        }
    }
}

/// A walker over `root` honouring the `hidden` and `gitignore` switches, never
/// entering `.git`, and skipping paths the policy denies.
fn walker(g: &Guard, root: &Path, hidden: bool, gitignore: bool) -> WalkBuilder {
    let mut b = WalkBuilder::new(root);
    b.hidden(!hidden)
        .parents(gitignore)
        .ignore(gitignore)
        .git_ignore(gitignore)
        .git_global(gitignore)
        .git_exclude(gitignore)
        .require_git(false)
        .follow_links(false);
    let denies = g.denies_under(root);
    let policy = Arc::clone(&g.policy);
    b.filter_entry(move |e| {
        if e.depth() > 0 && e.file_name() == ".git" {
            return false;
        }
        if hidden && is_placeholder(&policy, e.path()) {
            return false;
        }
        !denies || verdict(&policy, e.path()).is_none_or(|v| v.access != Access::Deny)
    });
    b
}

fn root_dir(
    g: &Guard,
    op: &'static str,
    path: Option<&str>,
) -> Result<(PathBuf, std::fs::Metadata), ToolError> {
    let path = match path {
        Some(raw) => g.resolve(op, "path", raw, Need::Read)?,
        None => g.policy.workspace.clone(),
    };
    let md = std::fs::metadata(&path).map_err(|e| ToolError::io(op, &path, e))?;
    Ok((path, md))
}

fn limit(limit: Option<u64>, default: u64) -> usize {
    usize::try_from(limit.unwrap_or(default)).unwrap_or(usize::MAX)
}

pub fn find(g: &Guard, p: &FindParams, token: &Token) -> Result<FindResult, ToolError> {
    const OP: &str = "find";
    let glob = PathGlob::new("pattern", &p.pattern)?;
    let limit = limit(p.limit, 1000);
    let hidden = p.hidden.unwrap_or(false);
    let gitignore = p.gitignore.unwrap_or(true);
    let (root, md) = root_dir(g, OP, p.path.as_deref())?;
    if !md.is_dir() {
        return Err(ToolError::errno(OP, &root, libc::ENOTDIR));
    }
    // The `limit` smallest paths (a max-heap), and whether any was dropped.
    let acc: Mutex<(BinaryHeap<String>, bool)> = Mutex::new((BinaryHeap::new(), false));
    walker(g, &root, hidden, gitignore)
        .build_parallel()
        .run(|| {
            let (acc, glob, root) = (&acc, &glob, &root);
            Box::new(move |res| {
                if token.is_cancelled() {
                    return WalkState::Quit;
                }
                let Ok(entry) = res else {
                    return WalkState::Continue;
                };
                if entry.depth() == 0 || entry.file_type().is_none_or(|t| t.is_dir()) {
                    return WalkState::Continue;
                }
                let Ok(rel) = entry.path().strip_prefix(root) else {
                    return WalkState::Continue;
                };
                if glob.is_match(rel) {
                    let rel = lossy(rel.as_os_str());
                    let mut a = acc.lock().unwrap_or_else(|e| e.into_inner());
                    a.0.push(rel);
                    if a.0.len() > limit {
                        a.0.pop();
                        a.1 = true;
                    }
                }
                WalkState::Continue
            })
        });
    if token.is_cancelled() {
        return Err(ToolError::Cancelled(format!("find {}", root.display())));
    }
    let (heap, truncated) = acc.into_inner().unwrap_or_else(|e| e.into_inner());
    Ok(FindResult {
        paths: heap.into_sorted_vec(),
        truncated,
    })
}

/// One line of grep output.
struct Hit {
    line: u64,
    context: bool,
    text: String,
}

/// A file's hits: at most `max` matches (plus their context).
struct FileHits {
    hits: Vec<Hit>,
    matches: usize,
    /// More matches than `max` were in the file.
    more: bool,
}

struct Collect {
    max: usize,
    file: FileHits,
    binary: bool,
}

fn line_text(bytes: &[u8]) -> String {
    let mut b = bytes;
    while let Some((&last, rest)) = b.split_last() {
        if last == b'\n' || last == b'\r' {
            b = rest;
        } else {
            break;
        }
    }
    let mut s = String::from_utf8_lossy(b).into_owned();
    if s.len() > MAX_LINE {
        let mut cut = MAX_LINE;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

impl Sink for Collect {
    type Error = io::Error;

    fn matched(&mut self, _: &Searcher, m: &SinkMatch<'_>) -> Result<bool, io::Error> {
        if self.file.matches >= self.max {
            self.file.more = true;
            return Ok(false);
        }
        self.file.matches += 1;
        self.file.hits.push(Hit {
            line: m.line_number().unwrap_or(0),
            context: false,
            text: line_text(m.bytes()),
        });
        Ok(true)
    }

    fn context(&mut self, _: &Searcher, c: &SinkContext<'_>) -> Result<bool, io::Error> {
        self.file.hits.push(Hit {
            line: c.line_number().unwrap_or(0),
            context: true,
            text: line_text(c.bytes()),
        });
        Ok(true)
    }

    fn binary_data(&mut self, _: &Searcher, _: u64) -> Result<bool, io::Error> {
        self.binary = true;
        Ok(false)
    }
}

/// Files' hits by path, pruned to the smallest paths holding `limit` matches.
struct GrepAcc {
    files: BTreeMap<String, FileHits>,
    matches: usize,
    truncated: bool,
}

impl GrepAcc {
    fn add(&mut self, path: String, f: FileHits, limit: usize) {
        self.truncated |= f.more;
        self.matches += f.matches;
        self.files.insert(path, f);
        while let Some(entry) = self.files.last_entry() {
            let n = entry.get().matches;
            if self.matches - n >= limit {
                entry.remove();
                self.matches -= n;
                self.truncated = true;
            } else {
                break;
            }
        }
    }
}

fn search_file(
    searcher: &mut Searcher,
    matcher: &RegexMatcher,
    path: &Path,
    max: usize,
) -> Option<FileHits> {
    let mut sink = Collect {
        max,
        file: FileHits {
            hits: Vec::new(),
            matches: 0,
            more: false,
        },
        binary: false,
    };
    searcher.search_path(matcher, path, &mut sink).ok()?;
    (!sink.binary && sink.file.matches > 0).then_some(sink.file)
}

pub fn grep(g: &Guard, p: &GrepParams, token: &Token) -> Result<GrepResult, ToolError> {
    const OP: &str = "grep";
    let pattern = p.pattern.as_str();
    let literal = p.literal.unwrap_or(false);
    let ignore_case = p.ignore_case.unwrap_or(false);
    let glob = p
        .glob
        .as_deref()
        .map(|gl| PathGlob::new("glob", gl))
        .transpose()?;
    let context = p.context.unwrap_or(0);
    if context > MAX_CONTEXT {
        return Err(ToolError::invalid(
            "context",
            format!("must be at most {MAX_CONTEXT}"),
        ));
    }
    let limit = limit(p.limit, 100);
    let hidden = p.hidden.unwrap_or(false);
    let gitignore = p.gitignore.unwrap_or(true);
    let matcher = RegexMatcherBuilder::new()
        .case_insensitive(ignore_case)
        .fixed_strings(literal)
        .line_terminator(Some(b'\n'))
        .build(pattern)
        .map_err(|e| ToolError::invalid("pattern", format!("is not a valid regex ({e})")))?;
    let (root, md) = root_dir(g, OP, p.path.as_deref())?;
    let searcher = || {
        SearcherBuilder::new()
            .line_number(true)
            .before_context(context as usize)
            .after_context(context as usize)
            .binary_detection(BinaryDetection::quit(b'\x00'))
            .build()
    };
    let mut acc = GrepAcc {
        files: BTreeMap::new(),
        matches: 0,
        truncated: false,
    };
    if md.is_dir() {
        let shared = Mutex::new(acc);
        walker(g, &root, hidden, gitignore)
            .build_parallel()
            .run(|| {
                let (shared, glob, root, matcher) = (&shared, &glob, &root, matcher.clone());
                let mut s = searcher();
                Box::new(move |res| {
                    if token.is_cancelled() {
                        return WalkState::Quit;
                    }
                    let Ok(entry) = res else {
                        return WalkState::Continue;
                    };
                    if !entry.file_type().is_some_and(|t| t.is_file()) {
                        return WalkState::Continue;
                    }
                    let Ok(rel) = entry.path().strip_prefix(root) else {
                        return WalkState::Continue;
                    };
                    if glob.as_ref().is_some_and(|gl| !gl.is_match(rel)) {
                        return WalkState::Continue;
                    }
                    if let Some(hits) = search_file(&mut s, &matcher, entry.path(), limit) {
                        let rel = lossy(rel.as_os_str());
                        let mut a = shared.lock().unwrap_or_else(|e| e.into_inner());
                        a.add(rel, hits, limit);
                    }
                    WalkState::Continue
                })
            });
        acc = shared.into_inner().unwrap_or_else(|e| e.into_inner());
    } else if md.is_file() {
        let name = root.file_name().map(lossy).unwrap_or_default();
        if glob.as_ref().is_none_or(|gl| gl.is_match(Path::new(&name))) {
            if let Some(hits) = search_file(&mut searcher(), &matcher, &root, limit) {
                acc.add(name, hits, limit);
            }
        }
    } else {
        return Err(ToolError::errno(OP, &root, libc::EINVAL));
    }
    if token.is_cancelled() {
        return Err(ToolError::Cancelled(format!("grep {}", root.display())));
    }
    let mut out = Vec::new();
    let mut count = 0usize;
    let mut truncated = acc.truncated || acc.matches > limit;
    'files: for (path, f) in acc.files {
        let mut last_match: Option<u64> = None;
        for h in f.hits {
            if !h.context {
                if count == limit {
                    truncated = true;
                    break 'files;
                }
                count += 1;
                last_match = Some(h.line);
            } else if count == limit
                && last_match.is_none_or(|l| h.line > l.saturating_add(context))
            {
                // Context of a match beyond the limit.
                continue;
            }
            out.push(GrepMatch {
                path: path.clone(),
                line: h.line,
                text: h.text,
                context: h.context,
            });
        }
    }
    Ok(GrepResult {
        matches: out,
        truncated,
    })
}
