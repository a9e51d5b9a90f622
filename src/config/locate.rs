//! Finds the line of a key path (`static_files.root`, `proxy.backends[1].address`) in
//! block-style YAML, so errors found after parsing can still point at a line, and finds every
//! occurrence of a key in one mapping, so a duplicate can be pointed at. Best effort: flow
//! style or anchors yield the nearest enclosing line found, or `None`.

use std::ops::Range;

/// 1-based line of `path` in `text`: the line of its last key or list entry, or of the
/// deepest part of the path that could be found.
pub(super) fn key_line(text: &str, path: &str) -> Option<usize> {
    let lines = significant_lines(text);
    let (deepest, _) = walk(&lines, path);
    deepest.map(|index| lines[index].number)
}

/// 1-based lines of every `key` directly inside the mapping at `parent` (`""`: the top
/// level), in file order.
pub(super) fn key_lines(text: &str, parent: &str, key: &str) -> Vec<usize> {
    let lines = significant_lines(text);
    let scope = if parent.is_empty() {
        Some(0..lines.len())
    } else {
        walk(&lines, parent).1
    };
    scope
        .map(|scope| {
            find_key(&lines, scope, key)
                .map(|index| lines[index].number)
                .collect()
        })
        .unwrap_or_default()
}

/// A line that is neither blank nor a comment.
struct Line<'a> {
    /// 1-based.
    number: usize,
    /// Columns before the first character (a list entry's `-` included in the body).
    indent: usize,
    /// The line starts a list entry (`- `).
    is_entry: bool,
    /// Columns before `body`: past the `- ` of a list entry, so an entry's first key lines up
    /// with the keys below it.
    body_indent: usize,
    body: &'a str,
}

fn significant_lines(text: &str) -> Vec<Line<'_>> {
    let mut lines = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start_matches(' ');
        if trimmed.trim().is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = raw.len() - trimmed.len();
        let mut body = trimmed;
        let mut body_indent = indent;
        let mut is_entry = false;
        while body == "-" || body.starts_with("- ") {
            is_entry = true;
            let rest = &body[1..];
            let content = rest.trim_start_matches(' ');
            body_indent += 1 + rest.len() - content.len();
            body = content;
        }
        lines.push(Line {
            number: index + 1,
            indent,
            is_entry,
            body_indent,
            body,
        });
    }
    lines
}

/// Follows `path` down from the top level: the index of the deepest line found, and the
/// scope (lines) of the value at the end of the path if all of it was found.
fn walk(lines: &[Line<'_>], path: &str) -> (Option<usize>, Option<Range<usize>>) {
    let mut scope = 0..lines.len();
    let mut deepest = None;
    for part in path.split('.') {
        let (name, indexes) = split_indexes(part);
        let Some(found) = find_key(lines, scope, name).next() else {
            return (deepest, None);
        };
        deepest = Some(found);
        scope = value_scope(lines, found);
        for index in indexes {
            let Some(entry) = list_entry(lines, scope, index) else {
                return (deepest, None);
            };
            deepest = Some(entry.start);
            scope = entry;
        }
    }
    (deepest, Some(scope))
}

/// `backends[1]` → (`backends`, [1]); a part without a well-formed index is all name.
fn split_indexes(part: &str) -> (&str, Vec<usize>) {
    let Some(open) = part.find('[') else {
        return (part, Vec::new());
    };
    let mut indexes = Vec::new();
    let mut rest = &part[open..];
    while let Some(inner) = rest.strip_prefix('[') {
        let Some((digits, after)) = inner.split_once(']') else {
            return (part, Vec::new());
        };
        let Ok(index) = digits.parse() else {
            return (part, Vec::new());
        };
        indexes.push(index);
        rest = after;
    }
    if rest.is_empty() {
        (&part[..open], indexes)
    } else {
        (part, Vec::new())
    }
}

/// Lines of `scope` holding `name` as a key of the mapping the scope is (its keys are the
/// lines at the indentation of its first line with content: a lone `-` opens an entry whose
/// keys start below it).
fn find_key<'a>(
    lines: &'a [Line<'_>],
    scope: Range<usize>,
    name: &'a str,
) -> impl Iterator<Item = usize> + 'a {
    let level = lines
        .get(scope.clone())
        .and_then(|scope| scope.iter().find(|line| !line.body.is_empty()))
        .map(|line| line.body_indent);
    scope.filter(move |&index| {
        let line = &lines[index];
        Some(line.body_indent) == level && key_of(line.body) == Some(name)
    })
}

