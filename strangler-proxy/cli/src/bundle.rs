//! A capture bundle: a route's captured cases as plain files, for review in a pull request
//! and for `strangler replay`.
//!
//! ```text
//! DIR/bundle.json                      the route and its comparison rules
//! DIR/cases/000042-get-students-7.json one case: request, both answers, the differences
//! ```
//!
//! Files are pretty-printed with their keys in a fixed order and named by the case's store
//! id, method and path, so exporting again changes only what changed. Exporting into a
//! bundle adds and updates cases and removes none: a bundle kept in a repository grows into
//! a regression suite, and a case is dropped by deleting its file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use strangler_dataplane::capture::Case;
use strangler_plan::{CompareSpec, Plan, Redaction, check_pattern};

use crate::cli::{CliError, EXIT_FAILED, EXIT_USAGE};

/// What `bundle.json` says a bundle is.
pub const FORMAT: &str = "strangler-capture/1";
const INDEX: &str = "bundle.json";
const CASES: &str = "cases";

/// `bundle.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Index {
    pub format: String,
    pub route: String,
    /// The route's `compare` section when it was exported, as the plan writes it.
    pub compare: Compare,
    /// The route's `capture.redact` when it was exported: replay takes the same out of the
    /// answers it gets before comparing them with the captured ones.
    #[serde(default)]
    pub redact: Vec<String>,
}

impl Index {
    /// The redactions, as the plan would have checked them.
    pub fn redactions(&self) -> Result<Vec<Redaction>, String> {
        self.redact
            .iter()
            .map(|r| {
                let redaction = Redaction::parse(r)?;
                if let Redaction::Body(pattern) = &redaction {
                    check_pattern(pattern)?;
                }
                Ok(redaction)
            })
            .collect()
    }
}

/// A route's `compare` section in the plan's own words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compare {
    #[serde(default)]
    pub ignore: Vec<String>,
    #[serde(default)]
    pub tolerance: f64,
    #[serde(default)]
    pub sets: Vec<String>,
    #[serde(default)]
    pub keyed: BTreeMap<String, String>,
    #[serde(default)]
    pub headers: Vec<String>,
    /// `value` or `exact`.
    #[serde(default = "by_value")]
    pub numbers: String,
}

fn by_value() -> String {
    "value".to_string()
}

impl Compare {
    fn of(spec: &CompareSpec) -> Self {
        Compare {
            ignore: spec.ignore.clone(),
            tolerance: spec.tolerance,
            sets: spec.sets.clone(),
            keyed: spec.keyed.iter().cloned().collect(),
            headers: spec.headers.clone(),
            numbers: if spec.exact_numbers { "exact" } else { "value" }.to_string(),
        }
    }

    /// The rules as the plan would have checked them.
    pub fn spec(&self) -> Result<CompareSpec, String> {
        for pattern in self
            .ignore
            .iter()
            .chain(&self.sets)
            .chain(self.keyed.keys())
        {
            check_pattern(pattern)?;
        }
        if !(0.0..).contains(&self.tolerance) {
            return Err("compare.tolerance must be 0 or more".to_string());
        }
        let exact_numbers = match self.numbers.as_str() {
            "value" => false,
            "exact" if self.tolerance > 0.0 => {
                return Err("compare.numbers \"exact\" cannot have a tolerance".to_string());
            }
            "exact" => true,
            other => {
                return Err(format!(
                    "compare.numbers must be \"value\" or \"exact\", not `{other}`"
                ));
            }
        };
        Ok(CompareSpec {
            ignore: self.ignore.clone(),
            tolerance: self.tolerance,
            sets: self.sets.clone(),
            keyed: self.keyed.clone().into_iter().collect(),
            headers: self
                .headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            exact_numbers,
        })
    }
}

/// One case file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseFile {
    /// The case's id in the store it was exported from.
    pub id: i64,
    pub captured_at: String,
    #[serde(flatten)]
    pub case: Case,
}

/// A bundle read back: its index and its cases, by file name.
pub struct Bundle {
    pub index: Index,
    pub cases: Vec<(String, CaseFile)>,
}

fn usage(message: String) -> CliError {
    CliError {
        code: EXIT_USAGE,
        message,
    }
}

/// `file name: what is wrong`, as one line.
fn unreadable(path: &Path, err: impl std::fmt::Display) -> CliError {
    let message = err.to_string();
    usage(format!(
        "{}: {}",
        path.display(),
        message.split_whitespace().collect::<Vec<_>>().join(" ")
    ))
}

/// Reads the bundle in `dir`; a directory that is not one is a usage error.
pub fn read(dir: &Path) -> Result<Bundle, CliError> {
    let index_path = dir.join(INDEX);
    let text = std::fs::read_to_string(&index_path).map_err(|err| {
        usage(format!(
            "{} is not a capture bundle (cannot read {INDEX}: {err}); make one with `strangler capture export ROUTE --out DIR`",
            dir.display()
        ))
    })?;
    let index: Index = serde_json::from_str(&text).map_err(|e| unreadable(&index_path, e))?;
    if index.format != FORMAT {
        return Err(usage(format!(
            "{}: format `{}` is not {FORMAT}, which this version reads",
            index_path.display(),
            index.format
        )));
    }
    index
        .compare
        .spec()
        .map_err(|m| unreadable(&index_path, m))?;
    index
        .redactions()
        .map_err(|m| unreadable(&index_path, format!("redact: {m}")))?;
    let mut names: Vec<PathBuf> = match std::fs::read_dir(dir.join(CASES)) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => return Err(unreadable(&dir.join(CASES), err)),
    };
    names.sort();
    let mut cases = Vec::with_capacity(names.len());
    for path in names {
        let text = std::fs::read_to_string(&path).map_err(|e| unreadable(&path, e))?;
        let case: CaseFile = serde_json::from_str(&text).map_err(|e| unreadable(&path, e))?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        cases.push((name, case));
    }
    Ok(Bundle { index, cases })
}

