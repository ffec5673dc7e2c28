//! `loadtest plot RUN.json -o RUN.html`: one self-contained HTML page from a run's JSON report,
//! with three charts drawn as inline SVG (no script, no style sheet, font or image fetched from
//! anywhere): the corrected latency p50/p90/p99 second by second (the report's `timeline`), the
//! achieved and target rates second by second, and the latency percentile distribution (the
//! report's `latency_distribution_ms`) on a log axis of 1/(1−q), as HdrHistogram's plotter and
//! `vegeta plot` draw it. Every text taken from the report is escaped.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::hgrm::QuantileValue;
use crate::timeline::TimelineRow;

/// Chart size in SVG user units, and the margins left for the axes' labels.
const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 40.0;

/// What `plot` reads of a report.
#[derive(Debug, Deserialize)]
struct Run {
    schema: String,
    target: String,
    mode: String,
    endpoint: String,
    connections: u64,
    seed: u64,
    elapsed_s: f64,
    latency_ms: Latency,
    #[serde(default)]
    timeline: Option<Vec<TimelineRow>>,
    #[serde(default)]
    latency_distribution_ms: Option<Vec<QuantileValue>>,
}

#[derive(Debug, Deserialize)]
struct Latency {
    corrected: Corrected,
}

#[derive(Debug, Deserialize)]
struct Corrected {
    count: u64,
    p50: f64,
    p99: f64,
    max: f64,
}

/// Reads the report at `report` and writes the page to `output`.
pub fn plot(report: &Path, output: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(report).with_context(|| format!("reading {}", report.display()))?;
    let page = page(&text).with_context(|| format!("plotting {}", report.display()))?;
    std::fs::write(output, page).with_context(|| format!("writing {}", output.display()))
}

/// The page for the JSON report `json`.
pub fn page(json: &str) -> Result<String> {
    let run: Run = serde_json::from_str(json)
        .context("not a loadtest JSON report (write one with `loadtest run --json FILE`)")?;
    if !run.schema.starts_with("loadtest.report.") {
        bail!("schema {:?} is not a loadtest report's", run.schema);
    }
    let (Some(timeline), Some(distribution)) = (&run.timeline, &run.latency_distribution_ms) else {
        bail!(
            "the report has no timeline or latency distribution: it was written by a loadtest \
             from before them; run again to plot"
        );
    };
    let mut out = String::new();
    let title = format!("loadtest: {}", run.target);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{}</title>\n</head>\n\
         <body style=\"font-family: sans-serif; margin: 24px; color: #222\">\n<h1 style=\"font-size: 20px\">{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    let c = &run.latency_ms.corrected;
    let _ = writeln!(
        out,
        "<p>{} loop, {} endpoint, {} connections, seed {}, {:.2} s; corrected latency over {} \
         requests: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms.</p>",
        escape(&run.mode),
        escape(&run.endpoint),
        run.connections,
        run.seed,
        run.elapsed_s,
        c.count,
        c.p50,
        c.p99,
        c.max
    );

    // Each second's point sits in the middle of the time it covers.
    let middle = |row: &TimelineRow| f64::from(row.second) + row.span_s / 2.0;
    let answered: Vec<&TimelineRow> = timeline.iter().filter(|r| r.latency_ms.count > 0).collect();
    let latency = |pick: fn(&TimelineRow) -> f64| -> Vec<(f64, f64)> {
        answered.iter().map(|r| (middle(r), pick(r))).collect()
    };
    let end_s = timeline
        .last()
        .map_or(1.0, |r| f64::from(r.second) + r.span_s);
    out.push_str(&chart(&Chart {
        id: "latency-over-time",
        title: "Corrected latency, second by second",
        y_label: "ms",
        x_range: (0.0, end_s),
        x_ticks: time_ticks(end_s),
        series: vec![
            ("p50", "#1b9e77", latency(|r| r.latency_ms.p50)),
            ("p90", "#7570b3", latency(|r| r.latency_ms.p90)),
            ("p99", "#d95f02", latency(|r| r.latency_ms.p99)),
        ],
    }));
    let mut rates = vec![(
        "achieved",
        "#1f78b4",
        timeline
            .iter()
            .map(|r| (middle(r), r.achieved_per_s))
            .collect::<Vec<_>>(),
    )];
    if timeline.iter().any(|r| r.target_per_s.is_some()) {
        rates.push((
            "target",
            "#999999",
            timeline
                .iter()
                .filter_map(|r| r.target_per_s.map(|t| (middle(r), t)))
                .collect(),
        ));
    }
    out.push_str(&chart(&Chart {
        id: "rate-over-time",
        title: "Rate, second by second",
        y_label: "per second",
        x_range: (0.0, end_s),
        x_ticks: time_ticks(end_s),
        series: rates,
    }));

    // The distribution on x = log10(1/(1-q)); q = 1 (the maximum) goes one step past the last
    // finite quantile, where the count's resolution puts it.
    let finite: Vec<(f64, f64)> = distribution
        .iter()
        .filter(|step| step.quantile < 1.0)
        .map(|step| ((1.0 / (1.0 - step.quantile)).log10(), step.ms))
        .collect();
    let mut points = finite.clone();
    let last_x = finite.last().map_or(0.0, |p| p.0);
    let max_x = last_x.max((c.count.max(1) as f64).log10()).max(1.0);
    if let Some(max) = distribution.iter().find(|step| step.quantile >= 1.0) {
        points.push((max_x, max.ms));
    }
    let nines = max_x.ceil() as u32;
    let ticks = (0..=nines)
        .map(|n| {
            let label = match n {
                0 => "0%".to_owned(),
                1 => "90%".to_owned(),
                n => format!("99.{}%", "9".repeat(n as usize - 2)).replace("99.%", "99%"),
            };
            (f64::from(n), label)
        })
        .collect();
    out.push_str(&chart(&Chart {
        id: "latency-distribution",
        title: "Corrected latency by percentile",
        y_label: "ms",
        x_range: (0.0, f64::from(nines)),
        x_ticks: ticks,
        series: vec![("distribution", "#d95f02", points)],
    }));
    out.push_str(
        "<p style=\"font-size: 12px; color: #666\">Latency is corrected: with -R or --stages, \
         from the intended send time. Drawn by <code>loadtest plot</code>.</p>\n</body>\n</html>\n",
    );
    Ok(out)
}

