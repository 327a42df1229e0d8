//! `${NAME}` expansion in string values, so secrets can come from the environment instead of the file.
//!
//! Grammar: `${NAME}` with `NAME` = `[A-Za-z_][A-Za-z0-9_]*` is replaced by the variable's value;
//! `$${` writes a literal `${`; any other `$` is kept as it is (so `pa$$word` or `$5` need no escaping).
//! Expansion is a single pass: a value that itself contains `${…}` is not expanded again.

/// Why a string could not be expanded. Never carries the surrounding text (it may be a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("uses ${{{0}}}, but the environment variable {0} is not set")]
    Unset(String),
    #[error("has `${{` without a closing `}}`")]
    Unterminated,
    #[error("uses `${{{0}}}`, which is not a valid variable name")]
    BadName(String),
}

/// Expands every `${NAME}` in `text`; all errors are returned, in order of appearance.
pub fn expand(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<ExpandError>> {
    if !text.contains('$') {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            match after.find('}') {
                None => {
                    errors.push(ExpandError::Unterminated);
                    rest = "";
                }
                Some(end) => {
                    let name = &after[..end];
                    if !valid_name(name) {
                        errors.push(ExpandError::BadName(name.to_owned()));
                    } else {
                        match env(name) {
                            Some(value) => out.push_str(&value),
                            None => errors.push(ExpandError::Unset(name.to_owned())),
                        }
                    }
                    rest = &after[end + 1..];
                }
            }
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            "NESTED" => Some("${A}".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_and_escapes() {
        assert_eq!(expand("x${A}y", &env).unwrap(), "xalphay");
        assert_eq!(expand("${A}${A}", &env).unwrap(), "alphaalpha");
        assert_eq!(expand("$${A}", &env).unwrap(), "${A}");
        assert_eq!(expand("pa$$word $5 $", &env).unwrap(), "pa$$word $5 $");
        assert_eq!(expand("${EMPTY}", &env).unwrap(), "");
        assert_eq!(expand("${NESTED}", &env).unwrap(), "${A}");
        assert_eq!(expand("plain", &env).unwrap(), "plain");
    }

    #[test]
    fn reports_every_error() {
        assert_eq!(
            expand("${NOPE} ${1X} ${A", &env).unwrap_err(),
            vec![
                ExpandError::Unset("NOPE".into()),
                ExpandError::BadName("1X".into()),
                ExpandError::Unterminated
            ]
        );
    }
}
