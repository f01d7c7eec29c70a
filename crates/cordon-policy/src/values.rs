//! Small value parsers shared by the config schema and the CLI: sizes and
//! `NAME[=VALUE]` environment arguments.

/// Parse a size such as `512M`, `1.5G`, `1024K`, `512MiB` or `100` (bytes).
///
/// Units are binary (K = 1024) and case-insensitive: `K`, `M`, `G`, `T`, each with an
/// optional `i` and an optional `B` (`KiB`, `KB`, `Ki`); `B` alone means bytes. A
/// fraction is allowed with a unit and rounds down to whole bytes. Spaces around the
/// number and between number and unit are allowed.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = |why: &str| {
        format!(
            "invalid size {s:?}: {why} (expected a number with an optional unit K, M, G or T, e.g. 512M, 1.5G, 2GiB)"
        )
    };
    let t = s.trim();
    if t.is_empty() {
        return Err(bad("empty"));
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.trim_start();
    if number.is_empty() {
        return Err(bad("no number"));
    }
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (number, None),
    };
    if int_part.is_empty() {
        return Err(bad("a digit must come before the decimal point"));
    }
    if let Some(f) = frac_part {
        if f.is_empty() || f.contains('.') {
            return Err(bad("malformed number"));
        }
    }
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KI" | "KIB" => 10,
        "M" | "MB" | "MI" | "MIB" => 20,
        "G" | "GB" | "GI" | "GIB" => 30,
        "T" | "TB" | "TI" | "TIB" => 40,
        _ => return Err(bad(&format!("unknown unit {unit:?}"))),
    };
    let mult: u128 = 1u128 << shift;
    let too_large = || bad("too large");
    let mut int: u128 = 0;
    for d in int_part.bytes() {
        int = int
            .checked_mul(10)
            .and_then(|v| v.checked_add(u128::from(d - b'0')))
            .ok_or_else(too_large)?;
        if int > u128::from(u64::MAX) {
            return Err(too_large());
        }
    }
    let mut bytes = int.checked_mul(mult).ok_or_else(too_large)?;
    if let Some(f) = frac_part {
        if shift == 0 && f.bytes().any(|b| b != b'0') {
            return Err(bad("a size in bytes must be a whole number"));
        }
        // 18 decimal places are more than enough: the largest unit is 2^40 < 10^13.
        let digits = &f[..f.len().min(18)];
        let mut num: u128 = 0;
        for d in digits.bytes() {
            num = num * 10 + u128::from(d - b'0');
        }
        let den = 10u128.pow(digits.len() as u32);
        bytes = bytes.checked_add(num * mult / den).ok_or_else(too_large)?;
    }
    u64::try_from(bytes).map_err(|_| too_large())
}

/// Parse an `--env` argument or an `env` config entry: `NAME` (take the value from
/// the invoking environment) or `NAME=VALUE` (`VALUE` may be empty).
pub fn parse_env_arg(s: &str) -> Result<(String, Option<String>), String> {
    let (name, value) = match s.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (s, None),
    };
    if name.is_empty() {
        return Err(format!(
            "invalid environment variable {s:?}: the name is empty (expected NAME or NAME=VALUE)"
        ));
    }
    if s.contains('\0') {
        return Err(format!(
            "invalid environment variable {s:?}: contains a NUL byte"
        ));
    }
    if name.chars().any(char::is_whitespace) {
        return Err(format!(
            "invalid environment variable {s:?}: the name contains whitespace (expected NAME or NAME=VALUE)"
        ));
    }
    Ok((name.to_string(), value.map(str::to_string)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u64 = 1024;
    const M: u64 = K * K;
    const G: u64 = M * K;
    const T: u64 = G * K;

    #[test]
    fn sizes() {
        let table: &[(&str, u64)] = &[
            ("100", 100),
            ("0", 0),
            ("100B", 100),
            ("100b", 100),
            ("1024K", 1024 * K),
            ("1024k", 1024 * K),
            ("1KB", K),
            ("1KiB", K),
            ("1ki", K),
            ("512M", 512 * M),
            ("512m", 512 * M),
            ("512MiB", 512 * M),
            ("512mib", 512 * M),
            ("512MB", 512 * M),
            ("2G", 2 * G),
            ("1.5G", 3 * G / 2),
            ("1.5g", 3 * G / 2),
            ("0.5K", 512),
            ("1.0001K", 1024), // rounds down to whole bytes
            ("3T", 3 * T),
            (" 2 G ", 2 * G),
            ("2 GiB", 2 * G),
            ("100.0", 100),
            ("16777215T", 16_777_215 * T),
        ];
        for (s, want) in table {
            assert_eq!(parse_size(s), Ok(*want), "{s}");
        }
    }

    #[test]
    fn size_errors() {
        for s in [
            "",
            " ",
            "M",
            "abc",
            "-1",
            "+1",
            "1.5",
            "1..5G",
            ".5G",
            "1.G",
            "1e3",
            "1X",
            "1GG",
            "1 G B",
            "1KiBB",
            "2P",
            "16777216T",
            "99999999999999999999999",
            "1\u{0}G",
            "١G",
        ] {
            let err = parse_size(s).expect_err(s);
            assert!(err.contains("invalid size"), "{s}: {err}");
        }
        assert!(parse_size("1.5").unwrap_err().contains("whole number"));
        assert!(parse_size("2P").unwrap_err().contains("unknown unit \"P\""));
        assert!(
            parse_size("99999999999999999999T")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn env_args() {
        assert_eq!(parse_env_arg("EDITOR"), Ok(("EDITOR".into(), None)));
        assert_eq!(
            parse_env_arg("RUST_LOG=debug"),
            Ok(("RUST_LOG".into(), Some("debug".into())))
        );
        assert_eq!(parse_env_arg("A="), Ok(("A".into(), Some(String::new()))));
        assert_eq!(parse_env_arg("A=b=c"), Ok(("A".into(), Some("b=c".into()))));
        assert!(parse_env_arg("").is_err());
        assert!(parse_env_arg("=x").is_err());
        assert!(parse_env_arg("A B=1").is_err());
        assert!(parse_env_arg("A=\0").is_err());
    }
}
