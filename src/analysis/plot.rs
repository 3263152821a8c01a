//! Line charts drawn with `plotters` as SVG, and rasterised to PNG with
//! `resvg` using an embedded DejaVu Sans (so PNGs look the same on every
//! machine, with no system fonts needed). One chart type serves both the
//! intervention sweep (accuracy against replacement ratio, paper Fig. 1c)
//! and the metric histograms (density on a log axis, Fig. 1b).

use std::path::Path;

#[cfg(feature = "plots")]
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
#[cfg(feature = "plots")]
use plotters::prelude::*;

/// Whether this build draws charts (the `plots` feature). Without it the
/// chart data still exists (and JSON/CSV outputs carry it); drawing is an
/// error naming the feature.
pub const ENABLED: bool = cfg!(feature = "plots");

/// DejaVu Sans (Bitstream Vera license, assets/fonts/DejaVu-LICENSE.txt).
#[cfg(feature = "plots")]
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Draw markers at the points (sweeps) or only the line (histograms).
    pub markers: bool,
}

/// A horizontal reference line (e.g. the base model's accuracy).
#[derive(Debug, Clone, PartialEq)]
pub struct RefLine {
    pub name: String,
    pub y: f64,
}

/// A chart of lines.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LinePlot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub references: Vec<RefLine>,
    /// Logarithmic y axis (non-positive values are left out).
    pub log_y: bool,
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
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
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
#[cfg(feature = "plots")]
const SIZE: (u32, u32) = (860, 540);

/// `(low, high)` of an axis.
#[cfg(feature = "plots")]
type Span = (f64, f64);

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
    /// finite, or not positive on a log axis) breaks the line, so an empty
    /// histogram bin shows as a gap rather than a slope across it.
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
        let pad = |a: f64, b: f64| {
            let d = if b > a {
                (b - a) * 0.05
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
        let ((x0, x1), (y0, y1)) = self.ranges()?;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            if self.log_y {
                self.draw(&root, x0..x1, (y0..y1).log_scale())?;
            } else {
                self.draw(&root, x0..x1, y0..y1)?;
            }
        }
        Ok(svg)
    }

    fn draw<Y>(
        &self,
        root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
        x: std::ops::Range<f64>,
        y: Y,
    ) -> Result<(), PlotError>
    where
        Y: AsRangedCoord<Value = f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        let err = |e: &dyn std::fmt::Display| PlotError::Draw(e.to_string());
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let (x0, x1) = (x.start, x.end);
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(70)
            .build_cartesian_2d(x, y)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .draw()
            .map_err(|e| err(&e))?;
        for (i, r) in self.references.iter().enumerate() {
            let color = GREYS[i % GREYS.len()];
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(x0, r.y), (x1, r.y)],
                    8,
                    5,
                    color.stroke_width(2),
                ))
                .map_err(|e| err(&e))?
                .label(&r.name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        for (i, s) in self.series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let points = self.points(s);
            for (j, run) in self.runs(s).into_iter().enumerate() {
                let drawn = chart
                    .draw_series(LineSeries::new(run, color.stroke_width(2)))
                    .map_err(|e| err(&e))?;
                if j == 0 {
                    drawn.label(&s.name).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                }
            }
            if s.markers {
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
                    .map_err(|e| err(&e))?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
        Ok(())
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
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let bytes = match ext.as_deref() {
            Some("svg") => self.to_svg()?.into_bytes(),
            Some("png") => self.to_png()?,
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
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| PlotError::Draw("empty image".to_string()))?;
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
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
                    markers: true,
                },
                Series {
                    name: "kl-r & <js>".to_string(),
                    points: vec![(1.0, 5.0), (3.0, 0.0), (f64::NAN, 1.0)],
                    markers: false,
                },
            ],
            references: vec![RefLine {
                name: "RL".to_string(),
                y: 40.0,
            }],
            log_y,
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
        assert_eq!((w, h), SIZE);
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
