//! Named sets of hosts for `--allow-preset NAME` / `"allow_preset"`: what an agent
//! or a package manager needs to reach, and no more. Each entry is a
//! [`crate::DomainPattern`] (ports 80 and 443). docs/config.md lists them all.

/// Every preset, in documentation order: its name and its host patterns.
pub const PRESETS: &[(&str, &[&str])] = &[
    // The Anthropic API, and the OAuth token endpoint a logged-in agent refreshes
    // its token at.
    ("anthropic", &["api.anthropic.com", "console.anthropic.com"]),
    // The OpenAI API, and ChatGPT sign-in (auth) and its backend (Codex with a
    // ChatGPT plan).
    (
        "openai",
        &["api.openai.com", "auth.openai.com", "chatgpt.com"],
    ),
    // The Gemini API, Code Assist (Gemini CLI with a Google login), and the OAuth
    // token endpoint.
    (
        "gemini",
        &[
            "generativelanguage.googleapis.com",
            "cloudcode-pa.googleapis.com",
            "oauth2.googleapis.com",
        ],
    ),
    // The Copilot API (per-plan hosts such as api.individual.githubcopilot.com),
    // GitHub's token exchange and device login.
    (
        "github-copilot",
        &[
            "api.githubcopilot.com",
            "*.githubcopilot.com",
            "copilot-proxy.githubusercontent.com",
            "api.github.com",
            "github.com",
        ],
    ),
    ("openrouter", &["openrouter.ai"]),
    // git over HTTPS, the API, archives, release assets and raw files.
    (
        "github",
        &[
            "github.com",
            "api.github.com",
            "codeload.github.com",
            "objects.githubusercontent.com",
            "raw.githubusercontent.com",
            "*.githubusercontent.com",
        ],
    ),
    ("npm", &["registry.npmjs.org"]),
    ("pypi", &["pypi.org", "files.pythonhosted.org"]),
    // The registry's index, its downloads, and rustup's toolchains.
    (
        "crates",
        &[
            "crates.io",
            "index.crates.io",
            "static.crates.io",
            "static.rust-lang.org",
        ],
    ),
];

/// The host patterns of the preset `name`, or `None` if there is no such preset.
pub fn preset(name: &str) -> Option<&'static [&'static str]> {
    PRESETS.iter().find(|(n, _)| *n == name).map(|(_, h)| *h)
}

/// The preset names, comma-separated, for error messages.
pub fn preset_names() -> String {
    PRESETS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `preset(name)`, or an error that names the known presets.
pub(crate) fn lookup(name: &str) -> Result<&'static [&'static str], crate::ValueError> {
    preset(name).ok_or_else(|| crate::ValueError::UnknownPreset {
        name: name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DomainPattern;

    #[test]
    fn every_preset_host_parses() {
        for (name, hosts) in PRESETS {
            assert!(!hosts.is_empty(), "{name}");
            for h in *hosts {
                let p = DomainPattern::parse(h).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(p.port.is_none(), "{name}: {h}");
                assert_eq!(p.to_string(), *h, "{name}: not normalised");
            }
        }
    }

    #[test]
    fn lookup_by_name() {
        assert_eq!(preset("openrouter"), Some(&["openrouter.ai"][..]));
        assert!(preset("github").unwrap().contains(&"codeload.github.com"));
        assert!(preset("Anthropic").is_none());
        let e = lookup("antropic").unwrap_err().to_string();
        assert!(e.contains("unknown preset \"antropic\""), "{e}");
        assert!(
            e.contains(
                "anthropic, openai, gemini, github-copilot, openrouter, github, npm, pypi, crates"
            ),
            "{e}"
        );
    }
}
