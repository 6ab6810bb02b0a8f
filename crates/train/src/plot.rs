//! `loss.png`: train and validation loss against step, drawn without any font or plotting
//! dependency (a 5×7 bitmap font covers the few characters the axes need), so the plot is
//! written on any machine, headless CI included.

use crate::{error::io, Error, Result};
use std::path::Path;

const W: usize = 800;
const H: usize = 500;
const LEFT: usize = 70;
const RIGHT: usize = 20;
const TOP: usize = 30;
const BOTTOM: usize = 45;

type Rgb = [u8; 3];
const BLUE: Rgb = [31, 119, 180];
const ORANGE: Rgb = [255, 127, 14];
const GREY: Rgb = [200, 200, 200];
const BLACK: Rgb = [0, 0, 0];

struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn new() -> Self {
        Self {
            px: vec![255; W * H * 3],
        }
    }

    fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < W && (y as usize) < H {
            let i = (y as usize * W + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn dot(&mut self, x: i64, y: i64, r: i64, c: Rgb) {
        for dy in -r..=r {
            for dx in -r..=r {
                if dx * dx + dy * dy <= r * r {
                    self.set(x + dx, y + dy, c);
                }
            }
        }
    }

    /// Bresenham line, `thick` pixels wide.
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb, thick: i64) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            for t in 0..thick {
                self.set(x, y + t, c);
                self.set(x + t, y, c);
            }
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Text at (x, y) top-left, 5×7 glyphs scaled by 2.
    fn text(&mut self, x: i64, y: i64, s: &str, c: Rgb) {
        for (i, ch) in s.chars().enumerate() {
            let rows = glyph(ch);
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits & (1 << (4 - col)) != 0 {
                        let (px, py) = (x + (i as i64) * 12 + col * 2, y + r as i64 * 2);
                        for (a, b) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                            self.set(px + a, py + b, c);
                        }
                    }
                }
            }
        }
    }
}

fn text_width(s: &str) -> i64 {
    s.chars().count() as i64 * 12
}

/// 5×7 glyphs, one byte per row, bit 4 = leftmost column.
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [14, 17, 19, 21, 25, 17, 14],
        '1' => [4, 12, 4, 4, 4, 4, 14],
        '2' => [14, 17, 1, 2, 4, 8, 31],
        '3' => [31, 2, 4, 2, 1, 17, 14],
        '4' => [2, 6, 10, 18, 31, 2, 2],
        '5' => [31, 16, 30, 1, 1, 17, 14],
        '6' => [6, 8, 16, 30, 17, 17, 14],
        '7' => [31, 1, 2, 4, 8, 8, 8],
        '8' => [14, 17, 17, 14, 17, 17, 14],
        '9' => [14, 17, 17, 15, 1, 2, 12],
        '.' => [0, 0, 0, 0, 0, 12, 12],
        '-' => [0, 0, 0, 31, 0, 0, 0],
        '+' => [0, 4, 4, 31, 4, 4, 0],
        'a' => [0, 0, 14, 1, 15, 17, 15],
        'e' => [0, 0, 14, 17, 31, 16, 14],
        'i' => [4, 0, 12, 4, 4, 4, 14],
        'l' => [12, 4, 4, 4, 4, 4, 14],
        'n' => [0, 0, 22, 25, 17, 17, 17],
        'o' => [0, 0, 14, 17, 17, 17, 14],
        'p' => [0, 0, 30, 17, 30, 16, 16],
        'r' => [0, 0, 22, 25, 16, 16, 16],
        's' => [0, 0, 15, 16, 14, 1, 30],
        't' => [8, 8, 28, 8, 8, 9, 6],
        'v' => [0, 0, 17, 17, 17, 10, 4],
        _ => [0; 7],
    }
}