/// One chart: lines over a shared x axis, y from 0.
struct Chart {
    id: &'static str,
    title: &'static str,
    y_label: &'static str,
    x_range: (f64, f64),
    x_ticks: Vec<(f64, String)>,
    series: Vec<Series>,
}

/// A line of a chart: its name (shown, and in `data-series`), colour and points.
type Series = (&'static str, &'static str, Vec<(f64, f64)>);

/// Ticks every so many seconds, about ten of them.
fn time_ticks(end_s: f64) -> Vec<(f64, String)> {
    let step = nice_step(end_s / 10.0);
    (0..)
        .map(|i| f64::from(i) * step)
        .take_while(|t| *t <= end_s + 1e-9)
        .map(|t| (t, format!("{t}s")))
        .collect()
}

/// 1, 2 or 5 times a power of ten, at least `rough`.
fn nice_step(rough: f64) -> f64 {
    if !rough.is_finite() || rough <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(rough.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|step| *step >= rough)
        .unwrap_or(10.0 * power)
}

/// The chart as an inline SVG, each series a polyline with `data-series`.
fn chart(chart: &Chart) -> String {
    let y_max = chart
        .series
        .iter()
        .flat_map(|(_, _, points)| points.iter().map(|p| p.1))
        .filter(|y| y.is_finite())
        .fold(0.0f64, f64::max);
    let y_step = nice_step(y_max.max(1e-3) / 5.0);
    let y_top = (y_max / y_step).ceil().max(1.0) * y_step;
    let (x0, x1) = chart.x_range;
    let x_span = if x1 > x0 { x1 - x0 } else { 1.0 };
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x_of = |x: f64| LEFT + (x - x0) / x_span * plot_w;
    let y_of = |y: f64| TOP + plot_h - y / y_top * plot_h;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<h2 style=\"font-size: 16px\">{}</h2>\n<svg id=\"{}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\" font-size=\"11\">",
        escape(chart.title),
        chart.id
    );
    let _ = writeln!(
        svg,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"none\" \
         stroke=\"#ccc\"/>"
    );
    let mut y = 0.0;
    while y <= y_top + y_step / 2.0 {
        let py = y_of(y);
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#eee\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + plot_w,
            LEFT - 6.0,
            py + 4.0,
            escape(&format_number(y))
        );
        y += y_step;
    }
    for (x, label) in &chart.x_ticks {
        let px = x_of(*x);
        let _ = writeln!(
            svg,
            "<line x1=\"{px:.1}\" y1=\"{TOP}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>\
             <text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            TOP + plot_h,
            TOP + plot_h + 16.0,
            escape(label)
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"12\" y=\"{:.1}\" transform=\"rotate(-90 12 {:.1})\" text-anchor=\"middle\">{}</text>",
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        escape(chart.y_label)
    );
    for (i, (name, colour, points)) in chart.series.iter().enumerate() {
        let mut coordinates = String::new();
        for (x, y) in points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
        {
            let _ = write!(coordinates, "{:.1},{:.1} ", x_of(*x), y_of(*y));
        }
        let _ = writeln!(
            svg,
            "<polyline data-series=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" \
             points=\"{}\"/>",
            escape(name),
            coordinates.trim_end()
        );
        let lx = LEFT + 10.0 + 110.0 * i as f64;
        let _ = writeln!(
            svg,
            "<line x1=\"{lx:.1}\" y1=\"14\" x2=\"{:.1}\" y2=\"14\" stroke=\"{colour}\" \
             stroke-width=\"3\"/><text x=\"{:.1}\" y=\"18\">{}</text>",
            lx + 18.0,
            lx + 22.0,
            escape(name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// A tick label: no trailing zeros.
fn format_number(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_steps() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(1.3), 2.0);
        assert_eq!(nice_step(31.0), 50.0);
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(format_number(2.50), "2.5");
        assert_eq!(format_number(0.0), "0");
    }

    #[test]
    fn not_a_report_is_refused() {
        assert!(page("[]").is_err());
        assert!(page("{\"schema\":\"other\"}").is_err());
    }
}
