//! SVG figures with plotters' SVG backend (no fonts are loaded: text is
//! left to the SVG viewer). Two shapes cover every figure of the report:
//! lines (median over trials, with a spread bar per point from the smallest
//! to the largest trial, or a shaded band between two other values, such as
//! the fastest and slowest request around the p50), and bars on a log scale
//! with optional spread. The legend sits in a strip right of the plot, so it
//! never covers data. Every figure carries a caption naming the machine, the
//! model, the commit and the number of trials.

use std::path::Path;

use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::prelude::*;

/// One point: x, the median, and the spread (lowest and highest trial).
#[derive(Debug, Clone, Copy)]
pub struct Pt {
    pub x: f64,
    pub y: f64,
    pub lo: f64,
    pub hi: f64,
}

pub struct Series {
    pub name: String,
    pub color: usize,
    pub look: Look,
    pub points: Vec<Pt>,
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Look {
    /// A thick line, filled markers, a bar from `lo` to `hi` at each point.
    Solid,
    /// Thinner, hollow markers: a second family beside the solid one.
    Light,
    /// A thick line through `y`, and a shaded band from `lo` to `hi` along it.
    Band,
}

impl Look {
    fn line(self, c: RGBColor) -> ShapeStyle {
        c.stroke_width(if self == Look::Light { 1 } else { 2 })
    }

    fn marker(self, c: RGBColor) -> ShapeStyle {
        if self == Look::Light {
            c.stroke_width(1)
        } else {
            c.filled()
        }
    }
}

pub struct Axes<'a> {
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    pub log_x: bool,
    pub log_y: bool,
    /// x counts things (client threads): integer ticks only.
    pub int_x: bool,
}

/// Width of the legend strip right of a line chart, pixels.
const LEGEND_W: u32 = 250;

pub const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

type Res = Result<(), String>;

fn err<E: std::fmt::Display>(e: E) -> String {
    format!("plot: {e}")
}

fn header<DB: DrawingBackend>(root: &DrawingArea<DB, plotters::coord::Shift>, title: &str, caption: &str) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    root.draw_text(title, &("sans-serif", 20).into_font().color(&BLACK), (12, 8)).map_err(err)?;
    for (i, line) in caption.lines().enumerate() {
        root.draw_text(line, &("sans-serif", 12).into_font().color(&RGBColor(80, 80, 80)), (12, 34 + 15 * i as i32))
            .map_err(err)?;
    }
    Ok(())
}

fn bounds(series: &[Series], log_x: bool, log_y: bool) -> ((f64, f64), (f64, f64)) {
    let pts = series.iter().flat_map(|s| s.points.iter()).filter(|p| p.y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for p in pts {
        x0 = x0.min(p.x);
        x1 = x1.max(p.x);
        y0 = y0.min(p.lo.min(p.y));
        y1 = y1.max(p.hi.max(p.y));
    }
    if !x0.is_finite() {
        return ((0.0, 1.0), (0.0, 1.0));
    }
    let (x0, x1) = if log_x { (x0 / 1.5, x1 * 1.5) } else { (x0.min(0.0), x1 + (x1 - x0).max(1.0) * 0.04) };
    let (y0, y1) = if log_y { ((y0 / 1.6).max(1e-9), y1 * 1.6) } else { (0.0, y1 * 1.12 + 1e-9) };
    ((x0, x1), (y0, y1))
}

/// A line chart with spread bars or bands, median points, and the legend beside it.
pub fn lines(path: &Path, title: &str, caption: &str, axes: &Axes<'_>, series: &[Series]) -> Res {
    let ((x0, x1), (y0, y1)) = bounds(series, axes.log_x, axes.log_y);
    let root = SVGBackend::new(path, (960 + LEGEND_W, 600)).into_drawing_area();
    let top = 30 + 15 * caption.lines().count() as u32 + 6;
    header(&root, title, caption)?;
    let (_, below) = root.split_vertically(top);
    let (area, legend_area) = below.split_horizontally(960);
    legend(&legend_area, series)?;
    match (axes.log_x, axes.log_y) {
        (false, false) => draw_lines(&area, x0..x1, y0..y1, axes, series),
        (false, true) => draw_lines(&area, x0..x1, (y0..y1).log_scale(), axes, series),
        (true, false) => draw_lines(&area, (x0..x1).log_scale(), y0..y1, axes, series),
        (true, true) => draw_lines(&area, (x0..x1).log_scale(), (y0..y1).log_scale(), axes, series),
    }?;
    root.present().map_err(err)
}

fn draw_lines<DB, XR, YR>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    xr: XR,
    yr: YR,
    axes: &Axes<'_>,
    series: &[Series],
) -> Res
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    XR: AsRangedCoord<Value = f64>,
    YR: AsRangedCoord<Value = f64>,
    XR::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
    YR::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(xr, yr)
        .map_err(err)?;
    let int_x = axes.int_x;
    let x_fmt = move |v: &f64| {
        if !int_x {
            sig(*v)
        } else if (v - v.round()).abs() < 1e-9 && *v >= 0.0 {
            format!("{v:.0}")
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .x_desc(axes.x_desc)
        .y_desc(axes.y_desc)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&|v: &f64| sig(*v))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err)?;
    for s in series {
        let c = COLORS[s.color % COLORS.len()];
        let pts: Vec<Pt> = s.points.iter().copied().filter(|p| p.y.is_finite() && (!axes.log_y || p.y > 0.0)).collect();
        if s.look == Look::Band {
            // Along the lower edge, then back along the upper one.
            let spread: Vec<&Pt> = pts.iter().filter(|p| p.lo.is_finite() && p.hi.is_finite() && (!axes.log_y || p.lo > 0.0)).collect();
            let edge: Vec<(f64, f64)> = spread.iter().map(|p| (p.x, p.lo)).chain(spread.iter().rev().map(|p| (p.x, p.hi))).collect();
            if edge.len() >= 4 {
                chart.draw_series(std::iter::once(Polygon::new(edge, c.mix(0.15).filled()))).map_err(err)?;
            }
        } else {
            chart
                .draw_series(pts.iter().filter(|p| p.hi > p.lo).map(|p| PathElement::new(vec![(p.x, p.lo), (p.x, p.hi)], c.stroke_width(1))))
                .map_err(err)?;
        }
        chart.draw_series(LineSeries::new(pts.iter().map(|p| (p.x, p.y)), s.look.line(c))).map_err(err)?;
        chart.draw_series(pts.iter().map(|p| Circle::new((p.x, p.y), 3, s.look.marker(c)))).map_err(err)?;
    }
    Ok(())
}

