//! The simulator's plots as standalone SVG: a delivery-latency CDF per strategy, and a timeline of delivery
//! latency around each fault. Pure text generation, byte for byte the same for the same data.

use std::fmt::Write as _;

use super::engine::{Outcome, Strategy, Timeline, STRATEGIES};
use super::histogram::Histogram;
use super::summary::merged;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 160.0;
/// Above the plot: the title's first line and room under it; each further title line adds [`TITLE_LINE`].
const TOP: f64 = 40.0;
const TITLE_LINE: f64 = 14.0;
const BOTTOM: f64 = 55.0;
/// One colour per strategy (Okabe-Ito: tells apart with any colour vision).
const COLOURS: [&str; 3] = ["#0072B2", "#D55E00", "#009E73"];
/// At most this many points per line, so that an hour of deliveries stays a small file.
const MAX_POINTS: usize = 2_000;

/// Title lines are wrapped to fit the canvas at about this many pixels per character of their font size
/// (sans-serif averages 0.5-0.55 of the size; bold and capitals run wider).
const CHAR_WIDTH: f64 = 0.6;
/// A scenario's name longer than this is shortened in titles (its middle elided), so that what follows it
/// (the fault, the lost counts) stays in view.
const MAX_NAME_CHARS: usize = 48;

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    /// Joined by a line; a non-finite y breaks it (nothing to draw there).
    pub points: Vec<(f64, f64)>,
    /// Drawn as hollow circles, not joined: values over only part of what was due (the rest got nothing),
    /// so lower than the whole would have been.
    pub partial: Vec<(f64, f64)>,
}

/// A line chart: x (optionally logarithmic) against y, with vertical markers.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_log: bool,
    pub series: Vec<Series>,
    /// Vertical dashed lines at these x, labelled.
    pub markers: Vec<(f64, String)>,
    /// Short red ticks along the x axis at these x (objects lost), with their legend entry.
    pub ticks: Vec<f64>,
    pub ticks_label: String,
    /// The legend entry for the series' partial points, shown when some series has any.
    pub partial_label: String,
}

/// The CDF of a strategy's delivery latencies over every delivery that was `due`: (value in ms, fraction of
/// the due deliveries done within it). A lost delivery never arrives, so the curve tops out at the fraction
/// delivered, not at 1: a strategy that lost objects cannot look as good as one that lost none.
pub fn cdf(histogram: &Histogram, due: u64) -> Vec<(f64, f64)> {
    let total = due.max(histogram.total()) as f64;
    let mut seen = 0;
    histogram
        .buckets()
        .map(|(low, count)| {
            seen += count;
            (low as f64 / 1000.0, seen as f64 / total)
        })
        .collect()
}

/// The plots of a run, as (file name, SVG): `latency-cdf.svg`, and `fault-N.svg` for the first faults.
pub fn plots(name: &str, outcome: &Outcome, fault_names: &[String]) -> Vec<(String, String)> {
    let all = merged(outcome, false);
    let series = STRATEGIES
        .iter()
        .zip(&all)
        .filter(|(_, tally)| tally.latency.total() > 0)
        .map(|(strategy, tally)| Series {
            name: legend_entry(*strategy, tally.latency.total(), tally.due, all[0].due),
            points: cdf(&tally.latency, tally.due),
            partial: Vec::new(),
        })
        .collect();
    let mut files = vec![(
        "latency-cdf.svg".to_owned(),
        render(&Chart {
            title: format!("{}: delivery latency, every object at every edge", short_name(name)),
            x_label: "latency (ms, log scale)".into(),
            y_label: "fraction of due deliveries done within".into(),
            x_log: true,
            series,
            markers: Vec::new(),
            ticks: Vec::new(),
            ticks_label: String::new(),
            partial_label: String::new(),
        }),
    )];
    for timeline in &outcome.timelines {
        let fault = &outcome.faults[timeline.fault];
        let label = fault_names.get(timeline.fault).cloned().unwrap_or_default();
        files.push((
            format!("fault-{}.svg", timeline.fault + 1),
            render(&fault_chart(name, timeline, fault.at, fault.lost, &label)),
        ));
    }
    files
}

