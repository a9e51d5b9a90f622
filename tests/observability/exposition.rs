//! A strict reader of the exposition formats, so a malformed line fails the test that
//! scraped it: every line is a comment the format defines, or a sample of the family the
//! last `# TYPE` declared, with valid names, quoted and escaped label values, a number, and
//! no sample twice.

use std::collections::BTreeMap;

/// Which text format a scrape is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Prometheus,
    OpenMetrics,
}

/// `name{labels}` (labels as written) → value, for every sample of `text`; panics with the
/// offending line on anything malformed.
pub fn parse(text: &str, format: Format) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    let mut family: Option<(String, String)> = None;
    let mut saw_eof = false;
    for (number, line) in text.lines().enumerate() {
        let fail = |why: &str| -> ! { panic!("line {}: {why}: {line:?}", number + 1) };
        assert!(!saw_eof, "line {}: text after # EOF", number + 1);
        if line == "# EOF" {
            assert_eq!(
                format,
                Format::OpenMetrics,
                "# EOF in the Prometheus format"
            );
            saw_eof = true;
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            let (kind, name) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            if !is_metric_name(name) {
                fail("bad metric name in a comment");
            }
            match kind {
                "HELP" => {}
                "UNIT" if format == Format::OpenMetrics => {}
                "TYPE" => {
                    let kind = words.next().unwrap_or("");
                    let known = match format {
                        Format::Prometheus => ["counter", "gauge", "histogram", "untyped"],
                        Format::OpenMetrics => ["counter", "gauge", "histogram", "unknown"],
                    };
                    if !known.contains(&kind) {
                        fail("unknown type");
                    }
                    family = Some((name.to_string(), kind.to_string()));
                }
                _ => fail("unknown comment"),
            }
            continue;
        }
        let Some((name_and_labels, value)) = line.rsplit_once(' ') else {
            fail("no value");
        };
        let (name, labels) = match name_and_labels.split_once('{') {
            Some((name, rest)) => match rest.strip_suffix('}') {
                Some(labels) => (name, labels),
                None => fail("unclosed labels"),
            },
            None => (name_and_labels, ""),
        };
        if !is_metric_name(name) {
            fail("bad metric name");
        }
        if !labels.is_empty() && !are_labels(labels) {
            fail("bad labels");
        }
        let Some((family_name, kind)) = &family else {
            fail("sample before any # TYPE");
        };
        let suffixes: &[&str] = match kind.as_str() {
            "counter" => &["", "_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            _ => &[""],
        };
        let base = family_name.strip_suffix("_total").unwrap_or(family_name);
        let belongs = suffixes.iter().any(|suffix| {
            name == format!("{family_name}{suffix}") || name == format!("{base}{suffix}")
        });
        if !belongs {
            fail(&format!("sample outside its family {family_name}"));
        }
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            number => number.parse().unwrap_or_else(|_| fail("bad value")),
        };
        if samples.insert(name_and_labels.to_string(), value).is_some() {
            fail("duplicate sample");
        }
    }
    if format == Format::OpenMetrics {
        assert!(saw_eof, "OpenMetrics text must end with # EOF");
    }
    samples
}

fn is_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// `a="x",b="y\"z"`: names, `=`, quoted values with only `\\`, `\"` and `\n` escapes.
fn are_labels(mut rest: &str) -> bool {
    loop {
        let Some((name, after)) = rest.split_once("=\"") else {
            return false;
        };
        let mut name_bytes = name.bytes();
        if !name_bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            || !name_bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return false;
        }
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\' | '"' | 'n')) => {}
                    _ => return false,
                },
                Some((i, '"')) => break i,
                Some((_, '\n')) | None => return false,
                Some(_) => {}
            }
        };
        rest = &after[end + 1..];
        if rest.is_empty() {
            return true;
        }
        match rest.strip_prefix(',') {
            Some(next) => rest = next,
            None => return false,
        }
    }
}

#[test]
fn the_reader_refuses_what_a_scraper_would() {
    let good = "# HELP a_total Things.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\"} 2\n";
    assert_eq!(
        parse(good, Format::Prometheus)["a_total{x=\"1\",y=\"q\\\"\"}"],
        2.0
    );
    for bad in [
        "# TYPE a counter\na_total{x=1} 2\n",
        "# TYPE a counter\na_total{x=\"1\" 2\n",
        "# TYPE a counter\na_total two\n",
        "# TYPE a counter\nb_total 2\n",
        "a_total 2\n",
        "# TYPE a counter\na_total 1\na_total 1\n",
        "# TYPE a counter\na_total{x=\"\\q\"} 1\n",
    ] {
        let result = std::panic::catch_unwind(|| parse(bad, Format::Prometheus));
        assert!(result.is_err(), "accepted {bad:?}");
    }
    let open = "# TYPE a counter\na_total 1\n# EOF\n";
    assert_eq!(parse(open, Format::OpenMetrics)["a_total"], 1.0);
    assert!(std::panic::catch_unwind(|| parse(
        "# TYPE a counter\na_total 1\n",
        Format::OpenMetrics
    ))
    .is_err());
}
