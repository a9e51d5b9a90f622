//! First-stage errors: what the YAML library and serde report (syntax, unknown keys, values
//! of the wrong type) turned into a [`ConfigError`] in the user's words. `expected a whole
//! number, found "abc"`, not `invalid type: string "abc", expected usize`; `unknown key
//! "lisen_addr" (did you mean "listen_addr"?)`, not a list of every field; a duplicate key at
//! its second occurrence, not at the start of the mapping.
//!
//! The library's error gives its message, key path and location only as text
//! (`server.max_headers: invalid type: ... at line 3 column 16`) plus the location, so the
//! message is taken apart here. Anything not recognised is passed on as it was.

use std::path::Path;

use super::{locate, ConfigError};

/// `error`, from parsing `text` (the contents of `path`), as the user should read it.
pub(super) fn translate(error: &serde_yaml::Error, text: &str, path: &Path) -> ConfigError {
    let location = error.location();
    let mut message = error.to_string();
    if let Some(location) = &location {
        let at = format!(" at line {} column {}", location.line(), location.column());
        if let Some(start) = message.find(&at) {
            message.replace_range(start..start + at.len(), "");
        }
    }
    let mark = location.map(|l| Mark {
        line: l.line(),
        column: l.column(),
    });
    let (key, detail) = split_key_path(&message);
    match describe(detail, key.unwrap_or(""), text, mark) {
        Some(problem) => ConfigError::Invalid {
            path: path.to_path_buf(),
            key: match (key, problem.child) {
                (Some(key), Some(child)) => format!("{key}.{child}"),
                (None, Some(child)) => child,
                (key, None) => key.unwrap_or_default().to_string(),
            },
            line: problem.line.or(mark.map(|m| m.line)),
            reason: problem.reason,
        },
        None => match key {
            Some(key) => ConfigError::Invalid {
                path: path.to_path_buf(),
                key: key.to_string(),
                line: mark.map(|m| m.line),
                reason: detail.to_string(),
            },
            None => ConfigError::Syntax {
                path: path.to_path_buf(),
                line: mark.map(|m| m.line),
                message: format!("invalid YAML: {detail}{}", tab_hint(text, mark)),
            },
        },
    }
}

/// Where the library says the problem is (1-based).
#[derive(Debug, Clone, Copy)]
struct Mark {
    line: usize,
    column: usize,
}

/// A recognised message, reworded.
struct Problem {
    /// A key below the reported path that the problem is about (a missing key).
    child: Option<String>,
    /// A better line than the library's (a duplicate's second occurrence).
    line: Option<usize>,
    reason: String,
}

impl Problem {
    fn new(reason: String) -> Problem {
        Problem {
            child: None,
            line: None,
            reason,
        }
    }
}

/// `server.max_headers: invalid type: ...` → (`server.max_headers`, `invalid type: ...`). The
/// library writes no path for the top level, and its own messages start with words
/// separated by spaces (`invalid type:`), which a key path does not have.
fn split_key_path(message: &str) -> (Option<&str>, &str) {
    match message.split_once(": ") {
        Some((key, detail)) if !key.is_empty() && !key.contains(char::is_whitespace) => {
            (Some(key), detail)
        }
        _ => (None, message),
    }
}

/// serde's messages, in the user's words; `None` for any other.
fn describe(detail: &str, parent: &str, text: &str, mark: Option<Mark>) -> Option<Problem> {
    if detail.starts_with("unknown field `") {
        let (name, expected) = name_and_expected(detail)?;
        return Some(Problem::new(unknown("key", name, &expected)));
    }
    if detail.starts_with("unknown variant `") {
        // A key's values are few: list them even with a suggestion.
        let (name, expected) = name_and_expected(detail)?;
        let reason = match closest(name, &expected) {
            Some(suggestion) => format!(
                "unknown value {name:?} (did you mean {suggestion:?}? expected {})",
                one_of(&expected)
            ),
            None => unknown("value", name, &expected),
        };
        return Some(Problem::new(reason));
    }
    if let Some(rest) = detail.strip_prefix("missing field `") {
        let (name, _) = rest.split_once('`')?;
        return Some(Problem {
            child: Some(name.to_string()),
            line: None,
            reason: "missing (this key is required)".into(),
        });
    }
    if let Some(rest) = detail.strip_prefix("duplicate field `") {
        // serde stops at the second occurrence but the library marks the mapping's start,
        // which is the first: find the second in the text.
        let (name, _) = rest.split_once('`')?;
        let lines = locate::key_lines(text, parent, name);
        let reason = match lines.first() {
            Some(first) => format!("duplicate key {name:?} (first on line {first})"),
            None => format!("duplicate key {name:?}"),
        };
        return Some(Problem {
            child: None,
            line: lines.get(1).copied(),
            reason,
        });
    }
    if let Some(rest) = detail
        .strip_prefix("invalid type: ")
        .or_else(|| detail.strip_prefix("invalid value: "))
    {
        let (found, expected) = rest.rsplit_once(", expected ")?;
        return Some(Problem::new(wrong_type(found, expected)));
    }
    if detail == "invalid socket address syntax" {
        let reason = match mark.and_then(|mark| scalar_at(text, mark)) {
            Some(value) => format!("{value:?} is not an IP:port address (such as 127.0.0.1:8080)"),
            None => "expected an IP:port address (such as 127.0.0.1:8080)".into(),
        };
        return Some(Problem::new(reason));
    }
    None
}

