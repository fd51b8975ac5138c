//! Path normalization and template matching on arbitrary text.
//!
//! Input: the first line is a path template, the rest a request path (both arbitrary).
//! Properties: `normalize` never panics and is idempotent; a normalized path holds nothing
//! `normalize` refuses (an encoded `/`, `\` or NUL, a raw `\`); matching never panics, and a
//! matched parameter is one segment of the normalized path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strangler_plan::path::{PathTemplate, TemplateSegment, normalize, split};

fuzz_target!(|input: &str| {
    let (template, raw) = input.split_once('\n').unwrap_or(("/{id}", input));
    let Ok(normal) = normalize(raw) else {
        return;
    };
    assert!(normal.starts_with('/'), "{raw:?} → {normal:?}");
    assert_eq!(
        normalize(&normal).as_deref(),
        Ok(normal.as_str()),
        "normalizing {raw:?} twice"
    );
    let upper = normal.to_ascii_uppercase();
    for refused in ["%2F", "%5C", "%00", "\\"] {
        assert!(!upper.contains(refused), "{raw:?} → {normal:?} holds {refused}");
    }
    let segments = split(&normal);
    assert!(
        segments.iter().all(|s| !s.contains('/')),
        "{normal:?} split into {segments:?}"
    );
    let Ok(template) = PathTemplate::parse(template) else {
        return;
    };
    if !template.matches(&segments) {
        return;
    }
    for (i, segment) in template.segments().iter().enumerate() {
        if let TemplateSegment::Param(name) = segment {
            let value = template.param(&segments, name);
            assert!(
                value.is_some_and(|v| !v.is_empty() && segments.contains(&v)),
                "{template} on {normal:?}: {name} = {value:?}"
            );
            // The first parameter of a name is the one `param` answers.
            if template.segments()[..i]
                .iter()
                .all(|s| !matches!(s, TemplateSegment::Param(n) if n == name))
            {
                assert_eq!(value, segments.get(i).copied(), "{template} on {normal:?}");
            }
        }
    }
});
