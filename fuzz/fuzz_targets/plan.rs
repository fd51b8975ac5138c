//! The plan parser on arbitrary text and on edits of the demo plan.
//!
//! Input: a mode byte, then the rest.
//! - mode 0: the rest is the plan;
//! - mode 1: the rest is appended to the demo plan (as the plan tests add a route);
//! - mode 2: two bytes of offset and one of length, then text spliced into the demo plan there.
//!
//! Properties: never panics; an error's line and column lie inside the text; a plan that
//! parses keeps what validation promises (one legacy service, known route services,
//! distinct listeners, a tolerance of 0 or more).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

const DEMO: &str = include_str!("../../migration-plan.toml");

fn text(data: &[u8]) -> Option<String> {
    let (&mode, rest) = data.split_first()?;
    let rest = String::from_utf8_lossy(rest);
    match mode % 3 {
        0 => Some(rest.into_owned()),
        1 => Some(format!("{DEMO}{rest}")),
        _ => {
            let rest = rest.as_bytes();
            let [hi, lo, remove, ..] = *rest else {
                return None;
            };
            let insert = String::from_utf8_lossy(&rest[3..]);
            let mut at = usize::from(u16::from_be_bytes([hi, lo])) % (DEMO.len() + 1);
            while !DEMO.is_char_boundary(at) {
                at -= 1;
            }
            let mut end = (at + usize::from(remove)).min(DEMO.len());
            while !DEMO.is_char_boundary(end) {
                end -= 1;
            }
            Some(format!("{}{insert}{}", &DEMO[..at], &DEMO[end..]))
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(text) = text(data) else {
        return;
    };
    match strangler_plan::parse(Path::new("plan.toml"), &text) {
        Err(err) => {
            let shown = err.to_string();
            assert!(shown.starts_with("plan.toml"), "{shown}");
            if err.line == 0 {
                assert_eq!(err.column, 0, "{err:?}");
                return;
            }
            let lines: Vec<&str> = text.split('\n').collect();
            assert!(err.line <= lines.len(), "{err:?} in {} lines", lines.len());
            let line = lines[err.line - 1];
            assert!(
                err.column >= 1 && err.column <= line.len() + 1,
                "{err:?} on a line of {} bytes",
                line.len()
            );
        }
        Ok(plan) => {
            let legacy: Vec<_> = plan.services.values().filter(|s| s.legacy).collect();
            assert_eq!(legacy.len(), 1, "{plan:?}");
            assert_eq!(legacy[0].name, plan.legacy);
            assert_ne!(plan.proxy.listen, plan.proxy.admin_listen);
            for route in &plan.routes {
                assert!(plan.services.contains_key(&route.service), "{route:?}");
                assert!(
                    route.compare.tolerance >= 0.0,
                    "route {}: tolerance {}",
                    route.name,
                    route.compare.tolerance
                );
            }
        }
    }
});
