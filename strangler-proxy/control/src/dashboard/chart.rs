//! Small inline-SVG time series over the last hour (or since the proxy started, at least a
//! minute): one polyline per series, broken where a point has no value, on a fixed scale or
//! one that fits the data.

use maud::{Markup, html};

use crate::history::{KEPT, Point, SAMPLE_EVERY};

const WIDTH: f64 = 180.0;
const HEIGHT: f64 = 44.0;
/// The longest time a chart spans: what the history keeps.
const SPAN_MS: f64 = KEPT as f64 * SAMPLE_EVERY.as_millis() as f64;
/// The shortest: a proxy that just started still draws a readable line.
const MIN_SPAN_MS: f64 = 60_000.0;

/// One line of a chart: its CSS class (`legacy`, `new`, `match`) and values.
pub struct Series<'a> {
    pub class: &'static str,
    pub value: &'a dyn Fn(&Point) -> Option<f64>,
}

/// A chart of `series` over `points`, scaled to `max` (or to the largest value).
pub fn chart(
    label: &str,
    points: &[Point],
    now_ms: i64,
    max: Option<f64>,
    series: &[Series<'_>],
) -> Markup {
    let top = max.unwrap_or_else(|| {
        points
            .iter()
            .flat_map(|p| series.iter().filter_map(|s| (s.value)(p)))
            .fold(0.0_f64, f64::max)
    });
    let top = if top > 0.0 { top } else { 1.0 };
    // From the oldest point (at most an hour ago) to now.
    let span = points
        .first()
        .map_or(SPAN_MS, |p| (now_ms - p.at_ms) as f64)
        .clamp(MIN_SPAN_MS, SPAN_MS);
    let x = |at: i64| {
        let age = (now_ms - at) as f64;
        (WIDTH * (1.0 - age / span)).clamp(0.0, WIDTH)
    };
    let y = |v: f64| HEIGHT - 2.0 - (HEIGHT - 4.0) * (v / top).clamp(0.0, 1.0);
    html! {
        figure.chart {
            svg role="img" aria-label=(label) viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) width=(WIDTH) height=(HEIGHT) {
                line.axis x1="0" y1=(HEIGHT - 1.0) x2=(WIDTH) y2=(HEIGHT - 1.0) {}
                @if !points.iter().any(|p| series.iter().any(|s| (s.value)(p).is_some())) {
                    text.no-data x=(WIDTH / 2.0) y=(HEIGHT / 2.0) text-anchor="middle" { "no data yet" }
                }
                @for s in series {
                    @for run in runs(points, s.value) {
                        @if run.len() == 1 {
                            circle class=(s.class) cx=(format!("{:.1}", x(run[0].0))) cy=(format!("{:.1}", y(run[0].1))) r="1.5" {}
                        } @else {
                            polyline class=(s.class) points=(run.iter().map(|(at, v)| format!("{:.1},{:.1}", x(*at), y(*v))).collect::<Vec<_>>().join(" ")) {}
                        }
                    }
                }
            }
            figcaption { (label) }
        }
    }
}

/// The stretches of consecutive points that have a value.
fn runs(points: &[Point], value: &dyn Fn(&Point) -> Option<f64>) -> Vec<Vec<(i64, f64)>> {
    let mut out: Vec<Vec<(i64, f64)>> = Vec::new();
    let mut current = Vec::new();
    for p in points {
        match value(p) {
            Some(v) if v.is_finite() => current.push((p.at_ms, v)),
            _ if current.is_empty() => {}
            _ => out.push(std::mem::take(&mut current)),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_breaks_the_line() {
        let point = |at_ms, match_rate| Point {
            at_ms,
            match_rate,
            ..Point::default()
        };
        let points = [
            point(1, Some(1.0)),
            point(2, Some(0.5)),
            point(3, None),
            point(4, Some(0.9)),
        ];
        let lines = runs(&points, &|p: &Point| p.match_rate);
        assert_eq!(lines, vec![vec![(1, 1.0), (2, 0.5)], vec![(4, 0.9)]]);
        let svg = chart(
            "match rate",
            &points,
            4,
            Some(1.0),
            &[Series {
                class: "match",
                value: &|p: &Point| p.match_rate,
            }],
        )
        .into_string();
        assert!(svg.contains("<polyline class=\"match\""), "{svg}");
        assert!(svg.contains("<circle class=\"match\""), "{svg}");
    }
}