/// A strategy's legend entry in the CDF: its name, the share of its due deliveries that arrived (its curve's
/// top) and, when it was due fewer deliveries than the overlay (`direct` in a partial mesh: only edges with a
/// link from their origin), what share of the overlay's it covers, so that its curve is not read as the
/// same population's.
fn legend_entry(strategy: Strategy, delivered: u64, due: u64, overlay_due: u64) -> String {
    let share = 100.0 * delivered as f64 / due.max(1) as f64;
    let mut entry = format!("{}\n{share:.1} % delivered", strategy.as_str());
    if strategy == Strategy::Direct && due < overlay_due {
        let covers = 100.0 * due as f64 / overlay_due.max(1) as f64;
        let _ = write!(entry, "\ncovers {covers:.1} % of the due:\nedges linked to the origin");
    }
    entry
}

/// `name`, its middle elided if it is longer than [`MAX_NAME_CHARS`].
fn short_name(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    if chars.len() <= MAX_NAME_CHARS {
        return name.to_owned();
    }
    let keep = (MAX_NAME_CHARS - 1) / 2;
    let head: String = chars[..keep].iter().collect();
    let tail: String = chars[chars.len() - keep..].iter().collect();
    format!("{head}…{tail}")
}

/// The plot around one fault: `window_lost` is the table's count for the fault (objects lost between it and
/// the next fault), which the plotted 25 s need not all show.
fn fault_chart(name: &str, timeline: &Timeline, at: u64, window_lost: u64, label: &str) -> Chart {
    let seconds = |bucket: usize| (timeline.start + bucket as u64 * timeline.bucket) as f64 / 1e6;
    // A quarter second in which some edges got nothing (cut off, or their objects lost) has a worst latency
    // over the others only, which can fall as edges are cut off and read as an improvement: it is drawn as a
    // hollow point off the line, and the line breaks there.
    let series = STRATEGIES
        .iter()
        .enumerate()
        .filter(|&(k, _)| timeline.worst.iter().any(|w| w[k].is_some()) || timeline.lost.iter().any(|l| l[k] > 0))
        .map(|(k, strategy)| {
            let mut series = Series { name: strategy.as_str().to_owned(), points: Vec::new(), partial: Vec::new() };
            for (b, (worst, lost)) in timeline.worst.iter().zip(&timeline.lost).enumerate() {
                let ms = worst[k].map_or(f64::NAN, |us| us as f64 / 1000.0);
                if lost[k] == 0 {
                    series.points.push((seconds(b), ms));
                } else {
                    series.points.push((seconds(b), f64::NAN));
                    if ms.is_finite() {
                        series.partial.push((seconds(b), ms));
                    }
                }
            }
            series
        })
        .collect();
    let shown: u64 = timeline.lost.iter().map(|l| l[0]).sum();
    let end = timeline.start + timeline.bucket * timeline.worst.len() as u64;
    let (before, after) = ((at - timeline.start) as f64 / 1e6, end.saturating_sub(at) as f64 / 1e6);
    Chart {
        title: format!(
            "{}: worst delivery latency around {label}\noverlay: {window_lost} lost until the next fault (the table's \
             figure), {shown} of them among the objects emitted from {before} s before to {after} s after",
            short_name(name)
        ),
        x_label: "objects emitted at (simulated s); gaps are objects lost".into(),
        y_label: "worst latency (ms)".into(),
        x_log: false,
        series,
        markers: vec![(at as f64 / 1e6, label.to_owned())],
        ticks: timeline.lost.iter().enumerate().filter(|(_, l)| l[0] > 0).map(|(b, _)| seconds(b)).collect(),
        ticks_label: "overlay lost".into(),
        partial_label: "some edges got\nnothing: worst\nof the others".into(),
    }
}

