//! Finds the line of a dotted key (`static_files.root`) in block-style YAML, so validation
//! errors found after parsing can still point at a line. Best effort: flow style or anchors
//! yield `None` and the error simply has no line.

/// 1-based line of `dotted_key` in `text`, if it can be found.
pub(super) fn key_line(text: &str, dotted_key: &str) -> Option<usize> {
    let mut wanted = dotted_key.split('.').peekable();
    let mut parent_indent: Option<usize> = None;
    let mut found_line = None;
    let mut segment = wanted.next()?;
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if let Some(parent) = parent_indent {
            if indent <= parent {
                // Left the parent's block without finding the child.
                return found_line;
            }
        }
        let key = trimmed.trim_start_matches("- ");
        let is_match = key
            .strip_prefix(segment)
            .is_some_and(|rest| rest.trim_start().starts_with(':'));
        if is_match {
            found_line = Some(index + 1);
            match wanted.next() {
                Some(next) => {
                    segment = next;
                    parent_indent = Some(indent);
                }
                None => return found_line,
            }
        }
    }
    found_line
}

#[cfg(test)]
mod tests {
    use super::key_line;

    const YAML: &str = "server:\n  listen_addr: \"127.0.0.1:8080\"\n# comment\nstatic_files:\n  root: ./public\n  error_pages:\n    not_found: a.html\n";

    #[test]
    fn finds_nested_keys() {
        assert_eq!(key_line(YAML, "server.listen_addr"), Some(2));
        assert_eq!(key_line(YAML, "static_files.root"), Some(5));
        assert_eq!(
            key_line(YAML, "static_files.error_pages.not_found"),
            Some(7)
        );
    }

    #[test]
    fn missing_child_points_at_parent() {
        assert_eq!(key_line(YAML, "static_files.index"), Some(4));
        assert_eq!(key_line(YAML, "nothing"), None);
    }
}
