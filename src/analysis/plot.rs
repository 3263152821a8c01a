//! Charts drawn with `plotters` as SVG, and rasterised to PNG (at
//! [`PNG_SCALE`]× for print) with `resvg` using an embedded DejaVu Sans (so
//! PNGs look the same on every machine, with no system fonts needed). One
//! chart type, [`LinePlot`], serves both the intervention sweep (accuracy
//! against replacement ratio with error bars, paper Fig. 1c) and the metric
//! histograms (filled, on a log density axis, with marker lines and a shaded
//! noise band, Fig. 1b); [`Figure`] puts several in a grid. The legend sits
//! in its own strip right of the plotting area, so it never covers data,
//! and a caption under the chart says what made it.

use std::path::Path;

#[cfg(feature = "plots")]
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
#[cfg(feature = "plots")]
use plotters::prelude::*;
#[cfg(feature = "plots")]
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Whether this build draws charts (the `plots` feature). Without it the
/// chart data still exists (and JSON/CSV outputs carry it); drawing is an
/// error naming the feature.
pub const ENABLED: bool = cfg!(feature = "plots");

/// DejaVu Sans (Bitstream Vera license, assets/fonts/DejaVu-LICENSE.txt).
#[cfg(feature = "plots")]
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Style {
    /// A line with a marker at each point (sweeps).
    #[default]
    Markers,
    /// A line only.
    Line,
    /// A histogram: `points` is the step outline (each bin's value across
    /// its width), drawn as a translucent filled area under a solid outline;
    /// empty bins drop to the bottom of the axis, so there are no floating
    /// steps.
    Filled,
}

/// One data series of a chart.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// The legend entry (put the sample size here: `base-generated (n = 812)`).
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub style: Style,
    /// Vertical error bars: `(low, high)` for each point, or empty for none.
    pub errors: Vec<(f64, f64)>,
}

/// A horizontal reference line (e.g. the base model's accuracy), dashed.
#[derive(Debug, Clone, PartialEq)]
pub struct RefLine {
    pub name: String,
    pub y: f64,
}

/// A vertical marker line (0, a threshold τ).
#[derive(Debug, Clone, PartialEq)]
pub struct VLine {
    pub name: String,
    pub x: f64,
    /// Dashed (a threshold) or solid (zero).
    pub dashed: bool,
}

/// A shaded vertical band `[low, high]` across the whole height (a noise
/// floor). Bands listed later are drawn over earlier ones.
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    pub name: String,
    pub low: f64,
    pub high: f64,
}

/// A chart: series, reference lines and bands, a legend beside the plotting
/// area (never over the data), and a caption line under it (provenance).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LinePlot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub references: Vec<RefLine>,
    pub vlines: Vec<VLine>,
    pub bands: Vec<Band>,
    /// Logarithmic y axis (non-positive values are left out).
    pub log_y: bool,
    /// Small text under the chart (what made it); wrapped to the width.
    pub caption: String,
}

/// Several charts in a grid under one title, with one caption.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Figure {
    pub title: String,
    pub panels: Vec<LinePlot>,
    pub columns: usize,
    pub caption: String,
}

/// Why a plot could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("{path}: unknown plot format (use .svg or .png)")]
    Format { path: String },
    #[error("nothing to plot: every series is empty")]
    Empty,
    #[error("drawing failed: {0}")]
    Draw(String),
    #[error("this dlogp was built without charts\nhint: build with the default features (the `plots` feature) to draw them")]
    Disabled,
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

#[cfg(feature = "plots")]
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];
#[cfg(feature = "plots")]
const GREYS: [RGBColor; 3] = [
    RGBColor(60, 60, 60),
    RGBColor(130, 130, 130),
    RGBColor(180, 180, 180),
];
/// Marker lines (0, τ): near-black, and only theirs, so a test can find them.
#[cfg(feature = "plots")]
pub(crate) const MARK: RGBColor = RGBColor(20, 20, 20);
/// The colour of bands (their opacity grows inwards).
#[cfg(feature = "plots")]
pub(crate) const BAND: RGBColor = RGBColor(120, 120, 120);
/// A single chart: plotting area plus the legend strip.
#[cfg(feature = "plots")]
const SIZE: (u32, u32) = (1000, 540);
/// One panel of a [`Figure`].
#[cfg(feature = "plots")]
const PANEL: (u32, u32) = (800, 420);
#[cfg(feature = "plots")]
const LEGEND_W: u32 = 250;
#[cfg(feature = "plots")]
const CAPTION_LINE: u32 = 17;
#[cfg(feature = "plots")]
const TITLE_H: u32 = 40;
/// PNGs are rendered at this multiple of the SVG's size (print resolution).
pub const PNG_SCALE: f32 = 2.0;