fn fmt_tick(v: f64) -> String {
    if v.abs() >= 1000.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Plots a run's `metrics.jsonl` to `out`: the `"train"` records' `loss` and the validation
/// records (`val_kind`, `val_key`: `("val", "val_loss")` for `train`, `("eval", "eval_loss")`
/// for `finetune`). Nothing is written while the log has neither.
pub fn write_run_losses(
    metrics: &Path,
    out: &Path,
    (val_kind, val_key): (&str, &str),
) -> Result<()> {
    let records = crate::metrics::read_records(metrics)?;
    let train = crate::metrics::series(&records, "train", "loss");
    let val = crate::metrics::series(&records, val_kind, val_key);
    if train.is_empty() && val.is_empty() {
        return Ok(());
    }
    write_loss_png(out, &train, &val)
}

/// Draws the curves and writes a PNG (temporary file, then rename).
pub fn write_loss_png(path: &Path, train: &[(f64, f64)], val: &[(f64, f64)]) -> Result<()> {
    let all = train.iter().chain(val).filter(|(_, y)| y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return Err(Error::Config("no finite loss values to plot".into()));
    }
    if x1 - x0 < 1.0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-3);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let (pw, ph) = ((W - LEFT - RIGHT) as f64, (H - TOP - BOTTOM) as f64);
    let map = |x: f64, y: f64| -> (i64, i64) {
        let px = LEFT as f64 + (x - x0) / (x1 - x0) * pw;
        let py = TOP as f64 + (1.0 - (y - y0) / (y1 - y0)) * ph;
        (px.round() as i64, py.round() as i64)
    };
    let mut c = Canvas::new();
    for i in 0..=5 {
        let f = i as f64 / 5.0;
        let (gx, _) = map(x0 + f * (x1 - x0), y0);
        let (_, gy) = map(x0, y0 + f * (y1 - y0));
        c.line((gx, TOP as i64), (gx, (H - BOTTOM) as i64), GREY, 1);
        c.line((LEFT as i64, gy), ((W - RIGHT) as i64, gy), GREY, 1);
        let xl = fmt_tick(x0 + f * (x1 - x0));
        c.text(
            gx - text_width(&xl) / 2,
            (H - BOTTOM + 8) as i64,
            &xl,
            BLACK,
        );
        let yl = fmt_tick(y0 + f * (y1 - y0));
        c.text(LEFT as i64 - 6 - text_width(&yl), gy - 7, &yl, BLACK);
    }
    let (l, b) = (LEFT as i64, (H - BOTTOM) as i64);
    c.line((l, TOP as i64), (l, b), BLACK, 1);
    c.line((l, b), ((W - RIGHT) as i64, b), BLACK, 1);
    c.text((W / 2) as i64 - 24, (H - 16) as i64, "step", BLACK);
    c.text(8, 8, "loss", BLACK);
    for (series, color, thick) in [(train, BLUE, 1), (val, ORANGE, 2)] {
        let pts: Vec<(i64, i64)> = series
            .iter()
            .filter(|(_, y)| y.is_finite())
            .map(|&(x, y)| map(x, y))
            .collect();
        for w in pts.windows(2) {
            c.line(w[0], w[1], color, thick);
        }
        if color == ORANGE {
            for &(x, y) in &pts {
                c.dot(x, y, 3, color);
            }
        }
    }
    c.line(((W - 190) as i64, 16), ((W - 160) as i64, 16), BLUE, 2);
    c.text((W - 152) as i64, 9, "train", BLACK);
    c.line(((W - 90) as i64, 16), ((W - 60) as i64, 16), ORANGE, 2);
    c.text((W - 52) as i64, 9, "val", BLACK);

    let tmp = path.with_extension("png.tmp");
    {
        let f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        let mut enc = png::Encoder::new(std::io::BufWriter::new(f), W as u32, H as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let png_err = |e: png::EncodingError| Error::Config(format!("{}: {e}", tmp.display()));
        let mut w = enc.write_header().map_err(png_err)?;
        w.write_image_data(&c.px).map_err(png_err)?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    #[test]
    fn writes_a_png() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("loss.png");
        let train: Vec<(f64, f64)> = (0..50)
            .map(|i| (i as f64, 8.0 - (i as f64).sqrt()))
            .collect();
        super::write_loss_png(&p, &train, &[(0.0, 8.0), (49.0, 2.5)]).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(super::write_loss_png(&p, &[], &[]).is_err());
    }
}