/// The legend, one row per series, in its own strip: a line (and the band's shade) and the name.
fn legend<DB: DrawingBackend>(area: &DrawingArea<DB, plotters::coord::Shift>, series: &[Series]) -> Res
where
    DB::ErrorType: 'static,
{
    let font = ("sans-serif", 13).into_font().color(&BLACK);
    for (i, s) in series.iter().enumerate() {
        let c = COLORS[s.color % COLORS.len()];
        let y = 30 + 22 * i as i32;
        if s.look == Look::Band {
            area.draw(&Rectangle::new([(6, y - 7), (32, y + 7)], c.mix(0.15).filled())).map_err(err)?;
        }
        area.draw(&PathElement::new(vec![(6, y), (32, y)], s.look.line(c))).map_err(err)?;
        area.draw(&Circle::new((19, y), 3, s.look.marker(c))).map_err(err)?;
        area.draw(&Text::new(s.name.clone(), (40, y - 7), font.clone())).map_err(err)?;
    }
    Ok(())
}

/// One bar: a category label, its value, the spread, and its colour.
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
    pub color: usize,
}

/// A bar chart on a log scale (start times and memory span orders of
/// magnitude), each bar labelled with its value.
pub fn bars(path: &Path, title: &str, caption: &str, y_desc: &str, unit: &str, bars: &[Bar]) -> Res {
    let root = SVGBackend::new(path, (960, 560)).into_drawing_area();
    let top = 30 + 15 * caption.lines().count() as u32 + 6;
    header(&root, title, caption)?;
    let (_, area) = root.split_vertically(top);
    let vals = bars.iter().filter(|b| b.value > 0.0);
    let low = |b: &Bar| if b.lo > 0.0 { b.lo.min(b.value) } else { b.value };
    let y0 = vals.clone().map(low).fold(f64::INFINITY, f64::min).max(1e-6) / 3.0;
    let y1 = vals.map(|b| b.hi.max(b.value)).fold(0.0, f64::max).max(y0 * 10.0) * 3.0;
    let n = bars.len().max(1) as i32;
    let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
    let mut chart = ChartBuilder::on(&area)
        .margin(14)
        .x_label_area_size(70)
        .y_label_area_size(72)
        .build_cartesian_2d((0..n).into_segmented(), (y0..y1).log_scale())
        .map_err(err)?;
    let fmt = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len() + 1)
        .x_label_formatter(&fmt)
        .x_label_style(("sans-serif", 12))
        .y_desc(y_desc)
        .y_label_formatter(&|v: &f64| sig(*v))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err)?;
    for (i, b) in bars.iter().enumerate() {
        if b.value <= 0.0 || !b.value.is_finite() {
            continue;
        }
        let c = COLORS[b.color % COLORS.len()];
        let i = i as i32;
        let mut rect = Rectangle::new([(SegmentValue::Exact(i), y0), (SegmentValue::Exact(i + 1), b.value)], c.mix(0.8).filled());
        rect.set_margin(0, 0, 10, 10);
        chart.draw_series(std::iter::once(rect)).map_err(err)?;
        if b.hi > b.lo {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(SegmentValue::CenterOf(i), b.lo), (SegmentValue::CenterOf(i), b.hi)],
                    BLACK.stroke_width(2),
                )))
                .map_err(err)?;
        }
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{} {unit}", sig(b.value)),
                (SegmentValue::Exact(i), b.hi.max(b.value) * 1.15),
                ("sans-serif", 12).into_font(),
            )))
            .map_err(err)?;
    }
    root.present().map_err(err)
}

/// Three significant figures, without exponent for everyday magnitudes.
pub fn sig(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1e6 || (a > 0.0 && a < 1e-3) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}