/// `unknown field `x`, expected one of `a`, `b`` → (`x`, [`a`, `b`]). serde writes the
/// names between backquotes: the first is the unknown one, the rest are the accepted ones.
fn name_and_expected(detail: &str) -> Option<(&str, Vec<&str>)> {
    let mut quoted = detail.split('`').skip(1).step_by(2);
    let name = quoted.next()?;
    Some((name, quoted.collect()))
}

/// `unknown key "lisen_addr" (did you mean "listen_addr"?)`, or the accepted names when
/// none is close (a section's keys are many: a near one is more use than all of them).
fn unknown(what: &str, name: &str, expected: &[&str]) -> String {
    match closest(name, expected) {
        Some(suggestion) => format!("unknown {what} {name:?} (did you mean {suggestion:?}?)"),
        None if expected.is_empty() => format!("unknown {what} {name:?}"),
        None => format!("unknown {what} {name:?} (expected {})", one_of(expected)),
    }
}

/// `a`, `a or b`, `one of a, b, c`.
fn one_of(names: &[&str]) -> String {
    match names {
        [one] => (*one).to_string(),
        [one, two] => format!("{one} or {two}"),
        many => format!("one of {}", many.join(", ")),
    }
}

/// The accepted name nearest to `name`, if it is near enough to be a typo: at most two
/// edits, and at most one edit per three characters (so `hots` finds `host`, but `foo` does
/// not find `fall`).
fn closest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let name = name.to_ascii_lowercase();
    let allowed = (name.chars().count().max(3) / 3).min(2);
    candidates
        .iter()
        // Cheap first: a length difference alone costs that many edits.
        .filter(|candidate| candidate.len().abs_diff(name.len()) <= allowed)
        .map(|candidate| {
            (
                edit_distance(&name, &candidate.to_ascii_lowercase()),
                *candidate,
            )
        })
        .filter(|(distance, _)| *distance <= allowed)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of
/// two neighbours (the commonest typo) each cost one.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // rows[i][j]: distance between a[..i] and b[..j].
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

/// `found` and `expected` as serde writes them (`string "abc"`, `usize`) → `expected a whole
/// number, found "abc"`.
fn wrong_type(found: &str, expected: &str) -> String {
    let number = quoted_number(found);
    if let Some(max) = unsigned_max(expected) {
        match number {
            Some(n) if n.starts_with('-') => {
                return format!("expected a whole number (0 or more), found {n}");
            }
            Some(n) if !n.contains(['.', 'e', 'E']) => {
                return format!("{n} is too large (at most {max})");
            }
            _ => {}
        }
    }
    let expected = match expected {
        _ if unsigned_max(expected).is_some() => "a whole number",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" => "true or false",
        "a string" | "a borrowed string" | "a character" => "text",
        "a sequence" => "a list",
        "a map" => "a mapping",
        "socket address" => "an IP:port address (such as 127.0.0.1:8080)",
        // A name (`format: json`) given as a list or mapping: the library asks for a tag.
        "a YAML tag starting with '!'" => "a single name",
        other if other.starts_with("struct ") => "a mapping",
        other if other.starts_with("enum ") => "a single name",
        other => other,
    };
    format!("expected {expected}, found {}", found_words(found))
}

/// The largest value of an unsigned integer type serde names.
fn unsigned_max(expected: &str) -> Option<String> {
    Some(match expected {
        "u8" => u8::MAX.to_string(),
        "u16" => u16::MAX.to_string(),
        "u32" => u32::MAX.to_string(),
        "u64" => u64::MAX.to_string(),
        "u128" => u128::MAX.to_string(),
        "usize" => usize::MAX.to_string(),
        _ => return None,
    })
}

