//! Values of pi's config as pi reads them: `apiKey`s and header values (pi's
//! resolve-config-value, the same in 0.87 and 1.x), and the JSON leniency of its
//! `models.json`.

/// A value of pi's config (an `apiKey`, a header value, an auth.json `key`), as
/// pi reads it (pi's resolve-config-value, the same in 0.87 and 1.x).
#[derive(Debug, PartialEq)]
pub enum ConfigValue {
    /// `!command`: pi runs the command and takes its output.
    Command(String),
    /// Literal text and `$NAME` / `${NAME}` variables; `$$` is `$` and `$!` is `!`.
    Template(Vec<Part>),
}

/// A piece of a [`ConfigValue::Template`].
#[derive(Debug, PartialEq)]
pub enum Part {
    /// Text pi sends as it is (escapes already undone).
    Literal(String),
    /// An environment variable's name: pi sends its value.
    Var(String),
}

impl ConfigValue {
    /// `text` as pi reads it.
    pub fn parse(text: &str) -> ConfigValue {
        if let Some(command) = text.strip_prefix('!') {
            return ConfigValue::Command(command.to_string());
        }
        let mut parts: Vec<Part> = Vec::new();
        let literal = |parts: &mut Vec<Part>, s: &str| {
            if s.is_empty() {
                return;
            }
            match parts.last_mut() {
                Some(Part::Literal(l)) => l.push_str(s),
                _ => parts.push(Part::Literal(s.to_string())),
            }
        };
        let is_start = |c: char| c.is_ascii_alphabetic() || c == '_';
        let is_part = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            literal(&mut parts, &rest[..at]);
            let after = &rest[at + 1..];
            match after.chars().next() {
                Some(c @ ('$' | '!')) => {
                    literal(&mut parts, &c.to_string());
                    rest = &after[1..];
                }
                Some('{') => match after.find('}') {
                    Some(end) => {
                        let name = &after[1..end];
                        if name.starts_with(is_start) && name.chars().all(is_part) {
                            parts.push(Part::Var(name.to_string()));
                        } else {
                            literal(&mut parts, &rest[at..at + 2 + end]);
                        }
                        rest = &after[end + 1..];
                    }
                    None => {
                        literal(&mut parts, "$");
                        rest = after;
                    }
                },
                Some(c) if is_start(c) => {
                    let len = after.find(|c: char| !is_part(c)).unwrap_or(after.len());
                    parts.push(Part::Var(after[..len].to_string()));
                    rest = &after[len..];
                }
                _ => {
                    literal(&mut parts, "$");
                    rest = after;
                }
            }
        }
        literal(&mut parts, rest);
        ConfigValue::Template(parts)
    }

    /// The value pi makes of a template with the environment `env`: `None` when a
    /// variable is unset or empty (pi then has no value).
    pub fn resolve(parts: &[Part], env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
        let mut out = String::new();
        for part in parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Var(v) => out.push_str(&env(v).filter(|v| !v.is_empty())?),
            }
        }
        Some(out)
    }
}

/// `text` without what pi drops before parsing models.json: `//` comments, then
/// commas before a closing bracket, outside strings (pi's stripJsonComments).
pub fn strip_json_comments(text: &str) -> String {
    let comments = outside_strings(text, |rest| {
        rest.starts_with("//")
            .then(|| rest.find('\n').unwrap_or(rest.len()))
    });
    outside_strings(&comments, |rest| {
        (rest.starts_with(',') && rest[1..].trim_start().starts_with(['}', ']'])).then_some(1)
    })
}

/// `text` with the bytes `cut` names dropped: at each position outside a JSON
/// string, `cut(rest)` may say how many bytes of `rest` to drop.
fn outside_strings(text: &str, cut: impl Fn(&str) -> Option<usize>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut in_string = false;
    while let Some(c) = text[i..].chars().next() {
        if in_string {
            if c == '\\' {
                let escaped = text[i + 1..].chars().next().map_or(0, char::len_utf8);
                out.push_str(&text[i..i + 1 + escaped]);
                i += 1 + escaped;
                continue;
            }
            in_string = c != '"';
        } else if c == '"' {
            in_string = true;
        } else if let Some(n) = cut(&text[i..]) {
            i += n;
            continue;
        }
        out.push(c);
        i += c.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        use ConfigValue::{Command, Template};
        use Part::{Literal, Var};
        let lit = |s: &str| Literal(s.to_string());
        let var = |s: &str| Var(s.to_string());
        assert_eq!(ConfigValue::parse("$A_B"), Template(vec![var("A_B")]));
        assert_eq!(
            ConfigValue::parse("x${KEY}y$$z$OTHER"),
            Template(vec![lit("x"), var("KEY"), lit("y$z"), var("OTHER")])
        );
        assert_eq!(
            ConfigValue::parse("sk-literal"),
            Template(vec![lit("sk-literal")])
        );
        // A bare name is literal text to pi.
        assert_eq!(ConfigValue::parse("MY_KEY"), Template(vec![lit("MY_KEY")]));
        // pi's escapes and the `$`s it takes literally.
        assert_eq!(
            ConfigValue::parse("a$!b$1c${no-name}d${e"),
            Template(vec![lit("a!b$1c${no-name}d${e")])
        );
        assert_eq!(ConfigValue::parse("sk$"), Template(vec![lit("sk$")]));
        assert_eq!(
            ConfigValue::parse("!op read x"),
            Command("op read x".into())
        );
        assert_eq!(ConfigValue::parse("$!op"), Template(vec![lit("!op")]));
        assert_eq!(
            ConfigValue::parse("${A}${B}"),
            Template(vec![var("A"), var("B")])
        );
        let env = |n: &str| (n == "SET").then(|| "v".to_string());
        let resolve = |t: &str| match ConfigValue::parse(t) {
            Template(parts) => ConfigValue::resolve(&parts, &env),
            Command(_) => None,
        };
        assert_eq!(resolve("a$$b${SET}c$SET"), Some("a$bvcv".into()));
        assert_eq!(resolve("a$UNSET"), None);
    }

    /// pi's JSON leniency in models.json: `//` comments and trailing commas.
    #[test]
    fn json_comments() {
        assert_eq!(
            strip_json_comments("{\"a\": \"x//y,}\", // c\n \"b\": [1,2,],\n}"),
            "{\"a\": \"x//y,}\", \n \"b\": [1,2]\n}"
        );
        assert_eq!(
            strip_json_comments(r#"{"a":"q\"//,]", } // end"#),
            r#"{"a":"q\"//,]" } "#
        );
        // A string cut short, and text that is not ASCII.
        assert_eq!(strip_json_comments("\"é // \\"), "\"é // \\");
    }
}