/// `(low, high)` of an axis.
#[cfg(feature = "plots")]
type Span = (f64, f64);

#[cfg(feature = "plots")]
type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

#[cfg(feature = "plots")]
fn draw_err(e: &dyn std::fmt::Display) -> PlotError {
    PlotError::Draw(e.to_string())
}

/// `text` cut at spaces into lines of at most `chars` characters.
pub fn wrap(text: &str, chars: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for para in text.lines() {
        let mut line = String::new();
        for word in para.split_whitespace() {
            if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > chars {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        if !line.is_empty() {
            lines.push(line);
        }
    }
    lines
}

/// What a legend entry shows before its text.
#[cfg(feature = "plots")]
#[derive(Clone, Copy)]
enum Key {
    Fill(RGBColor),
    Line(RGBColor),
    Marker(RGBColor, bool),
    Dashed(RGBColor),
    Solid(RGBColor),
    Band(f64),
}

#[cfg(feature = "plots")]
fn band_alpha(i: usize, n: usize) -> f64 {
    // outer bands lighter; the innermost darkest
    0.14 + 0.12 * (i as f64) / (n.max(2) - 1) as f64
}

#[cfg(feature = "plots")]
impl LinePlot {
    fn drawable(&self, (x, y): (f64, f64)) -> bool {
        x.is_finite() && y.is_finite() && (!self.log_y || y > 0.0)
    }

    fn points(&self, s: &Series) -> Vec<(f64, f64)> {
        s.points
            .iter()
            .copied()
            .filter(|&p| self.drawable(p))
            .collect()
    }

    /// The series' drawable stretches: a point that cannot be drawn (not
    /// finite, or not positive on a log axis) breaks the line.
    fn runs(&self, s: &Series) -> Vec<Vec<(f64, f64)>> {
        let mut runs = vec![Vec::new()];
        for &p in &s.points {
            if self.drawable(p) {
                runs.last_mut().expect("non-empty").push(p);
            } else if !runs.last().expect("non-empty").is_empty() {
                runs.push(Vec::new());
            }
        }
        runs.retain(|r| !r.is_empty());
        runs
    }

    /// `(x range, y range)`, padded.
    fn ranges(&self) -> Result<(Span, Span), PlotError> {
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for s in &self.series {
            for (x, y) in self.points(s) {
                x0 = x0.min(x);
                x1 = x1.max(x);
                y0 = y0.min(y);
                y1 = y1.max(y);
            }
            if s.style == Style::Filled {
                // empty bins still span the axis
                for &(x, _) in s.points.iter().filter(|p| p.0.is_finite()) {
                    x0 = x0.min(x);
                    x1 = x1.max(x);
                }
            }
            for &(lo, hi) in &s.errors {
                for v in [lo, hi] {
                    if v.is_finite() && (!self.log_y || v > 0.0) {
                        y0 = y0.min(v);
                        y1 = y1.max(v);
                    }
                }
            }
        }
        if x0 > x1 {
            return Err(PlotError::Empty);
        }
        for r in &self.references {
            if r.y.is_finite() && (!self.log_y || r.y > 0.0) {
                y0 = y0.min(r.y);
                y1 = y1.max(r.y);
            }
        }
        for v in &self.vlines {
            if v.x.is_finite() {
                x0 = x0.min(v.x);
                x1 = x1.max(v.x);
            }
        }
        let pad = |a: f64, b: f64| {
            let d = if b > a {
                (b - a) * 0.04
            } else {
                a.abs().max(1.0) * 0.05
            };
            (a - d, b + d)
        };
        let x = pad(x0, x1);
        let y = if self.log_y {
            (y0 / 2.0, y1 * 2.0)
        } else {
            pad(y0, y1)
        };
        Ok((x, y))
    }

    /// The chart as an SVG document.
    pub fn to_svg(&self) -> Result<String, PlotError> {
        let lines = wrap(&self.caption, (SIZE.0 / 7) as usize);
        let height = SIZE.1 + caption_height(&lines);
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (SIZE.0, height)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| draw_err(&e))?;
            let (main, below) = root.split_vertically(SIZE.1);
            self.draw_panel(&main)?;
            draw_caption(&below, &lines)?;
            root.present().map_err(|e| draw_err(&e))?;
        }
        Ok(svg)
    }

    /// The chart and its legend into `area`.
    fn draw_panel(&self, area: &Area<'_>) -> Result<(), PlotError> {
        let ((x0, x1), (y0, y1)) = self.ranges()?;
        let (w, _) = area.dim_in_pixel();
        let legend_w = LEGEND_W.min(w * 28 / 100);
        let (plot, legend) = area.split_horizontally(w.saturating_sub(legend_w));
        if self.log_y {
            self.draw_chart(&plot, x0..x1, (y0..y1).log_scale(), (y0, y1))?;
        } else {
            self.draw_chart(&plot, x0..x1, y0..y1, (y0, y1))?;
        }
        self.draw_legend(&legend)
    }

    fn draw_chart<Y>(
        &self,
        area: &Area<'_>,
        x: std::ops::Range<f64>,
        y: Y,
        (y0, y1): Span,
    ) -> Result<(), PlotError>
    where
        Y: AsRangedCoord<Value = f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        let err = |e: &dyn std::fmt::Display| draw_err(e);
        let (x0, x1) = (x.start, x.end);
        let mut chart = ChartBuilder::on(area)
            .caption(&self.title, ("sans-serif", 19))
            .margin(12)
            .x_label_area_size(46)
            .y_label_area_size(66)
            .build_cartesian_2d(x, y)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .bold_line_style(RGBColor(222, 222, 222))
            .light_line_style(RGBColor(244, 244, 244))
            .draw()
            .map_err(|e| err(&e))?;
        for (i, b) in self.bands.iter().enumerate() {
            let alpha = band_alpha(i, self.bands.len());
            let (lo, hi) = (b.low.max(x0), b.high.min(x1));
            if lo < hi {
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(lo, y0), (hi, y1)],
                        BAND.mix(alpha).filled(),
                    )))
                    .map_err(|e| err(&e))?;
            }
        }
        for (i, s) in self.series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            match s.style {
                Style::Filled => {
                    // non-drawable values (empty bins on a log axis) sit on the floor
                    let outline: Vec<(f64, f64)> = s
                        .points
                        .iter()
                        .filter(|p| p.0.is_finite())
                        .map(|&(x, y)| (x, if self.drawable((x, y)) { y } else { y0 }))
                        .collect();
                    if let (Some(first), Some(last)) = (outline.first(), outline.last()) {
                        let mut area_pts = vec![(first.0, y0)];
                        area_pts.extend(outline.iter().copied());
                        area_pts.push((last.0, y0));
                        chart
                            .draw_series(std::iter::once(Polygon::new(
                                area_pts,
                                color.mix(0.25).filled(),
                            )))
                            .map_err(|e| err(&e))?;
                        // the outline, without the stretches that run along
                        // the floor (they would hide the axis and each other)
                        let on_floor: Vec<bool> = s
                            .points
                            .iter()
                            .filter(|p| p.0.is_finite())
                            .map(|&p| !self.drawable(p))
                            .collect();
                        let mut paths: Vec<Vec<(f64, f64)>> = Vec::new();
                        for j in 1..outline.len() {
                            if on_floor[j - 1] && on_floor[j] {
                                continue;
                            }
                            match paths.last_mut() {
                                Some(path) if path.last() == Some(&outline[j - 1]) => {
                                    path.push(outline[j]);
                                }
                                _ => paths.push(vec![outline[j - 1], outline[j]]),
                            }
                        }
                        chart
                            .draw_series(
                                paths
                                    .into_iter()
                                    .map(|path| PathElement::new(path, color.stroke_width(2))),
                            )
                            .map_err(|e| err(&e))?;
                    }
                }
                Style::Line | Style::Markers => {
                    for run in self.runs(s) {
                        chart
                            .draw_series(LineSeries::new(run, color.stroke_width(2)))
                            .map_err(|e| err(&e))?;
                    }
                }
            }
            for (&(x, _), &(lo, hi)) in s.points.iter().zip(&s.errors) {
                if self.drawable((x, lo)) && self.drawable((x, hi)) {
                    let style = color.stroke_width(2);
                    chart
                        .draw_series([
                            PathElement::new(vec![(x, lo), (x, hi)], style),
                            PathElement::new(vec![(x, lo), (x, lo)], style),
                        ])
                        .map_err(|e| err(&e))?;
                    for v in [lo, hi] {
                        chart
                            .draw_series(std::iter::once(
                                EmptyElement::at((x, v))
                                    + PathElement::new(vec![(-5, 0), (5, 0)], style),
                            ))
                            .map_err(|e| err(&e))?;
                    }
                }
            }
            if s.style == Style::Markers {
                chart
                    .draw_series(
                        self.points(s)
                            .into_iter()
                            .map(|p| Circle::new(p, 4, color.filled())),
                    )
                    .map_err(|e| err(&e))?;
            }
        }
        for (i, r) in self.references.iter().enumerate() {
            let color = GREYS[i % GREYS.len()];
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(x0, r.y), (x1, r.y)],
                    8,
                    5,
                    color.stroke_width(2),
                ))
                .map_err(|e| err(&e))?;
        }
        for v in &self.vlines {
            let pts = vec![(v.x, y0), (v.x, y1)];
            if v.dashed {
                chart
                    .draw_series(DashedLineSeries::new(pts, 7, 5, MARK.stroke_width(2)))
                    .map_err(|e| err(&e))?;
            } else {
                chart
                    .draw_series(LineSeries::new(pts, MARK.stroke_width(1)))
                    .map_err(|e| err(&e))?;
            }
        }
        Ok(())
    }

    fn legend_entries(&self) -> Vec<(Key, String)> {
        let mut out = Vec::new();
        for (i, s) in self.series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let key = match s.style {
                Style::Filled => Key::Fill(color),
                Style::Line => Key::Line(color),
                Style::Markers => Key::Marker(color, !s.errors.is_empty()),
            };
            out.push((key, s.name.clone()));
        }
        for (i, r) in self.references.iter().enumerate() {
            out.push((Key::Dashed(GREYS[i % GREYS.len()]), r.name.clone()));
        }
        for v in &self.vlines {
            let key = if v.dashed {
                Key::Dashed(MARK)
            } else {
                Key::Solid(MARK)
            };
            out.push((key, v.name.clone()));
        }
        for (i, b) in self.bands.iter().enumerate() {
            out.push((Key::Band(band_alpha(i, self.bands.len())), b.name.clone()));
        }
        out
    }

    /// The legend in its own strip right of the plotting area.
    fn draw_legend(&self, area: &Area<'_>) -> Result<(), PlotError> {
        let err = |e: &dyn std::fmt::Display| draw_err(e);
        let font = ("sans-serif", 13).into_font();
        let style = TextStyle::from(font).pos(Pos::new(HPos::Left, VPos::Center));
        let mut y: i32 = 52;
        for (key, text) in self.legend_entries() {
            let (kx, tx) = (6, 44);
            match key {
                Key::Fill(c) => {
                    area.draw(&Rectangle::new(
                        [(kx, y - 6), (kx + 28, y + 6)],
                        c.mix(0.25).filled(),
                    ))
                    .map_err(|e| err(&e))?;
                    area.draw(&Rectangle::new(
                        [(kx, y - 6), (kx + 28, y + 6)],
                        c.stroke_width(2),
                    ))
                    .map_err(|e| err(&e))?;
                }
                Key::Line(c) | Key::Solid(c) => {
                    let w = if matches!(key, Key::Solid(_)) { 1 } else { 2 };
                    area.draw(&PathElement::new(
                        vec![(kx, y), (kx + 28, y)],
                        c.stroke_width(w),
                    ))
                    .map_err(|e| err(&e))?;
                }
                Key::Marker(c, bars) => {
                    area.draw(&PathElement::new(
                        vec![(kx, y), (kx + 28, y)],
                        c.stroke_width(2),
                    ))
                    .map_err(|e| err(&e))?;
                    if bars {
                        for p in [
                            vec![(kx + 14, y - 8), (kx + 14, y + 8)],
                            vec![(kx + 9, y - 8), (kx + 19, y - 8)],
                            vec![(kx + 9, y + 8), (kx + 19, y + 8)],
                        ] {
                            area.draw(&PathElement::new(p, c.stroke_width(2)))
                                .map_err(|e| err(&e))?;
                        }
                    }
                    area.draw(&Circle::new((kx + 14, y), 4, c.filled()))
                        .map_err(|e| err(&e))?;
                }
                Key::Dashed(c) => {
                    // drawn dashed, as on the chart
                    for s in [0, 11, 22] {
                        area.draw(&PathElement::new(
                            vec![(kx + s, y), (kx + s + 7, y)],
                            c.stroke_width(2),
                        ))
                        .map_err(|e| err(&e))?;
                    }
                }
                Key::Band(alpha) => {
                    area.draw(&Rectangle::new(
                        [(kx, y - 7), (kx + 28, y + 7)],
                        BAND.mix(alpha).filled(),
                    ))
                    .map_err(|e| err(&e))?;
                }
            }
            let lines = wrap(&text, 28);
            for (j, line) in lines.iter().enumerate() {
                area.draw(&Text::new(
                    line.clone(),
                    (tx, y + 16 * j as i32),
                    style.clone(),
                ))
                .map_err(|e| err(&e))?;
            }
            y += 16 * lines.len().max(1) as i32 + 10;
        }
        Ok(())
    }
}