/// The number in `integer `-3`` or `floating point `1.5``.
fn quoted_number(found: &str) -> Option<&str> {
    let rest = found
        .strip_prefix("integer `")
        .or_else(|| found.strip_prefix("floating point `"))?;
    rest.split_once('`').map(|(number, _)| number)
}

/// What serde calls `string "abc"`, `sequence`, `unit value` → `"abc"`, `a list`,
/// `an empty value`.
fn found_words(found: &str) -> String {
    if let Some(string) = found.strip_prefix("string ") {
        return string.to_string();
    }
    if let Some(value) = quoted_number(found).or_else(|| {
        found
            .strip_prefix("boolean `")
            .and_then(|rest| rest.split_once('`'))
            .map(|(value, _)| value)
    }) {
        return value.to_string();
    }
    match found {
        "sequence" => "a list",
        "map" => "a mapping",
        "unit value" | "Option value" => "an empty value",
        other => other,
    }
    .to_string()
}

/// The plain or quoted scalar that starts at `mark`, without its quotes.
fn scalar_at(text: &str, mark: Mark) -> Option<String> {
    let line = text.lines().nth(mark.line.checked_sub(1)?)?;
    let rest: String = line.chars().skip(mark.column.checked_sub(1)?).collect();
    let value = if let Some(quoted) = rest.strip_prefix('"') {
        quoted.split('"').next()?.to_string()
    } else if let Some(quoted) = rest.strip_prefix('\'') {
        quoted.split('\'').next()?.to_string()
    } else {
        rest.split(" #").next()?.trim().to_string()
    };
    Some(value)
}

/// YAML refuses tabs for indentation with a message that does not say so.
fn tab_hint(text: &str, mark: Option<Mark>) -> &'static str {
    let line = mark.and_then(|mark| text.lines().nth(mark.line.checked_sub(1)?));
    match line {
        Some(line) if line.trim_start_matches(' ').starts_with('\t') => {
            " (a tab: YAML is indented with spaces)"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::{closest, edit_distance, one_of, wrong_type};

    #[test]
    fn edit_distance_counts_a_swap_as_one() {
        assert_eq!(edit_distance("hots", "host"), 1);
        assert_eq!(edit_distance("lisen_addr", "listen_addr"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn suggests_only_near_names() {
        let keys = ["listen_addr", "max_headers", "workers", "host", "fall"];
        assert_eq!(closest("lisen_addr", &keys), Some("listen_addr"));
        assert_eq!(closest("max_headrz", &keys), Some("max_headers"));
        assert_eq!(closest("Workers", &keys), Some("workers"));
        assert_eq!(closest("hots", &keys), Some("host"));
        assert_eq!(closest("foo", &keys), None);
        assert_eq!(closest("typo", &keys), None);
        assert_eq!(closest("", &keys), None);
    }

    #[test]
    fn lists_names_as_prose() {
        assert_eq!(one_of(&["a"]), "a");
        assert_eq!(one_of(&["a", "b"]), "a or b");
        assert_eq!(one_of(&["a", "b", "c"]), "one of a, b, c");
    }

    #[test]
    fn type_names_become_words() {
        let cases = [
            (
                "string \"abc\"",
                "usize",
                "expected a whole number, found \"abc\"",
            ),
            (
                "floating point `1.5`",
                "u64",
                "expected a whole number, found 1.5",
            ),
            (
                "integer `-3`",
                "usize",
                "expected a whole number (0 or more), found -3",
            ),
            (
                "integer `99999999999`",
                "u32",
                "99999999999 is too large (at most 4294967295)",
            ),
            (
                "integer `99999999999999999999` as u128",
                "u64",
                "99999999999999999999 is too large (at most 18446744073709551615)",
            ),
            (
                "string \"yes\"",
                "a boolean",
                "expected true or false, found \"yes\"",
            ),
            ("sequence", "a string", "expected text, found a list"),
            ("integer `3`", "a sequence", "expected a list, found 3"),
            (
                "sequence",
                "struct RawStaticFiles",
                "expected a mapping, found a list",
            ),
            ("string \"x\"", "f64", "expected a number, found \"x\""),
            (
                "unit value",
                "usize",
                "expected a whole number, found an empty value",
            ),
            (
                "sequence",
                "a YAML tag starting with '!'",
                "expected a single name, found a list",
            ),
            ("boolean `true`", "a map", "expected a mapping, found true"),
        ];
        for (found, expected, words) in cases {
            assert_eq!(wrong_type(found, expected), words, "{found} / {expected}");
        }
    }
}