/// Renders `chart` as an SVG document.
pub fn render(chart: &Chart) -> String {
    let finite = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!chart.x_log || x > 0.0);
    // Each series' runs of drawable points, one polyline each.
    let points: Vec<Vec<Vec<(f64, f64)>>> = chart
        .series
        .iter()
        .map(|s| s.points.split(|p| !finite(p)).filter(|run| !run.is_empty()).map(|run| thin(run.to_vec())).collect())
        .collect();
    let partial: Vec<Vec<(f64, f64)>> =
        chart.series.iter().map(|s| s.partial.iter().copied().filter(finite).collect()).collect();
    let all = || points.iter().flatten().flatten().chain(partial.iter().flatten());
    let tx = |x: f64| if chart.x_log { x.log10() } else { x };
    let (mut x0, mut x1) = all().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(tx(p.0)), b.max(tx(p.0))));
    for (x, _) in &chart.markers {
        if x.is_finite() && (!chart.x_log || *x > 0.0) {
            (x0, x1) = (x0.min(tx(*x)), x1.max(tx(*x)));
        }
    }
    let y1 = all().fold(0.0f64, |m, p| m.max(p.1));
    if !x0.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 - x0 < 1e-9 {
        (x0, x1) = (x0 - 0.5, x1 + 0.5);
    }
    let (x_ticks, y_ticks) = (ticks(x0, x1, chart.x_log), ticks(0.0, if y1 > 0.0 { y1 } else { 1.0 }, false));
    let (x0, x1) = (x0.min(x_ticks[0].0), x1.max(x_ticks[x_ticks.len() - 1].0));
    let y1 = y_ticks[y_ticks.len() - 1].0;
    // The title, wrapped to the canvas: its first line in bold, further lines in small type under it.
    let title = wrap_title(&chart.title);
    let top = TOP + TITLE_LINE * (title.len() - 1) as f64;
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - top - BOTTOM);
    let sx = |x: f64| LEFT + (tx(x) - x0) / (x1 - x0) * plot_w;
    let sx_t = |t: f64| LEFT + (t - x0) / (x1 - x0) * plot_w;
    let sy = |y: f64| top + plot_h - y / y1 * plot_h;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#);
    let (first, rest) = text_lines(&title.join("\n"), LEFT, TITLE_LINE);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="18" font-size="14"><tspan font-weight="bold">{first}</tspan>{rest}</text>"#
    );
    for &(t, ref label) in &x_ticks {
        let x = sx_t(t);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#e4e4e4"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            top + plot_h,
            top + plot_h + 16.0
        );
    }
    for &(t, ref label) in &y_ticks {
        let y = sy(t);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{top}" width="{plot_w:.1}" height="{plot_h:.1}" fill="none" stroke="#444"/>"##
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 14.0,
        escape(&chart.x_label)
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        top + plot_h / 2.0,
        escape(&chart.y_label)
    );
    for (x, label) in &chart.markers {
        if !(x.is_finite() && (!chart.x_log || *x > 0.0)) {
            continue;
        }
        let x = sx(*x);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#222" stroke-dasharray="5 4"/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"##,
            top + plot_h,
            x + 4.0,
            top + 14.0,
            escape(label)
        );
    }
    // Legend entries, one under the other: a series' name, and its further lines (`\n`) in small type.
    let mut legend_y = Vec::new();
    let mut y = top + 10.0;
    for series in &chart.series {
        legend_y.push(y);
        y += 20.0 + 13.0 * series.name.lines().count().saturating_sub(1) as f64;
    }
    let below_series = y;
    // The first series (the overlay) is drawn last, on top.
    for (i, (series, points)) in chart.series.iter().zip(&points).enumerate().rev() {
        let colour = COLOURS[i % COLOURS.len()];
        for run in points {
            let path: Vec<String> = run.iter().map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect();
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{}"/>"#,
                path.join(" ")
            );
        }
        for &(x, y) in &partial[i] {
            let _ = writeln!(
                svg,
                r#"<circle class="partial" cx="{:.1}" cy="{:.1}" r="3.5" fill="white" stroke="{colour}" stroke-width="1.5"/>"#,
                sx(x),
                sy(y)
            );
        }
        let y = legend_y[i];
        let (first, rest) = text_lines(&series.name, WIDTH - RIGHT + 44.0, 13.0);
        let _ = writeln!(
            svg,
            r#"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{first}{rest}</text>"#,
            WIDTH - RIGHT + 14.0,
            WIDTH - RIGHT + 38.0,
            WIDTH - RIGHT + 44.0,
            y + 4.0,
        );
    }
    let lost: Vec<f64> = chart.ticks.iter().copied().filter(|x| x.is_finite() && (!chart.x_log || *x > 0.0)).collect();
    for x in &lost {
        let x = sx(*x);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#CC0000" stroke-width="2"/>"##,
            top + plot_h - 12.0,
            top + plot_h
        );
    }
    let mut y = below_series;
    if partial.iter().any(|p| !p.is_empty()) {
        let (first, rest) = text_lines(&chart.partial_label, WIDTH - RIGHT + 44.0, 13.0);
        let _ = writeln!(
            svg,
            r##"<circle cx="{:.1}" cy="{y:.1}" r="3.5" fill="white" stroke="#444" stroke-width="1.5"/><text x="{:.1}" y="{:.1}">{first}{rest}</text>"##,
            WIDTH - RIGHT + 26.0,
            WIDTH - RIGHT + 44.0,
            y + 4.0,
        );
        y += 20.0 + 13.0 * chart.partial_label.lines().count().saturating_sub(1) as f64;
    }
    if !lost.is_empty() {
        let _ = writeln!(
            svg,
            r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#CC0000" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"##,
            WIDTH - RIGHT + 26.0,
            y - 6.0,
            WIDTH - RIGHT + 26.0,
            y + 6.0,
            WIDTH - RIGHT + 44.0,
            y + 4.0,
            escape(&chart.ticks_label)
        );
    }
    if points.iter().all(Vec::is_empty) && partial.iter().all(Vec::is_empty) {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#666">no data</text>"##,
            LEFT + plot_w / 2.0,
            top + plot_h / 2.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Keeps at most `MAX_POINTS` points, evenly spaced, always the first and the last.
fn thin(points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    if points.len() <= MAX_POINTS {
        return points;
    }
    let step = (points.len() - 1) as f64 / (MAX_POINTS - 1) as f64;
    (0..MAX_POINTS).map(|i| points[((i as f64 * step).round() as usize).min(points.len() - 1)]).collect()
}

/// Tick positions (in axis units: log10 for a log axis) and labels covering `lo..=hi`: 1-2-5 steps, or
/// decades on a log axis.
fn ticks(lo: f64, hi: f64, log: bool) -> Vec<(f64, String)> {
    if log {
        let (first, last) = (lo.floor() as i32, hi.ceil() as i32);
        return (first..=last.max(first + 1)).map(|e| (f64::from(e), label(10f64.powi(e)))).collect();
    }
    let raw = (hi - lo) / 6.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude);
    let start = (lo / step).floor() as i64;
    let end = (hi / step).ceil() as i64;
    (start..=end.max(start + 1)).map(|i| (i as f64 * step, label(i as f64 * step))).collect()
}

