//! The paper's Fig. 3 panels from drift rows, as PNG and SVG: (a) MSE between adjacent steps per
//! layer, (b) F-norm of the channel-mean map per layer, (c) std over steps of (b) per layer,
//! encoder vs decoder, and (d) a layer x step heat map of the relative change.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::drift::{Row, Side, Summary};
use fd_model::io::write_atomic_with;

use crate::Result;

type Series = BTreeMap<(Side, String), Vec<(usize, f64)>>;

fn series(rows: &[Row], f: impl Fn(&Row) -> f64) -> Series {
    let mut s: Series = BTreeMap::new();
    for r in rows {
        let v = f(r);
        if v.is_finite() && v > 0.0 {
            s.entry((r.side, r.layer.clone())).or_default().push((r.step, v));
        }
    }
    s
}

/// Encoder layers in blues, decoder layers in reds (darker = later in its family).
fn color(side: Side, i: usize, n: usize) -> RGBColor {
    let t = if n <= 1 { 0.5 } else { i as f64 / (n - 1) as f64 };
    let c = |a: f64, b: f64| (a + (b - a) * t) as u8;
    match side {
        Side::Encoder => RGBColor(c(140.0, 10.0), c(180.0, 40.0), c(255.0, 140.0)),
        Side::Decoder => RGBColor(c(255.0, 130.0), c(150.0, 10.0), c(120.0, 10.0)),
    }
}

fn lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    ylabel: &str,
    s: &Series,
    steps: usize,
) -> std::result::Result<(), String> {
    area.fill(&WHITE).map_err(|e| e.to_string())?;
    let (lo, hi) = s.values().flatten().fold((f64::MAX, f64::MIN), |(a, b), &(_, v)| (a.min(v), b.max(v)));
    let (lo, hi) = if lo < hi { (lo * 0.8, hi * 1.25) } else { (1e-6, 1.0) };
    // a log axis labels powers of ten and the steps between them: reach down to one so that a
    // range inside one decade (a DiT's F-norms, 2..6) still gets tick labels
    let lo = lo.min(10f64.powf(lo.log10().floor()));
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0usize..steps, (lo..hi).log_scale())
        .map_err(|e| e.to_string())?;
    chart.configure_mesh().x_desc("step").y_desc(ylabel).draw().map_err(|e| e.to_string())?;
    let count = |side| s.keys().filter(|(sd, _)| *sd == side).count();
    let (ne, nd) = (count(Side::Encoder), count(Side::Decoder));
    let (mut ie, mut id) = (0, 0);
    for ((side, layer), pts) in s {
        let col = match side {
            Side::Encoder => {
                ie += 1;
                color(*side, ie - 1, ne)
            }
            Side::Decoder => {
                id += 1;
                color(*side, id - 1, nd)
            }
        };
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), col.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(format!("{layer} ({})", if *side == Side::Encoder { "enc" } else { "dec" }))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], col.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| e.to_string())
}

