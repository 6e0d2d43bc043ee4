//! Envoy's string matcher, compiled: exact, prefix, suffix, contains (each optionally
//! without regard to ASCII case) or a regular expression that must match the whole value.
//! The CORS and CSRF filters match origins with it.

use regex::Regex;
use sinew_config::model::StringMatch;
use sinew_config::ConfigError;

#[derive(Debug)]
pub(crate) enum StringMatcher {
    Exact(Box<str>, bool),
    Prefix(Box<str>, bool),
    Suffix(Box<str>, bool),
    Contains(Box<str>, bool),
    Regex(Regex),
}

impl StringMatcher {
    /// `m` was validated: one condition is set. A bad regex is an error at `path`.
    pub(crate) fn compile(m: &StringMatch, path: &str) -> Result<Self, ConfigError> {
        let fold = m.ignore_case;
        let text = |s: &str| -> Box<str> {
            if fold {
                s.to_ascii_lowercase().into()
            } else {
                s.into()
            }
        };
        if let Some(s) = &m.exact {
            return Ok(Self::Exact(text(s), fold));
        }
        if let Some(s) = &m.prefix {
            return Ok(Self::Prefix(text(s), fold));
        }
        if let Some(s) = &m.suffix {
            return Ok(Self::Suffix(text(s), fold));
        }
        if let Some(s) = &m.contains {
            return Ok(Self::Contains(text(s), fold));
        }
        let pattern = m.regex.as_deref().unwrap_or("");
        Regex::new(&format!("^(?:{pattern})$"))
            .map(Self::Regex)
            .map_err(|e| ConfigError::new(format!("{path}.regex"), e.to_string()))
    }

    pub(crate) fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(s, false) => value == &**s,
            Self::Exact(s, true) => value.eq_ignore_ascii_case(s),
            Self::Prefix(s, false) => value.starts_with(&**s),
            Self::Prefix(s, true) => value
                .get(..s.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(s)),
            Self::Suffix(s, false) => value.ends_with(&**s),
            Self::Suffix(s, true) => value
                .len()
                .checked_sub(s.len())
                .and_then(|at| value.get(at..))
                .is_some_and(|tail| tail.eq_ignore_ascii_case(s)),
            Self::Contains(s, false) => value.contains(&**s),
            Self::Contains(s, true) => value.to_ascii_lowercase().contains(&**s),
            Self::Regex(r) => r.is_match(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(yaml: &str) -> StringMatcher {
        let m: StringMatch = serde_yaml_ng::from_str(yaml).unwrap();
        StringMatcher::compile(&m, "m").unwrap()
    }

    #[test]
    fn each_condition_matches_as_envoy_s_string_matcher() {
        assert!(matcher("{exact: 'https://a.example'}").matches("https://a.example"));
        assert!(!matcher("{exact: 'https://a.example'}").matches("https://A.example"));
        assert!(
            matcher("{exact: 'https://a.example', ignore_case: true}").matches("HTTPS://A.example")
        );
        assert!(matcher("{prefix: 'https://'}").matches("https://b.example"));
        assert!(matcher("{suffix: '.EXAMPLE', ignore_case: true}").matches("https://b.example"));
        assert!(!matcher("{suffix: '.example'}").matches("https://b.example.evil"));
        assert!(matcher("{contains: 'b.ex'}").matches("https://b.example"));
        assert!(matcher("{contains: 'B.EX', ignore_case: true}").matches("https://b.example"));
        assert!(matcher("{regex: 'https://[a-z]+\\.example'}").matches("https://b.example"));
        assert!(!matcher("{regex: 'https://[a-z]+\\.example'}").matches("https://b.example.evil"));
    }

    #[test]
    fn a_bad_regex_is_an_error_at_its_path() {
        let m: StringMatch = serde_yaml_ng::from_str("{regex: '('}").unwrap();
        let e = StringMatcher::compile(&m, "cors.allow_origin[0]").unwrap_err();
        assert_eq!(e.path, "cors.allow_origin[0].regex");
    }
}