#[cfg(feature = "plots")]
fn caption_height(lines: &[String]) -> u32 {
    if lines.is_empty() {
        0
    } else {
        CAPTION_LINE * lines.len() as u32 + 12
    }
}

#[cfg(feature = "plots")]
fn draw_caption(area: &Area<'_>, lines: &[String]) -> Result<(), PlotError> {
    let style = TextStyle::from(("sans-serif", 12).into_font())
        .color(&RGBColor(70, 70, 70))
        .pos(Pos::new(HPos::Left, VPos::Top));
    for (i, line) in lines.iter().enumerate() {
        area.draw(&Text::new(
            line.clone(),
            (14, 2 + (CAPTION_LINE * i as u32) as i32),
            style.clone(),
        ))
        .map_err(|e| draw_err(&e))?;
    }
    Ok(())
}

#[cfg(feature = "plots")]
impl Figure {
    /// The panels in a grid as one SVG document; empty panels are left blank.
    pub fn to_svg(&self) -> Result<String, PlotError> {
        if self.panels.is_empty() {
            return Err(PlotError::Empty);
        }
        let cols = self.columns.clamp(1, self.panels.len());
        let rows = self.panels.len().div_ceil(cols);
        let width = PANEL.0 * cols as u32;
        let lines = wrap(&self.caption, (width / 7) as usize);
        let grid_h = PANEL.1 * rows as u32;
        let height = TITLE_H + grid_h + caption_height(&lines);
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| draw_err(&e))?;
            let (top, rest) = root.split_vertically(TITLE_H);
            top.draw(&Text::new(
                self.title.clone(),
                (width as i32 / 2, TITLE_H as i32 / 2),
                TextStyle::from(("sans-serif", 22).into_font())
                    .pos(Pos::new(HPos::Center, VPos::Center)),
            ))
            .map_err(|e| draw_err(&e))?;
            let (grid, below) = rest.split_vertically(grid_h);
            for (panel, area) in self.panels.iter().zip(grid.split_evenly((rows, cols))) {
                match panel.draw_panel(&area) {
                    Ok(()) | Err(PlotError::Empty) => {}
                    Err(e) => return Err(e),
                }
            }
            draw_caption(&below, &lines)?;
            root.present().map_err(|e| draw_err(&e))?;
        }
        Ok(svg)
    }
}