fn bars<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, summary: &Summary) -> std::result::Result<(), String> {
    area.fill(&WHITE).map_err(|e| e.to_string())?;
    let layers = &summary.layers;
    let hi = layers.iter().map(|l| l.fnorm_std_over_steps).fold(0.0, f64::max).max(1e-9) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption("(c) std over steps of F-norm, per layer", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(60)
        .y_label_area_size(60)
        .build_cartesian_2d((0..layers.len().saturating_sub(1)).into_segmented(), 0.0..hi)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_labels(layers.len())
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => layers.get(*i).map_or(String::new(), |l| l.layer.clone()),
            _ => String::new(),
        })
        .y_desc("std(F-norm)")
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(layers.iter().enumerate().map(|(i, l)| {
            let col = if l.side == Side::Encoder { RGBColor(40, 90, 200) } else { RGBColor(200, 50, 40) };
            Rectangle::new(
                [(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), l.fnorm_std_over_steps)],
                col.filled(),
            )
        }))
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn heatmap<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    s: &Series,
    steps: usize,
) -> std::result::Result<(), String> {
    area.fill(&WHITE).map_err(|e| e.to_string())?;
    let names: Vec<String> =
        s.keys().map(|(side, l)| format!("{}:{l}", if *side == Side::Encoder { "E" } else { "D" })).collect();
    let hi = s.values().flatten().map(|p| p.1).fold(0.0, f64::max).max(1e-12);
    let mut chart = ChartBuilder::on(area)
        .caption("(d) relative change ||f_t - f_t-1|| / ||f_t-1||", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(90)
        // Segmented rows put each layer's label at the centre of its row (not on a row boundary).
        .build_cartesian_2d(0usize..steps, (0usize..names.len().saturating_sub(1)).into_segmented())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("step")
        .y_labels(names.len())
        .y_label_formatter(&|y| match y {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(|e| e.to_string())?;
    for (row, pts) in s.values().enumerate() {
        chart
            .draw_series(pts.iter().map(|&(x, v)| {
                let t = (v / hi).sqrt();
                let col = ViridisRGB::get_color(t);
                Rectangle::new([(x, SegmentValue::Exact(row)), (x + 1, SegmentValue::Exact(row + 1))], col.filled())
            }))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn render<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    rows: &[Row],
    summary: &Summary,
) -> std::result::Result<(), String> {
    let steps = rows.iter().map(|r| r.step).max().map_or(1, |s| s + 1);
    let panels = root.split_evenly((2, 2));
    lines(&panels[0], "(a) MSE between adjacent steps", "MSE", &series(rows, |r| r.mse), steps)?;
    lines(&panels[1], "(b) F-norm of the channel-mean map", "F-norm", &series(rows, |r| r.fnorm), steps)?;
    bars(&panels[2], summary)?;
    heatmap(&panels[3], &series(rows, |r| r.rel_change), steps)?;
    root.present().map_err(|e| e.to_string())
}

/// Write `stem.png` and `stem.svg` (a 2x2 figure: panels a-d).
pub fn fig3(rows: &[Row], summary: &Summary, stem: &Path) -> Result<()> {
    write_atomic_with(&stem.with_extension("png"), |tmp| {
        render(BitMapBackend::new(tmp, (1600, 1100)).into_drawing_area(), rows, summary)
    })?;
    write_atomic_with(&stem.with_extension("svg"), |tmp| {
        render(SVGBackend::new(tmp, (1600, 1100)).into_drawing_area(), rows, summary)
    })?;
    Ok(())
}

/// One labelled point of a Pareto plot (cost on x, quality on y; lower is better for both).
#[derive(Debug, Clone)]
pub struct ParetoPoint {
    pub label: String,
    /// Family, coloured alike: e.g. `baseline`, `ours`, `auto`, `deepcache`.
    pub family: String,
    pub x: f64,
    pub y: f64,
}

/// A family's plot colour, from the method table ([`fd_sched::methods::METHODS`]); purple for a
/// family no method names (one an experiment row sets itself).
fn family_color(f: &str) -> RGBColor {
    let (r, g, b) = fd_sched::methods::family_rgb(f).unwrap_or((120, 60, 160));
    RGBColor(r, g, b)
}

/// Height of a point label in pixels (14 px font plus spacing).
const LABEL_H: i32 = 16;

/// Approximate pixel width of a label in the 14 px sans-serif font.
fn label_width(s: &str) -> i32 {
    (s.chars().count() as f64 * 7.4).ceil() as i32
}

/// Top-left corners for point labels: right of each point (pixel coordinates `pts`), at the
/// first vertical offset (0, -h, +h, -2h, ...) whose box overlaps no label placed before it and
/// no point marker, so labels of nearby points stay readable.
fn place_labels(pts: &[(i32, i32)], widths: &[i32], h: i32) -> Vec<(i32, i32)> {
    let overlaps = |a: (i32, i32, i32, i32), b: (i32, i32, i32, i32)| a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3;
    let markers: Vec<(i32, i32, i32, i32)> = pts.iter().map(|&(x, y)| (x - 5, y - 5, x + 5, y + 5)).collect();
    let mut placed: Vec<(i32, i32, i32, i32)> = Vec::new();
    let mut out = Vec::with_capacity(pts.len());
    for (&(x, y), &w) in pts.iter().zip(widths) {
        let base = (x + 7, y - h);
        let boxed = |dy: i32| (base.0, base.1 + dy, base.0 + w, base.1 + dy + h);
        let dy = (0..12)
            .map(|k| if k % 2 == 0 { -(k / 2) * h } else { (k / 2 + 1) * h })
            .find(|&dy| {
                let b = boxed(dy);
                !placed.iter().chain(&markers).any(|&o| overlaps(b, o))
            })
            .unwrap_or(0);
        placed.push(boxed(dy));
        out.push((base.0, base.1 + dy));
    }
    out
}

fn render_pareto<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    pts: &[ParetoPoint],
) -> std::result::Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let fin: Vec<&ParetoPoint> = pts.iter().filter(|p| p.x.is_finite() && p.y.is_finite()).collect();
    let (x0, x1) = fin.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.x), b.max(p.x)));
    let (y0, y1) = fin.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.y), b.max(p.y)));
    let pad = |lo: f64, hi: f64| {
        let w = (hi - lo).abs().max(hi.abs() * 0.05).max(1e-9);
        (lo - 0.08 * w, hi + 0.25 * w)
    };
    let ((x0, x1), (y0, y1)) = if fin.is_empty() { ((0.0, 1.0), (0.0, 1.0)) } else { (pad(x0, x1), pad(y0, y1)) };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| e.to_string())?;
    chart.configure_mesh().x_desc(xlabel).y_desc(ylabel).draw().map_err(|e| e.to_string())?;
    // the Pareto front (no other point is both cheaper and better), as a step line
    let mut front: Vec<&ParetoPoint> = fin
        .iter()
        .copied()
        .filter(|p| !fin.iter().any(|q| q.x <= p.x && q.y <= p.y && (q.x < p.x || q.y < p.y)))
        .collect();
    front.sort_by(|a, b| a.x.total_cmp(&b.x));
    chart
        .draw_series(LineSeries::new(front.iter().map(|p| (p.x, p.y)), RGBColor(150, 150, 150).stroke_width(1)))
        .map_err(|e| e.to_string())?;
    for p in &fin {
        let col = family_color(&p.family);
        chart.draw_series(std::iter::once(Circle::new((p.x, p.y), 5, col.filled()))).map_err(|e| e.to_string())?;
    }
    // labels in pixel space, moved up or down where they would cover another label or point
    let px: Vec<(i32, i32)> = fin.iter().map(|p| chart.backend_coord(&(p.x, p.y))).collect();
    let widths: Vec<i32> = fin.iter().map(|p| label_width(&p.label)).collect();
    for (p, pos) in fin.iter().zip(place_labels(&px, &widths, LABEL_H)) {
        let font = ("sans-serif", 14).into_font().color(&family_color(&p.family));
        root.draw(&Text::new(p.label.clone(), pos, font)).map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

/// Write `stem.png` and `stem.svg`: labelled points, coloured by family, with the Pareto front.
pub fn pareto(pts: &[ParetoPoint], title: &str, xlabel: &str, ylabel: &str, stem: &Path) -> Result<()> {
    write_atomic_with(&stem.with_extension("png"), |tmp| {
        render_pareto(BitMapBackend::new(tmp, (1100, 750)).into_drawing_area(), title, xlabel, ylabel, pts)
    })?;
    write_atomic_with(&stem.with_extension("svg"), |tmp| {
        render_pareto(SVGBackend::new(tmp, (1100, 750)).into_drawing_area(), title, xlabel, ylabel, pts)
    })?;
    Ok(())
}

/// An image with caption lines above it: one panel of [`image_panels`].
#[derive(Debug, Clone)]
pub struct ImagePanel {
    /// Caption, one entry per line (the first is drawn bold).
    pub title: Vec<String>,
    /// Pixels, row-major [height, width, channels] (1 = grey, 3 = RGB).
    pub pixels: Vec<u8>,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
}

const CAPTION_LINE: usize = 24;
const PANEL_GAP: usize = 16;

fn render_panels<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    panels: &[ImagePanel],
    scale: usize,
) -> std::result::Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let caption_h = panels.iter().map(|p| p.title.len()).max().unwrap_or(0) * CAPTION_LINE + 8;
    let mut x0 = PANEL_GAP;
    for p in panels {
        for (i, line) in p.title.iter().enumerate() {
            let style = if i == 0 { FontStyle::Bold } else { FontStyle::Normal };
            let font = ("sans-serif", 18).into_font().style(style).color(&BLACK);
            let pos = (x0 as i32, (PANEL_GAP / 2 + i * CAPTION_LINE) as i32);
            root.draw(&Text::new(line.clone(), pos, font)).map_err(|e| e.to_string())?;
        }
        let y0 = PANEL_GAP / 2 + caption_h;
        for y in 0..p.height {
            for x in 0..p.width {
                let i = (y * p.width + x) * p.channels;
                let c = match p.channels {
                    1 => RGBColor(p.pixels[i], p.pixels[i], p.pixels[i]),
                    _ => RGBColor(p.pixels[i], p.pixels[i + 1], p.pixels[i + 2]),
                };
                for (dy, dx) in (0..scale).flat_map(|dy| (0..scale).map(move |dx| (dy, dx))) {
                    root.draw_pixel(((x0 + x * scale + dx) as i32, (y0 + y * scale + dy) as i32), &c)
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        x0 += p.width * scale + PANEL_GAP;
    }
    root.present().map_err(|e| e.to_string())
}

/// Write `path` (PNG): the panels side by side, each image enlarged `scale` times (nearest
/// neighbour) under its caption.
pub fn image_panels(panels: &[ImagePanel], scale: usize, path: &Path) -> Result<()> {
    for p in panels {
        if !matches!(p.channels, 1 | 3) || p.pixels.len() != p.height * p.width * p.channels {
            return Err(crate::Error::Input(format!(
                "{}: a panel of {}x{}x{} needs as many pixel values, got {}",
                path.display(),
                p.height,
                p.width,
                p.channels,
                p.pixels.len()
            )));
        }
    }
    let scale = scale.max(1);
    let lines = panels.iter().map(|p| p.title.len()).max().unwrap_or(0);
    let w = PANEL_GAP + panels.iter().map(|p| p.width * scale + PANEL_GAP).sum::<usize>();
    let h = PANEL_GAP + lines * CAPTION_LINE + 8 + panels.iter().map(|p| p.height * scale).max().unwrap_or(0);
    write_atomic_with(path, |tmp| {
        render_panels(BitMapBackend::new(tmp, (w as u32, h as u32)).into_drawing_area(), panels, scale)
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_of_nearby_points_do_not_overlap() {
        // three points a few px apart with long labels (the uniform k=2 / k=3 case), one far away
        let pts = [(600, 500), (608, 501), (612, 495), (100, 100)];
        let w = [80, 80, 80, 80];
        let pos = place_labels(&pts, &w, LABEL_H);
        assert_eq!(pos[3], (107, 100 - LABEL_H)); // an isolated point keeps the default place
        let label = |i: usize| (pos[i].0, pos[i].1, pos[i].0 + w[i], pos[i].1 + LABEL_H);
        let marker = |i: usize| (pts[i].0 - 5, pts[i].1 - 5, pts[i].0 + 5, pts[i].1 + 5);
        let hit = |a: (i32, i32, i32, i32), b: (i32, i32, i32, i32)| a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3;
        for i in 0..pts.len() {
            for k in 0..pts.len() {
                assert!(!hit(label(i), marker(k)), "label {i} covers point {k}: {pos:?}");
                assert!(i == k || !hit(label(i), label(k)), "labels {i} and {k} overlap: {pos:?}");
            }
        }
    }
}
