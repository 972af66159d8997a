//! Writing a figure as SVG and as PNG (rasterised with resvg, fonts from the `dejavu` crate).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use resvg::{tiny_skia, usvg};

use crate::chart::Figure;
use crate::error::{PlotError, Result, io_err};

/// PNG pixels per SVG unit: 2 gives crisp text on high-density screens and in papers.
pub const PNG_SCALE: f32 = 2.0;

/// The two files written for one plot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlotFiles {
    /// The raster version (`<stem>.png`).
    pub png: PathBuf,
    /// The vector version (`<stem>.svg`).
    pub svg: PathBuf,
}

fn fontdb() -> Arc<usvg::fontdb::Database> {
    static DB: OnceLock<Arc<usvg::fontdb::Database>> = OnceLock::new();
    DB.get_or_init(|| {
        let mut db = usvg::fontdb::Database::new();
        db.load_font_data(dejavu::sans::regular().to_vec());
        db.load_font_data(dejavu::sans::bold().to_vec());
        db.set_sans_serif_family("DejaVu Sans");
        Arc::new(db)
    })
    .clone()
}

/// Rasterises an SVG document at [`PNG_SCALE`] and encodes it as PNG.
pub(crate) fn svg_to_png(svg: &str, png_path: &Path) -> Result<Vec<u8>> {
    let render_err = |message: String| PlotError::Render {
        path: png_path.to_path_buf(),
        message,
    };
    let opt = usvg::Options {
        font_family: "DejaVu Sans".to_string(),
        fontdb: fontdb(),
        ..usvg::Options::default()
    };
    let tree = usvg::Tree::from_str(svg, &opt).map_err(|e| render_err(e.to_string()))?;
    let size = tree.size();
    let w = (size.width() * PNG_SCALE).round() as u32;
    let h = (size.height() * PNG_SCALE).round() as u32;
    let mut pixmap =
        tiny_skia::Pixmap::new(w, h).ok_or_else(|| render_err(format!("bad size {w}x{h}")))?;
    resvg::render(
        &tree,
        tiny_skia::Transform::from_scale(PNG_SCALE, PNG_SCALE),
        &mut pixmap.as_mut(),
    );
    pixmap.encode_png().map_err(|e| render_err(e.to_string()))
}

/// Writes `fig` to `<stem>.svg` and `<stem>.png`, creating the parent directory.
pub(crate) fn write_figure(fig: &Figure, stem: &Path) -> Result<PlotFiles> {
    if let Some(dir) = stem.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err("create dir", dir))?;
    }
    let svg_path = stem.with_extension("svg");
    let png_path = stem.with_extension("png");
    let svg = fig.to_svg();
    std::fs::write(&svg_path, &svg).map_err(io_err("write", &svg_path))?;
    let png = svg_to_png(&svg, &png_path)?;
    std::fs::write(&png_path, png).map_err(io_err("write", &png_path))?;
    Ok(PlotFiles {
        png: png_path,
        svg: svg_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text alone must leave ink: the font database holds only the embedded DejaVu faces, so
    /// this fails if they were not loaded (resvg silently drops text without a font).
    #[test]
    fn text_renders_with_the_embedded_font_only() {
        let svg = r#"<svg xmlns="http://www.w3.org/2000/svg" width="120" height="40"><rect width="100%" height="100%" fill="white"/><text x="5" y="28" font-size="24" font-family="DejaVu Sans, sans-serif">Ag 10²</text></svg>"#;
        let png = svg_to_png(svg, Path::new("t.png")).unwrap();
        let decoded = tiny_skia::Pixmap::decode_png(&png).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (240, 80));
        let ink = decoded
            .pixels()
            .iter()
            .filter(|p| p.red() < 128 && p.alpha() > 0)
            .count();
        assert!(ink > 300, "only {ink} dark pixels");
        assert_eq!(fontdb().len(), 2);
    }
}