#[cfg(not(feature = "plots"))]
impl Figure {
    /// The figure as an SVG document: this build has no charts.
    pub fn to_svg(&self) -> Result<String, PlotError> {
        Err(PlotError::Disabled)
    }
}

impl Figure {
    /// Writes the figure to `path` (atomically), SVG or PNG by its extension.
    pub fn save(&self, path: &Path) -> Result<(), PlotError> {
        save_svg(&self.to_svg()?, path)
    }
}

#[cfg(not(feature = "plots"))]
impl LinePlot {
    /// The chart as an SVG document: this build has no charts.
    pub fn to_svg(&self) -> Result<String, PlotError> {
        Err(PlotError::Disabled)
    }
}

impl LinePlot {
    /// The chart as PNG bytes.
    pub fn to_png(&self) -> Result<Vec<u8>, PlotError> {
        svg_to_png(&self.to_svg()?)
    }

    /// Writes the chart to `path` (atomically), SVG or PNG by its extension.
    pub fn save(&self, path: &Path) -> Result<(), PlotError> {
        save_svg(&self.to_svg()?, path)
    }
}

/// Writes an SVG document to `path` (atomically) as SVG or, rasterised, PNG.
fn save_svg(svg: &str, path: &Path) -> Result<(), PlotError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let bytes = match ext.as_deref() {
        Some("svg") => svg.as_bytes().to_vec(),
        Some("png") => svg_to_png(svg)?,
        _ => {
            return Err(PlotError::Format {
                path: path.display().to_string(),
            })
        }
    };
    crate::io::write_atomic(path, &bytes).map_err(|source| PlotError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Checks that a plot path has a supported extension and that this build
/// draws charts (before any work).
pub fn check_plot_path(path: &Path) -> Result<(), PlotError> {
    if !ENABLED {
        return Err(PlotError::Disabled);
    }
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("svg" | "png") => Ok(()),
        _ => Err(PlotError::Format {
            path: path.display().to_string(),
        }),
    }
}

