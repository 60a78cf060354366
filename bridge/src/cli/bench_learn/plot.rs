//! Rate against ratings, one line per arm, as an SVG drawn with plotters.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

/// One arm's curve: (ratings given, preferred-style rate on the held-out prompts).
pub struct Curve<'a> {
    pub label: &'a str,
    pub points: Vec<(f64, f64)>,
}

const COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// Draws the curves of one rater preset, with the 0.8 line that "aligned" is read against.
pub fn draw(path: &Path, title: &str, curves: &[Curve]) -> Result<()> {
    let max_x = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..max_x, 0f64..1f64)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("ratings given")
        .y_desc("preferred-style rate, held-out prompts")
        .draw()
        .map_err(e)?;
    chart
        .draw_series(LineSeries::new(
            [(0.0, 0.8), (max_x, 0.8)],
            BLACK.mix(0.3).stroke_width(1),
        ))
        .map_err(e)?;
    for (i, c) in curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(c.points.clone(), colour.stroke_width(2)))
            .map_err(e)?
            .label(c.label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2)));
        chart
            .draw_series(c.points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plot_with_every_arm_is_written_as_svg() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("learn.svg");
        let curves = [
            Curve {
                label: "binary",
                points: vec![(0.0, 0.1), (16.0, 0.3)],
            },
            Curve {
                label: "hints",
                points: vec![(0.0, 0.1), (16.0, 0.5)],
            },
        ];
        draw(&path, "starts-with:Sure", &curves).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("hints") && svg.contains("binary"));
    }
}
