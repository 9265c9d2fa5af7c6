//! Server-side SVG plots, drawn from real rows. SVG attributes (not inline
//! styles) carry every position, so the strict Content-Security-Policy
//! holds; each plot has a text alternative for screen readers.

use super::html::esc;

pub const COLOURS: &[&str] = &[
    "#1f5fa8", "#b3471d", "#2e7d32", "#6a3d9a", "#8a6d00", "#00796b", "#ad1457", "#455a64",
];

pub struct Series {
    pub label: String,
    /// (x in seconds, y)
    pub points: Vec<(f64, f64)>,
}

/// A line plot over `[x0, x1]` with y in `[0, y_max]`; `xfmt` labels ticks.
pub fn lines(
    alt: &str,
    series: &[Series],
    x0: f64,
    x1: f64,
    y_max: f64,
    y_unit: &str,
    xfmt: &dyn Fn(f64) -> String,
) -> String {
    let (w, h, left, bottom, top, right) = (720.0, 220.0, 44.0, 24.0, 10.0, 10.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let span = (x1 - x0).max(1.0);
    let sx = |x: f64| left + (x - x0) / span * pw;
    let sy = |y: f64| top + ph - (y / y_max.max(1e-9)).clamp(0.0, 1.0) * ph;
    let mut o = format!(
        r#"<svg class="plot" viewBox="0 0 {w} {h}" role="img" aria-label="{}"><title>{}</title>"#,
        esc(alt),
        esc(alt)
    );
    for i in 0..=4 {
        let v = y_max * i as f64 / 4.0;
        let y = sy(v);
        o += &format!(
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ccd" stroke-width="1"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end" fill="#333">{}{}</text>"##,
            w - right,
            left - 4.0,
            y + 4.0,
            v.round(),
            esc(y_unit)
        );
    }
    for i in 0..=6 {
        let x = x0 + span * i as f64 / 6.0;
        o += &format!(
            r##"<text x="{:.1}" y="{}" font-size="11" text-anchor="middle" fill="#333">{}</text>"##,
            sx(x),
            h - 6.0,
            esc(&xfmt(x))
        );
    }
    for (i, s) in series.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        if pts.len() == 1 {
            o += &format!(
                r#"<circle cx="{}" r="3" fill="{c}"/>"#,
                pts[0].replace(',', "\" cy=\"")
            );
        } else {
            o += &format!(
                r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"><title>{}</title></polyline>"#,
                pts.join(" "),
                esc(&s.label)
            );
        }
    }
    o += "</svg>";
    o += &legend(series.iter().map(|s| s.label.as_str()));
    o
}

pub fn legend<'a>(labels: impl Iterator<Item = &'a str>) -> String {
    let items: String = labels
        .enumerate()
        .map(|(i, l)| {
            format!(
                r#"<li><svg width="14" height="10" aria-hidden="true"><rect width="14" height="10" fill="{}"/></svg> {}</li>"#,
                COLOURS[i % COLOURS.len()],
                esc(l)
            )
        })
        .collect();
    format!(r#"<ul class="legend">{items}</ul>"#)
}

/// Horizontal bars, one per (label, value); values share one scale.
pub fn bars(alt: &str, rows: &[(String, f64)], unit: &str) -> String {
    let max = rows.iter().map(|r| r.1).fold(0.0, f64::max).max(1e-9);
    let h = 24.0 * rows.len().max(1) as f64 + 8.0;
    let mut o = plot_open(alt, h);
    for (i, (label, v)) in rows.iter().enumerate() {
        let y = 4.0 + 24.0 * i as f64;
        let bw = (v / max * 440.0).max(1.0);
        o += &format!(
            r##"<text x="150" y="{:.1}" font-size="12" text-anchor="end" fill="#222">{}</text><rect x="158" y="{y:.1}" width="{bw:.1}" height="16" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="12" fill="#222">{:.2} {}</text>"##,
            y + 12.0,
            esc(label),
            COLOURS[0],
            164.0 + bw,
            y + 12.0,
            v,
            esc(unit)
        );
    }
    o + "</svg>"
}

/// Horizontal bars of a whole (light) with the part of it in use drawn
/// over it (dark), one per (label, whole, part); all share one scale.
pub fn part_bars(alt: &str, rows: &[(String, f64, f64)], unit: &str, part_label: &str) -> String {
    let max = rows.iter().map(|r| r.1).fold(0.0, f64::max).max(1e-9);
    let h = 24.0 * rows.len().max(1) as f64 + 8.0;
    let mut o = plot_open(alt, h);
    for (i, (label, whole, part)) in rows.iter().enumerate() {
        let y = 4.0 + 24.0 * i as f64;
        let bw = (whole / max * 400.0).max(1.0);
        let pw = (part / max * 400.0).clamp(0.0, bw);
        o += &format!(
            r##"<text x="150" y="{:.1}" font-size="12" text-anchor="end" fill="#222">{}</text><rect x="158" y="{y:.1}" width="{bw:.1}" height="16" fill="{c}" fill-opacity="0.3"/><rect x="158" y="{y:.1}" width="{pw:.1}" height="16" fill="{c}"/><text x="{:.1}" y="{:.1}" font-size="12" fill="#222">{:.0} {u} · {:.0} {u} {}</text>"##,
            y + 12.0,
            esc(label),
            164.0 + bw,
            y + 12.0,
            whole,
            part,
            esc(part_label),
            c = COLOURS[0],
            u = esc(unit),
        );
    }
    o + "</svg>"
}

/// A 720-wide plot's opening tag, named for screen readers.
fn plot_open(alt: &str, h: f64) -> String {
    format!(
        r#"<svg class="plot" viewBox="0 0 720 {h}" role="img" aria-label="{}"><title>{}</title>"#,
        esc(alt),
        esc(alt)
    )
}