/// Rasterises an SVG with the embedded font.
#[cfg(not(feature = "plots"))]
pub fn svg_to_png(_svg: &str) -> Result<Vec<u8>, PlotError> {
    Err(PlotError::Disabled)
}

/// Rasterises an SVG with the embedded font.
#[cfg(feature = "plots")]
pub fn svg_to_png(svg: &str) -> Result<Vec<u8>, PlotError> {
    use resvg::{tiny_skia, usvg};
    let mut options = usvg::Options::default();
    {
        let db = options.fontdb_mut();
        db.load_font_data(FONT.to_vec());
        db.set_sans_serif_family("DejaVu Sans");
    }
    let tree = usvg::Tree::from_str(svg, &options).map_err(|e| PlotError::Draw(e.to_string()))?;
    let size = tree.size().to_int_size();
    let scaled = |v: u32| (v as f32 * PNG_SCALE).round() as u32;
    let mut pixmap = tiny_skia::Pixmap::new(scaled(size.width()), scaled(size.height()))
        .ok_or_else(|| PlotError::Draw("empty image".to_string()))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        tiny_skia::Transform::from_scale(PNG_SCALE, PNG_SCALE),
        &mut pixmap.as_mut(),
    );
    pixmap
        .encode_png()
        .map_err(|e| PlotError::Draw(e.to_string()))
}

