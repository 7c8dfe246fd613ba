//! The report: JSON with every number, a one-screen overview, the SVG timelines, and the
//! human table.

pub mod build;
pub mod model;
pub mod overview;
pub mod summary;
pub mod svg;
pub mod table;
pub mod versus;

use std::io;
use std::path::Path;

use model::Report;

/// Writes `report.json`, `summary.svg` (the overview alone), `chart.svg` (the overview, then
/// the timelines) and `table.txt` into `dir`.
pub fn write(dir: &Path, report: &Report) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_vec_pretty(report).map_err(io::Error::other)?;
    std::fs::write(dir.join("report.json"), json)?;
    std::fs::write(dir.join("summary.svg"), overview::document(report))?;
    std::fs::write(dir.join("chart.svg"), svg::render(report))?;
    std::fs::write(dir.join("table.txt"), table::render(report))
}
