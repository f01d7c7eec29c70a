//! The LLM providers pi knows: each one's id, the environment variables pi takes
//! its key from, and its hosts. The hosts come from
//! [`cordon_policy::presets::hosts`], the one list the presets are made of too.

use cordon_policy::presets::hosts;

/// One provider of pi's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provider {
    /// pi's id for it (`anthropic`, `openai-codex`, ...).
    pub id: &'static str,
    /// The environment variables pi takes its key from (pi-ai's env-api-keys).
    pub env_keys: &'static [&'static str],
    /// The hosts its API (and sign-in) lives at, as domain patterns.
    pub hosts: &'static [&'static str],
}

const fn p(
    id: &'static str,
    env_keys: &'static [&'static str],
    hosts: &'static [&'static str],
) -> Provider {
    Provider {
        id,
        env_keys,
        hosts,
    }
}

/// Every provider pi knows, in pi's order.
pub const PROVIDERS: &[Provider] = &[
    p(
        "anthropic",
        &[
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_OAUTH_TOKEN",
            "ANTHROPIC_AUTH_TOKEN",
        ],
        hosts::ANTHROPIC,
    ),
    p("openai", &["OPENAI_API_KEY"], hosts::OPENAI),
    p("google", &["GEMINI_API_KEY"], hosts::GEMINI),
    p("openrouter", &["OPENROUTER_API_KEY"], hosts::OPENROUTER),
    p("groq", &["GROQ_API_KEY"], hosts::GROQ),
    p("mistral", &["MISTRAL_API_KEY"], hosts::MISTRAL),
    p("xai", &["XAI_API_KEY"], hosts::XAI),
    p("deepseek", &["DEEPSEEK_API_KEY"], hosts::DEEPSEEK),
    p("cerebras", &["CEREBRAS_API_KEY"], hosts::CEREBRAS),
    p("huggingface", &["HF_TOKEN"], hosts::HUGGINGFACE),
    p("fireworks", &["FIREWORKS_API_KEY"], hosts::FIREWORKS),
    p("together", &["TOGETHER_API_KEY"], hosts::TOGETHER),
    p("zai", &["ZAI_API_KEY"], hosts::ZAI),
    p("moonshotai", &["MOONSHOT_API_KEY"], hosts::MOONSHOT),
    p("minimax", &["MINIMAX_API_KEY"], hosts::MINIMAX),
    p("nvidia", &["NVIDIA_API_KEY"], hosts::NVIDIA),
    p(
        "vercel-ai-gateway",
        &["AI_GATEWAY_API_KEY"],
        hosts::VERCEL_AI_GATEWAY,
    ),
    p("opencode", &["OPENCODE_API_KEY"], hosts::OPENCODE),
    p("kimi-coding", &["KIMI_API_KEY"], hosts::KIMI),
    p(
        "github-copilot",
        &["COPILOT_GITHUB_TOKEN"],
        hosts::GITHUB_COPILOT,
    ),
    p("openai-codex", &[], hosts::CHATGPT),
    p("google-gemini-cli", &[], hosts::GEMINI_CODE_ASSIST),
];

/// The provider `id`, if pi knows it.
pub fn provider(id: &str) -> Option<&'static Provider> {
    PROVIDERS.iter().find(|p| p.id == id)
}

/// The hosts of provider `id`, if pi knows it.
pub fn provider_hosts(id: &str) -> Option<Vec<String>> {
    provider(id).map(|p| p.hosts.iter().map(|h| h.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cordon_policy::DomainPattern;
    use std::collections::BTreeSet;

    #[test]
    fn every_provider_is_known_once_with_hosts_that_parse() {
        let mut ids = BTreeSet::new();
        for provider in PROVIDERS {
            assert!(ids.insert(provider.id), "{} twice", provider.id);
            assert!(!provider.hosts.is_empty(), "{}", provider.id);
            for h in provider.hosts {
                let p = DomainPattern::parse(h).unwrap_or_else(|e| panic!("{h}: {e}"));
                assert!(p.port.is_none() && p.to_string() == *h, "{h}");
            }
            for var in provider.env_keys {
                assert!(cordon_policy::valid_env_name(var), "{var}");
            }
        }
    }

    /// The providers that share a preset's hosts have the same list.
    #[test]
    fn provider_hosts_are_the_presets_hosts() {
        let same = |id: &str, preset: &str| {
            assert_eq!(
                provider(id).unwrap().hosts,
                cordon_policy::preset(preset).unwrap()
            );
        };
        same("anthropic", "anthropic");
        same("github-copilot", "github-copilot");
        same("openrouter", "openrouter");
        assert_eq!(provider_hosts("openai").unwrap(), ["api.openai.com"]);
        assert!(provider_hosts("nope").is_none());
    }
}
