//! Named sets of hosts for `--allow-preset NAME` / `"allow_preset"`: what an agent
//! or a package manager needs to reach, and no more. Each entry is a
//! [`crate::DomainPattern`] (ports 80 and 443). docs/config.md lists them all.

/// The hosts of each service cordon knows, each list written once: the presets
/// below are made of them, and so is pi's provider table (cordon-session), so a
/// host changes in one place. Each entry is a [`crate::DomainPattern`] (no port).
pub mod hosts {
    /// The Anthropic API, and the OAuth token endpoint a logged-in agent refreshes
    /// its token at.
    pub const ANTHROPIC: &[&str] = &["api.anthropic.com", "console.anthropic.com"];
    /// The OpenAI API.
    pub const OPENAI: &[&str] = &["api.openai.com"];
    /// ChatGPT sign-in (auth) and its backend (Codex with a ChatGPT plan).
    pub const CHATGPT: &[&str] = &["auth.openai.com", "chatgpt.com"];
    /// The Gemini API.
    pub const GEMINI: &[&str] = &["generativelanguage.googleapis.com"];
    /// Code Assist (Gemini CLI with a Google login), and the OAuth token endpoint.
    pub const GEMINI_CODE_ASSIST: &[&str] =
        &["cloudcode-pa.googleapis.com", "oauth2.googleapis.com"];
    /// The Copilot API (per-plan hosts such as api.individual.githubcopilot.com),
    /// GitHub's token exchange and device login.
    pub const GITHUB_COPILOT: &[&str] = &[
        "api.githubcopilot.com",
        "*.githubcopilot.com",
        "copilot-proxy.githubusercontent.com",
        "api.github.com",
        "github.com",
    ];
    pub const OPENROUTER: &[&str] = &["openrouter.ai"];
    pub const GROQ: &[&str] = &["api.groq.com"];
    pub const MISTRAL: &[&str] = &["api.mistral.ai"];
    pub const XAI: &[&str] = &["api.x.ai"];
    pub const DEEPSEEK: &[&str] = &["api.deepseek.com"];
    pub const CEREBRAS: &[&str] = &["api.cerebras.ai"];
    pub const HUGGINGFACE: &[&str] = &["router.huggingface.co"];
    pub const FIREWORKS: &[&str] = &["api.fireworks.ai"];
    pub const TOGETHER: &[&str] = &["api.together.ai"];
    pub const ZAI: &[&str] = &["api.z.ai"];
    pub const MOONSHOT: &[&str] = &["api.moonshot.ai"];
    pub const MINIMAX: &[&str] = &["api.minimax.io"];
    pub const NVIDIA: &[&str] = &["integrate.api.nvidia.com"];
    pub const VERCEL_AI_GATEWAY: &[&str] = &["ai-gateway.vercel.sh"];
    pub const OPENCODE: &[&str] = &["opencode.ai"];
    pub const KIMI: &[&str] = &["api.kimi.com"];
    /// git over HTTPS, the API, archives, release assets and raw files.
    pub const GITHUB: &[&str] = &[
        "github.com",
        "api.github.com",
        "codeload.github.com",
        "objects.githubusercontent.com",
        "raw.githubusercontent.com",
        "*.githubusercontent.com",
    ];
    pub const NPM: &[&str] = &["registry.npmjs.org"];
    pub const PYPI: &[&str] = &["pypi.org", "files.pythonhosted.org"];
    /// The registry's index, its downloads, and rustup's toolchains.
    pub const CRATES: &[&str] = &[
        "crates.io",
        "index.crates.io",
        "static.crates.io",
        "static.rust-lang.org",
    ];
}

/// `parts` one after the other, as an array of exactly `N` hosts (checked when
/// compiling: a wrong `N` does not build).
const fn join<const N: usize>(parts: &[&[&'static str]]) -> [&'static str; N] {
    let mut out = [""; N];
    let (mut n, mut i) = (0, 0);
    while i < parts.len() {
        let mut j = 0;
        while j < parts[i].len() {
            out[n] = parts[i][j];
            n += 1;
            j += 1;
        }
        i += 1;
    }
    assert!(n == N, "join: N is not the number of hosts");
    out
}

const OPENAI_PRESET: [&str; 3] = join(&[hosts::OPENAI, hosts::CHATGPT]);
const GEMINI_PRESET: [&str; 3] = join(&[hosts::GEMINI, hosts::GEMINI_CODE_ASSIST]);

/// Every preset, in documentation order: its name and its host patterns.
pub const PRESETS: &[(&str, &[&str])] = &[
    ("anthropic", hosts::ANTHROPIC),
    ("openai", &OPENAI_PRESET),
    ("gemini", &GEMINI_PRESET),
    ("github-copilot", hosts::GITHUB_COPILOT),
    ("openrouter", hosts::OPENROUTER),
    ("github", hosts::GITHUB),
    ("npm", hosts::NPM),
    ("pypi", hosts::PYPI),
    ("crates", hosts::CRATES),
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
        // The presets made of two host lists hold both, in order.
        assert_eq!(
            preset("openai"),
            Some(&["api.openai.com", "auth.openai.com", "chatgpt.com"][..])
        );
        assert_eq!(
            preset("gemini"),
            Some(
                &[
                    "generativelanguage.googleapis.com",
                    "cloudcode-pa.googleapis.com",
                    "oauth2.googleapis.com"
                ][..]
            )
        );
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