fn label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1.0 && v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        let text = format!("{v:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// A title's lines, each wrapped at spaces (or, for a word too long for a line, inside it) so that it fits
/// between the left margin and the canvas's right edge: the first line at the title's size, the others at
/// the small type's.
fn wrap_title(title: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, line) in title.lines().enumerate() {
        let size = if i == 0 && out.is_empty() { 14.0 } else { 11.0 };
        let max = ((WIDTH - LEFT - 10.0) / (CHAR_WIDTH * size)) as usize;
        let mut current = String::new();
        for word in line.split(' ') {
            let mut word: Vec<char> = word.chars().collect();
            let used = current.chars().count();
            if used > 0 && used + 1 + word.len() > max {
                out.push(std::mem::take(&mut current));
            }
            // A word longer than a line is cut into lines.
            while word.len() > max {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
                out.push(word.drain(..max).collect());
            }
            if !current.is_empty() {
                current.push(' ');
            }
            current.extend(word);
        }
        out.push(current);
    }
    if out.is_empty() {
        out.push(String::new());
    }
    out
}

/// A text of several lines (`\n`) for one SVG `<text>`: its first line, escaped, and the others as small-type
/// `<tspan>`s, each at `x` and `dy` below the one before.
fn text_lines(text: &str, x: f64, dy: f64) -> (String, String) {
    let mut lines = text.lines();
    let first = escape(lines.next().unwrap_or_default());
    let mut rest = String::new();
    for line in lines {
        let _ = write!(rest, r#"<tspan x="{x:.1}" dy="{dy}" font-size="11">{}</tspan>"#, escape(line));
    }
    (first, rest)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(series: Vec<Series>, x_log: bool) -> Chart {
        Chart {
            title: "t <&> \"q\"".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            x_log,
            series,
            markers: vec![(2.0, "cut a<b".into())],
            ticks: vec![3.0],
            ticks_label: "lost".into(),
            partial_label: "partial".into(),
        }
    }

    fn series(name: &str, points: Vec<(f64, f64)>) -> Series {
        Series { name: name.into(), points, partial: Vec::new() }
    }

    /// Every number in a `points="..."` list and every x/y attribute lies in the canvas.
    fn inside(svg: &str) -> bool {
        let numbers =
            svg.split(['"', ' ', ',']).filter_map(|t| t.parse::<f64>().ok()).filter(|v| v.fract() != 0.0 || *v > 1.0);
        numbers.into_iter().all(|v| (-1.0..=WIDTH + 1.0).contains(&v) || v.is_nan())
    }

    #[test]
    fn renders_escaped_deterministic_svg_inside_its_canvas() {
        let series = vec![
            series("overlay", (1..100).map(|i| (i as f64, i as f64 / 100.0)).collect()),
            series("direct <x>", vec![(3.0, 0.5), (f64::NAN, 1.0), (40.0, 1.0)]),
        ];
        let svg = render(&chart(series.clone(), false));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(
            svg.contains("overlay")
                && svg.contains("direct &lt;x&gt;")
                && svg.contains("t &lt;&amp;&gt; &quot;q&quot;")
        );
        assert!(svg.contains("cut a&lt;b"));
        assert!(!svg.contains("NaN") && inside(&svg), "{svg}");
        assert_eq!(svg, render(&chart(series, false)));
    }

    #[test]
    fn empty_single_point_and_log_axes_with_zeros_do_not_break() {
        for x_log in [false, true] {
            let empty = render(&chart(Vec::new(), x_log));
            assert!(empty.contains("no data"));
            let one = render(&chart(vec![series("s", vec![(0.0, 0.0), (5.0, 1.0)])], x_log));
            assert!(!one.contains("NaN") && !one.contains("inf") && inside(&one), "{one}");
        }
    }

    #[test]
    fn long_series_are_thinned_keeping_ends_and_order() {
        let points: Vec<(f64, f64)> = (0..100_000).map(|i| (i as f64, i as f64)).collect();
        let thinned = thin(points);
        assert_eq!(thinned.len(), MAX_POINTS);
        assert_eq!((thinned[0], thinned[MAX_POINTS - 1]), ((0.0, 0.0), (99_999.0, 99_999.0)));
        assert!(thinned.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let t = ticks(0.0, 347.0, false);
        assert_eq!(t.iter().map(|x| x.1.as_str()).collect::<Vec<_>>(), ["0", "100", "200", "300", "400"]);
        let t = ticks(0.3f64.log10(), 2_000f64.log10(), true);
        assert_eq!(t.iter().map(|x| x.1.as_str()).collect::<Vec<_>>(), ["0.1", "1", "10", "100", "1000", "10000"]);
    }

    #[test]
    fn a_cdf_tops_out_at_the_delivered_fraction() {
        let mut h = Histogram::default();
        for v in [1_000, 2_000, 2_000, 50_000] {
            h.add(v);
        }
        // Bucket lower bounds: 50 ms falls in the bucket that starts at 49.92 ms.
        assert_eq!(cdf(&h, 4), [(1.0, 0.25), (2.0, 0.75), (49.92, 1.0)]);
        // Four delivered of five due: the fifth was lost and never arrives.
        assert_eq!(cdf(&h, 5), [(1.0, 0.2), (2.0, 0.6), (49.92, 0.8)]);
    }

    /// The estimated width of each line of a rendered title, in pixels, with its x.
    fn title_widths(svg: &str) -> Vec<f64> {
        let title = svg.lines().find(|l| l.contains("font-weight=\"bold\"")).expect("a title");
        let mut widths = Vec::new();
        let first = title.split("<tspan font-weight=\"bold\">").nth(1).unwrap().split("</tspan>").next().unwrap();
        widths.push(LEFT + first.chars().count() as f64 * CHAR_WIDTH * 14.0);
        for rest in title.split("font-size=\"11\">").skip(1) {
            let line = rest.split("</tspan>").next().unwrap();
            widths.push(LEFT + line.chars().count() as f64 * CHAR_WIDTH * 11.0);
        }
        widths
    }

    #[test]
    fn a_long_title_wraps_inside_the_canvas_and_keeps_the_lost_count() {
        let name = "a-scenario-whose-name-goes-on-and-on-".repeat(6);
        let timeline = Timeline {
            fault: 0,
            start: 5_000_000,
            bucket: 250_000,
            worst: vec![[Some(40_000), None, None]; 100],
            lost: vec![[0, 0, 0]; 100],
        };
        let label = "link_down some-long-node-name-in-a-region-0-some-other-long-node-name-1";
        let svg = render(&fault_chart(&name, &timeline, 10_000_000, 5_784, label));
        let widths = title_widths(&svg);
        assert!(widths.len() >= 3, "{widths:?}");
        assert!(widths.iter().all(|&w| w <= WIDTH), "a title line runs past the canvas: {widths:?}\n{svg}");
        assert!(svg.contains("5784 lost until the next fault (the table"), "{svg}");
        // The plot moves down under a taller title instead of under it.
        let plot = svg.lines().find(|l| l.starts_with("<rect x=")).unwrap();
        assert!(plot.contains(&format!("y=\"{}\"", TOP + TITLE_LINE * (widths.len() - 1) as f64)), "{plot}");
        let short = short_name(&name);
        assert!(short.chars().count() <= MAX_NAME_CHARS && short.contains('…') && svg.contains(&short), "{short}");
        assert!(wrap_title("").len() == 1 && wrap_title("short") == ["short"]);
    }

    #[test]
    fn quarter_seconds_with_edges_cut_off_are_hollow_points_off_the_line() {
        // The worst latency is 40 ms, and falls to 10 ms while some edges get nothing (buckets 4-7).
        let worst: Vec<[Option<u64>; 3]> =
            (0..12).map(|b| [Some(if (4..8).contains(&b) { 10_000 } else { 40_000 }), Some(40_000), None]).collect();
        let lost: Vec<[u64; 3]> = (0..12).map(|b| [u64::from((4..8).contains(&b)), 0, 0]).collect();
        let timeline = Timeline { fault: 0, start: 5_000_000, bucket: 250_000, worst, lost };
        let chart = fault_chart("s", &timeline, 6_000_000, 4, "link_down a-b");
        let overlay = &chart.series[0];
        assert_eq!(overlay.partial.len(), 4);
        assert!(overlay.partial.iter().all(|&(_, ms)| ms == 10.0));
        assert!(overlay.points.iter().all(|&(_, ms)| ms == 40.0 || ms.is_nan()), "{overlay:?}");
        let svg = render(&chart);
        assert_eq!(svg.matches("class=\"partial\"").count(), 4, "{svg}");
        assert!(svg.contains("some edges got"), "{svg}");
        // The overlay's line breaks around them: two runs, and the static tree's one.
        assert_eq!(svg.matches("<polyline").count(), 3, "{svg}");
        // No polyline point sits at the 10 ms height of the partial points.
        let circle = svg.lines().find(|l| l.contains("class=\"partial\"")).unwrap();
        let cy = circle.split("cy=\"").nth(1).unwrap().split('"').next().unwrap();
        assert!(svg.lines().filter(|l| l.starts_with("<polyline")).all(|l| !l.contains(&format!(",{cy}"))), "{svg}");
    }

    #[test]
    fn direct_says_what_it_covers_when_it_covers_less() {
        assert_eq!(legend_entry(Strategy::Overlay, 90, 100, 100), "overlay\n90.0 % delivered");
        assert_eq!(legend_entry(Strategy::Direct, 50, 50, 50), "direct\n100.0 % delivered");
        assert_eq!(
            legend_entry(Strategy::Direct, 40, 50, 200),
            "direct\n80.0 % delivered\ncovers 25.0 % of the due:\nedges linked to the origin"
        );
    }
}