/// The key a mapping line sets (`key: value` or `key:`), without quotes.
fn key_of(body: &str) -> Option<&str> {
    let end = match body.find(": ") {
        Some(end) => end,
        None => body.strip_suffix(':')?.len(),
    };
    let key = body[..end].trim_end();
    let unquoted = key
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .or_else(|| key.strip_prefix('\'').and_then(|k| k.strip_suffix('\'')));
    Some(unquoted.unwrap_or(key))
}

/// The lines below the key at `index` that belong to its value: deeper ones, and list
/// entries at the key's own indentation (YAML lets a list under a key start in its column).
fn value_scope(lines: &[Line<'_>], index: usize) -> Range<usize> {
    let level = lines[index].body_indent;
    let start = index + 1;
    let end = lines[start..]
        .iter()
        .position(|line| !(line.indent > level || (line.indent == level && line.is_entry)))
        .map_or(lines.len(), |offset| start + offset);
    start..end
}

/// The `index`th entry of the list `scope` holds: its `- ` line and the lines below it.
fn list_entry(lines: &[Line<'_>], scope: Range<usize>, index: usize) -> Option<Range<usize>> {
    let first = lines.get(scope.start).filter(|line| line.is_entry)?;
    let dash = first.indent;
    let start = scope
        .clone()
        .filter(|&i| lines[i].is_entry && lines[i].indent == dash)
        .nth(index)?;
    let end = (start + 1..scope.end)
        .find(|&i| lines[i].indent <= dash)
        .unwrap_or(scope.end);
    Some(start..end)
}

#[cfg(test)]
mod tests {
    use super::{key_line, key_lines};

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

    const LISTS: &str = "\
proxy:
  backends:
    - name: a
      address: \"h:1\"
    - name: b

      address: \"h:2\"
  upstreams:
    api:
      backends:
      - name: c
        address: \"h:3\"
      - address: \"h:4\"
        name: d
routes:
  - path_prefix: /a
    upstream: api
  -
    upstream: nope
  - {upstream: flow}
";

    #[test]
    fn finds_list_entries_and_their_keys() {
        assert_eq!(key_line(LISTS, "proxy.backends[0]"), Some(3));
        assert_eq!(key_line(LISTS, "proxy.backends[0].name"), Some(3));
        assert_eq!(key_line(LISTS, "proxy.backends[1].address"), Some(7));
        // A list may start in its key's own column.
        assert_eq!(
            key_line(LISTS, "proxy.upstreams.api.backends[1].address"),
            Some(13)
        );
        assert_eq!(
            key_line(LISTS, "proxy.upstreams.api.backends[1].name"),
            Some(14)
        );
        assert_eq!(key_line(LISTS, "routes[1].upstream"), Some(19));
        assert_eq!(key_line(LISTS, "routes[0].upstream"), Some(17));
    }

    #[test]
    fn what_cannot_be_found_points_at_the_nearest_line() {
        // Flow style: the entry, not its key.
        assert_eq!(key_line(LISTS, "routes[2].upstream"), Some(20));
        assert_eq!(key_line(LISTS, "routes[3].upstream"), Some(15));
        assert_eq!(key_line(LISTS, "proxy.backends[1].weight"), Some(5));
        // A key that is not a list keeps its own line.
        assert_eq!(key_line(LISTS, "proxy[0]"), Some(1));
    }

    #[test]
    fn finds_every_occurrence_of_a_key_in_one_mapping() {
        let yaml = "server:\n  listen_addr: a\n  nested:\n    listen_addr: b\n  listen_addr: c\nlisten_addr: d\n";
        assert_eq!(key_lines(yaml, "server", "listen_addr"), [2, 5]);
        assert_eq!(key_lines(yaml, "", "listen_addr"), [6]);
        let entries = "backends:\n  - name: a\n    name: b\n  - name: c\n";
        assert_eq!(key_lines(entries, "backends[0]", "name"), [2, 3]);
        assert_eq!(key_lines(entries, "backends[1]", "name"), [4]);
    }
}
