//! Charts as plain SVG text, drawn from a scenario's own figures (no plotting library):
//! panels stacked on one time axis, each with its lines, its scale from zero to its
//! largest value, and a legend.

use std::fmt::Write;

use crate::soak::Interval;

const WIDTH: f64 = 860.0;
const PANEL_HEIGHT: f64 = 180.0;
const GAP: f64 = 56.0;
const LEFT: f64 = 78.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;

/// One line: its name and points (minute, value); missing values break nothing, they
/// are left out.
struct Series {
    name: &'static str,
    color: &'static str,
    points: Vec<(f64, f64)>,
}

struct Panel {
    title: &'static str,
    series: Vec<Series>,
}

/// The soak chart: table plus index size, dead row versions, and the p99 latencies.
pub fn soak(rows: &[Interval]) -> String {
    let line = |name, color, value: &dyn Fn(&Interval) -> Option<f64>| Series {
        name,
        color,
        points: rows
            .iter()
            .filter_map(|r| Some((r.minute, value(r)?)))
            .collect(),
    };
    let panels = [
        Panel {
            title: "jobs table + indexes (MB)",
            series: vec![
                line("table + indexes", "#1f77b4", &Interval::size_mb),
                line("indexes", "#aec7e8", &|r| r.index_mb),
            ],
        },
        Panel {
            title: "dead row versions",
            series: vec![line("n_dead_tup", "#d62728", &|r| {
                r.dead_tuples.map(|d| d as f64)
            })],
        },
        Panel {
            title: "p99 latency (ms)",
            series: vec![
                line("claim p99", "#2ca02c", &|r| r.claim_p99_ms),
                line("enqueue-to-start p99", "#ff7f0e", &|r| r.start_p99_ms),
            ],
        },
    ];
    let minutes = rows.last().map_or(1.0, |r| r.minute).max(f64::EPSILON);
    draw(&panels, minutes)
}

fn draw(panels: &[Panel], minutes: f64) -> String {
    let height = TOP + panels.len() as f64 * (PANEL_HEIGHT + GAP);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"22\" font-size=\"15\">jobs-bench soak, per interval \
         (x: minutes)</text>\n"
    );
    for (i, panel) in panels.iter().enumerate() {
        let top = TOP + i as f64 * (PANEL_HEIGHT + GAP) + 20.0;
        draw_panel(&mut svg, panel, top, minutes);
    }
    svg.push_str("</svg>\n");
    svg
}

fn draw_panel(svg: &mut String, panel: &Panel, top: f64, minutes: f64) {
    let plot_width = WIDTH - LEFT - RIGHT;
    let max = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let max = if max > 0.0 { max * 1.05 } else { 1.0 };
    let x = |minute: f64| LEFT + minute / minutes * plot_width;
    let y = |value: f64| top + PANEL_HEIGHT - value / max * PANEL_HEIGHT;
    let bottom = top + PANEL_HEIGHT;
    // Writing to a String cannot fail.
    let _ = writeln!(
        svg,
        "<text x=\"{LEFT}\" y=\"{}\" font-weight=\"bold\">{}</text>\n\
         <rect x=\"{LEFT}\" y=\"{top}\" width=\"{plot_width}\" height=\"{PANEL_HEIGHT}\" \
         fill=\"none\" stroke=\"#999\"/>",
        top - 6.0,
        panel.title
    );
    for step in 0..=4 {
        let value = max * f64::from(step) / 4.0;
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n\
             <line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#eee\"/>",
            LEFT - 6.0,
            y(value) + 4.0,
            label(value),
            LEFT + plot_width,
            y = y(value),
        );
        let minute = minutes * f64::from(step) / 4.0;
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{minute:.1}</text>",
            x(minute),
            bottom + 16.0
        );
    }
    for (i, series) in panel.series.iter().enumerate() {
        let points: Vec<String> = series
            .points
            .iter()
            .map(|&(m, v)| format!("{:.1},{:.1}", x(m), y(v)))
            .collect();
        let legend_x = LEFT + 10.0 + i as f64 * 190.0;
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n\
             <rect x=\"{legend_x}\" y=\"{}\" width=\"12\" height=\"3\" fill=\"{color}\"/>\n\
             <text x=\"{}\" y=\"{}\">{}</text>",
            points.join(" "),
            top + 12.0,
            legend_x + 16.0,
            top + 17.0,
            series.name,
            color = series.color,
        );
    }
}

/// A tick label: whole numbers with thousands as k and millions as M.
fn label(value: f64) -> String {
    match value {
        v if v >= 1e6 => format!("{:.1}M", v / 1e6),
        v if v >= 1e4 => format!("{:.0}k", v / 1e3),
        v if v >= 10.0 => format!("{v:.0}"),
        v => format!("{v:.2}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_draws_every_series_from_the_rows() {
        let rows: Vec<Interval> = (1..=3)
            .map(|m| Interval {
                minute: f64::from(m),
                table_mb: Some(10.0 * f64::from(m)),
                index_mb: Some(2.0),
                dead_tuples: Some(1_000),
                claim_p99_ms: Some(1.5),
                start_p99_ms: None,
                ..Interval::default()
            })
            .collect();
        let svg = soak(&rows);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // Five lines drawn; the one without values is empty but still named.
        assert_eq!(svg.matches("<polyline").count(), 5);
        assert!(svg.contains("enqueue-to-start p99"));
        // The last row is at the right edge of the plot.
        assert!(svg.contains(&format!("{:.1},", WIDTH - RIGHT)));
    }
}