/// The file name of a case: its id, method and path, readable and stable.
fn file_name(id: i64, case: &Case) -> String {
    let path = case.request.uri.split('?').next().unwrap_or_default();
    let mut slug = String::new();
    for c in path.chars() {
        let c = if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '-'
        };
        if !(c == '-' && (slug.is_empty() || slug.ends_with('-'))) {
            slug.push(c);
        }
        if slug.len() >= 48 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    let method = case.request.method.to_ascii_lowercase();
    if slug.is_empty() {
        format!("{id:06}-{method}.json")
    } else {
        format!("{id:06}-{method}-{slug}.json")
    }
}

/// `strangler capture export ROUTE --out DIR`: answers (cases written, of them new).
pub fn export(plan: &Plan, route: &str, out: &Path) -> Result<(usize, usize), CliError> {
    let spec = crate::cli::known_route(plan, route)?;
    if out.exists() {
        if out.join(INDEX).exists() {
            let existing = read(out)?;
            if existing.index.route != route {
                return Err(usage(format!(
                    "{} holds the bundle of route {}, not {route}",
                    out.display(),
                    existing.index.route
                )));
            }
        } else if std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some()) {
            return Err(usage(format!(
                "{} exists and is not a capture bundle; name a new or empty directory",
                out.display()
            )));
        }
    }
    let store = strangler_store::open(&plan.proxy.state)?;
    let stored = store.captures(route)?;
    drop(store);
    if stored.is_empty() {
        let hint = if spec.capture.is_none() {
            format!(
                "add capture = {{ mismatches = 5 }} to the route in {} and shadow it",
                plan.file.display()
            )
        } else {
            "its shadow has kept no mismatch yet".to_string()
        };
        return Err(CliError {
            code: EXIT_FAILED,
            message: format!("{route} has no captured cases: {hint}"),
        });
    }
    let failed = |path: &Path, err: std::io::Error| {
        CliError::failed(format!("cannot write {}: {err}", path.display()))
    };
    let cases_dir = out.join(CASES);
    std::fs::create_dir_all(&cases_dir).map_err(|e| failed(&cases_dir, e))?;
    let index = Index {
        format: FORMAT.to_string(),
        route: route.to_string(),
        compare: Compare::of(&spec.compare),
        redact: spec
            .capture
            .iter()
            .flat_map(|c| c.redact.iter().map(ToString::to_string))
            .collect(),
    };
    write_json(&out.join(INDEX), &index).map_err(|e| failed(&out.join(INDEX), e))?;
    let mut new = 0;
    for stored in &stored {
        let mut case: Case = match serde_json::from_value(stored.case.clone()) {
            Ok(case) => case,
            Err(err) => {
                tracing::warn!(id = stored.id, error = %err, "a stored case this version cannot read; skipped");
                continue;
            }
        };
        case.request.body = std::mem::take(&mut case.request.body).readable();
        case.legacy.body = std::mem::take(&mut case.legacy.body).readable();
        case.new.body = std::mem::take(&mut case.new.body).readable();
        let path = cases_dir.join(file_name(stored.id, &case));
        if !path.exists() {
            new += 1;
        }
        let file = CaseFile {
            id: stored.id,
            captured_at: stored.at.clone(),
            case,
        };
        write_json(&path, &file).map_err(|e| failed(&path, e))?;
    }
    Ok((stored.len(), new))
}

fn write_json(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    text.push('\n');
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strangler_dataplane::capture::{Body, Exchange, Request};

    fn case(method: &str, uri: &str) -> Case {
        let exchange = Exchange {
            status: 200,
            headers: Vec::new(),
            body: Body::Empty,
        };
        Case {
            route: "students".into(),
            request_id: "r".into(),
            path: "/name".into(),
            request: Request {
                method: method.into(),
                uri: uri.into(),
                headers: Vec::new(),
                body: Body::Empty,
            },
            legacy: exchange.clone(),
            new: exchange,
            differences: Vec::new(),
            redacted: Vec::new(),
        }
    }

    #[test]
    fn case_files_are_named_by_id_method_and_path() {
        assert_eq!(
            file_name(42, &case("GET", "/students/7?token=x")),
            "000042-get-students-7.json"
        );
        assert_eq!(file_name(7, &case("POST", "/")), "000007-post.json");
        assert_eq!(
            file_name(1, &case("PUT", "/a//B_c/%20d/")),
            "000001-put-a-b-c-20d.json"
        );
    }

    #[test]
    fn the_compare_section_round_trips_and_is_checked() {
        let spec = CompareSpec {
            ignore: vec!["/at".into()],
            tolerance: 0.5,
            sets: vec!["/tags".into()],
            keyed: vec![("/items".into(), "id".into())],
            headers: vec!["content-type".into()],
            exact_numbers: false,
        };
        let compare = Compare::of(&spec);
        assert_eq!(compare.spec().unwrap(), spec);
        let bad = Compare {
            ignore: vec!["at".into()],
            ..compare.clone()
        };
        assert!(bad.spec().unwrap_err().contains("JSON Pointer"));
        let bad = Compare {
            numbers: "exact".into(),
            ..compare
        };
        assert!(bad.spec().unwrap_err().contains("tolerance"));
    }
}