#[cfg(all(test, feature = "plots"))]
mod tests {
    use super::*;

    fn plot(log_y: bool) -> LinePlot {
        LinePlot {
            title: "accuracy against replacement".to_string(),
            x_label: "replaced tokens (%)".to_string(),
            y_label: "Avg@k (%)".to_string(),
            series: vec![
                Series {
                    name: "dlogp".to_string(),
                    points: vec![(1.0, 10.0), (2.0, 20.0), (5.0, 30.0)],
                    style: Style::Markers,
                    errors: vec![(8.0, 12.0), (15.0, 25.0), (28.0, 33.0)],
                },
                Series {
                    name: "kl-r & <js>".to_string(),
                    points: vec![(1.0, 5.0), (3.0, 0.0), (f64::NAN, 1.0)],
                    style: Style::Line,
                    errors: Vec::new(),
                },
            ],
            references: vec![RefLine {
                name: "RL".to_string(),
                y: 40.0,
            }],
            log_y,
            ..LinePlot::default()
        }
    }

    #[test]
    fn svg_holds_every_series_and_escapes_names() {
        for log_y in [false, true] {
            let svg = plot(log_y).to_svg().unwrap();
            assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
            let lines: Vec<&str> = svg.lines().map(str::trim).collect();
            for label in [
                "dlogp",
                "RL",
                "kl-r &amp; &lt;js&gt;",
                "replaced tokens (%)",
            ] {
                assert!(lines.contains(&label), "{label} missing, log_y {log_y}");
            }
            // two series lines and the dashed reference line
            assert!(svg.matches("<polyline").count() >= 3, "log_y {log_y}");
        }
    }

    #[test]
    fn png_is_a_png_of_the_chart_size() {
        let png = plot(false).to_png().unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR: width and height, big-endian
        let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
        let scaled = |v: u32| (v as f32 * PNG_SCALE).round() as u32;
        assert_eq!((w, h), (scaled(SIZE.0), scaled(SIZE.1)));
    }

    #[test]
    fn empty_and_unknown_formats_are_errors() {
        let empty = LinePlot::default();
        assert!(matches!(empty.to_svg(), Err(PlotError::Empty)));
        let e = check_plot_path(Path::new("out.pdf"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("out.pdf") && e.contains(".svg or .png"), "{e}");
        assert!(check_plot_path(Path::new("a/b.PNG")).is_ok());
    }
}
