//! Helpers shared by the parsers of the box-drawn tables that most vendor
//! tools print. Everything here works on whole `str`s and never slices by
//! byte offset, so arbitrary (even multi-byte) input cannot panic.

use crate::{Device, ParseError, ParseWarning, Parsed};

/// The cells of a `| a | b | c |` line, trimmed; `None` when the line is not a
/// row of cells (a rule like `+----+` or `|=====|`, or plain text).
pub(crate) fn cells(line: &str) -> Option<Vec<&str>> {
    let t = line.trim();
    let inner = t.strip_prefix('|')?;
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    if inner
        .chars()
        .all(|c| matches!(c, '=' | '-' | '+' | '|' | ' '))
    {
        return None;
    }
    Some(inner.split('|').map(str::trim).collect())
}

/// True for values that the tools print when they do not know: `N/A`, `[N/A]`,
/// `NA`, `-`, or nothing.
pub(crate) fn is_na(s: &str) -> bool {
    let s = s.trim();
    s.is_empty()
        || s.eq_ignore_ascii_case("n/a")
        || s.eq_ignore_ascii_case("[n/a]")
        || s.eq_ignore_ascii_case("na")
        || s == "-"
        || s.eq_ignore_ascii_case("[not supported]")
        || s.eq_ignore_ascii_case("not supported")
}

/// A plain unsigned number, or `None` for an unknown marker.
pub(crate) fn num(s: &str) -> Option<u64> {
    s.trim().parse().ok()
}

/// A percentage like `0%`, `100 %` or `7`; `None` when unknown.
pub(crate) fn percent(s: &str) -> Option<u32> {
    let s = s.trim();
    if is_na(s) {
        return None;
    }
    let s = s.trim_end_matches('%').trim();
    // hy-smi of DTK 25.04 and later prints `0.0%`.
    let n: u32 = match s.parse() {
        Ok(n) => n,
        Err(_) => {
            let f: f64 = s
                .parse()
                .ok()
                .filter(|f: &f64| f.is_finite() && *f >= 0.0)?;
            f.round().min(100.0) as u32
        }
    };
    Some(n.min(100))
}

/// A memory size in MiB from `81559 MiB`, `116MiB`, `858` or `1 GiB`.
pub(crate) fn mib(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    match unit.trim() {
        "" | "MiB" | "MB" | "M" | "m" => Some(n),
        "GiB" | "GB" | "G" | "g" => n.checked_mul(1024),
        "KiB" | "KB" => Some(n / 1024),
        "B" => Some(n / (1024 * 1024)),
        _ => None,
    }
}

/// `used / total` in MiB from strings like `116MiB / 32768MiB`,
/// `858/65536 MiB`, `0 MiB/ 23374 MiB` or `3317 / 65536`.
pub(crate) fn used_total(s: &str) -> Option<(u64, u64)> {
    let (used, total) = s.split_once('/')?;
    let total = total.trim();
    let used = used.trim();
    let total_v = mib(total)?;
    // `858/65536 MiB` carries the unit only after the total.
    let used_v = mib(used).or_else(|| {
        let unit = total
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim();
        mib(&format!("{used}{unit}"))
    })?;
    Some((used_v, total_v))
}

/// The `used / total` memory cell of a device's second line, or the error
/// that names it.
pub(crate) fn memory_cell(
    format: &'static str,
    cell: &str,
    line: usize,
) -> Result<(u64, u64), ParseError> {
    used_total(cell).ok_or_else(|| {
        ParseError::new(format, format!("not a memory usage: {cell:?}"))
            .at(line)
            .field("Memory-Usage")
    })
}

/// Error for input that holds no device at all.
pub(crate) fn no_devices(format: &'static str, text: &str) -> ParseError {
    if text.trim().is_empty() {
        ParseError::new(format, "empty output")
    } else {
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let shown: String = first.trim().chars().take(80).collect();
        ParseError::new(
            format,
            format!("no device rows found (first line: {shown:?})"),
        )
    }
}

/// True for a rule line such as `+----+`, `|=====|` or `-------`.
pub(crate) fn is_rule(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty()
        && t.chars().any(|c| matches!(c, '-' | '='))
        && t.chars().all(|c| matches!(c, '=' | '-' | '+' | '|' | ' '))
}

/// The warning for an output that does not end the way the tool always ends
/// it: `marker` is a line of its closing section (the process table, or an
/// end-of-log line). When `needs_rule` is set, the last ruled or `|` line
/// after the marker must be a rule (the table's closing border).
///
/// An output cut off exactly at a row boundary parses without an error, so
/// this is the only sign that devices may be missing.
pub(crate) fn truncation(
    format: &'static str,
    text: &str,
    marker: &str,
    needs_rule: bool,
    devices: usize,
) -> Option<ParseWarning> {
    let lines: Vec<&str> = text.lines().collect();
    let marker_at = lines.iter().position(|l| l.contains(marker));
    let closed = marker_at.is_some_and(|m| {
        !needs_rule
            || lines[m..]
                .iter()
                .rev()
                .find(|l| is_rule(l) || l.trim_start().starts_with('|'))
                .is_some_and(|l| is_rule(l))
    });
    if closed {
        return None;
    }
    let (last_no, last) = lines
        .iter()
        .enumerate()
        .rev()
        .find(|(_, l)| !l.trim().is_empty())
        .map_or((0, ""), |(i, l)| (i + 1, *l));
    let what = if marker_at.is_none() {
        format!("before its closing section (no line containing {marker:?})")
    } else {
        "without its closing border".to_string()
    };
    Some(
        ParseWarning::new(
            format,
            format!(
                "the output is truncated: it stops {what}, so only the {devices} device(s) above this line were read and more may be missing"
            ),
        )
        .at(last_no, last),
    )
}

/// The result of a parser whose rows were read one by one: the devices, or,
/// when no row could be read, the first row's error (else "no devices").
pub(crate) fn finish(
    format: &'static str,
    text: &str,
    devices: Vec<Device>,
    warnings: Vec<ParseWarning>,
    first_error: Option<ParseError>,
) -> Result<Parsed, ParseError> {
    if devices.is_empty() {
        return Err(first_error.unwrap_or_else(|| no_devices(format, text)));
    }
    Ok(Parsed::new(devices, warnings))
}

/// A row error becomes a warning that names the row; the first one is kept
/// for when no row at all can be read.
pub(crate) fn skip_row(
    e: ParseError,
    text: &str,
    warnings: &mut Vec<ParseWarning>,
    first_error: &mut Option<ParseError>,
) {
    let line = e.line.unwrap_or(0);
    let row = text.lines().nth(line.saturating_sub(1)).unwrap_or("");
    let mut msg = format!("skipped this device: {}", e.message);
    if let Some(f) = &e.field {
        msg.push_str(&format!(" (field `{f}`)"));
    }
    let w = ParseWarning::new(e.format, msg);
    warnings.push(if line > 0 { w.at(line, row) } else { w });
    first_error.get_or_insert(e);
}

/// Rows of a table printed as two (or more) lines per device between rules,
/// like ixsmi, mx-smi and cnmon: every line that starts a device (its first
/// cell starts with a device number) is returned together with the line that
/// follows it. Scanning stops at `stop` (the process table). A device line
/// that is short, or not followed by its second line, is skipped with a
/// warning; with no row at all the result is an error.
pub(crate) struct RowPair<'a> {
    pub line_no: usize,
    pub first: Vec<&'a str>,
    pub second: Vec<&'a str>,
}

pub(crate) fn row_pairs<'a>(
    format: &'static str,
    text: &'a str,
    header_marker: &str,
    stop: &str,
    width: usize,
    warnings: &mut Vec<ParseWarning>,
) -> Result<Vec<RowPair<'a>>, ParseError> {
    let mut lines = text.lines().enumerate().peekable();
    let mut header_seen = false;
    let mut rows = Vec::new();
    let mut first_error = None;
    while let Some((i, line)) = lines.next() {
        if line.contains(stop) {
            break;
        }
        if !header_seen {
            header_seen = line.contains(header_marker);
            continue;
        }
        let Some(first) = cells(line) else { continue };
        let starts_device = first
            .first()
            .and_then(|c| c.split_whitespace().next())
            .is_some_and(|t| t.parse::<u32>().is_ok());
        if !starts_device {
            continue;
        }
        if first.len() < width {
            let e = ParseError::new(
                format,
                format!("device row has {} cells, expected {width}", first.len()),
            )
            .at(i + 1);
            skip_row(e, text, warnings, &mut first_error);
            continue;
        }
        let second = match lines.peek().and_then(|(_, l)| cells(l)) {
            Some(c) if c.len() >= width => {
                lines.next();
                c
            }
            _ => {
                let e = ParseError::new(
                    format,
                    "device row is not followed by its second line (truncated output?)",
                )
                .at(i + 1);
                skip_row(e, text, warnings, &mut first_error);
                continue;
            }
        };
        rows.push(RowPair {
            line_no: i + 1,
            first,
            second,
        });
    }
    if !header_seen {
        return Err(ParseError::new(
            format,
            format!("table header containing {header_marker:?} not found"),
        ));
    }
    if rows.is_empty() {
        return Err(first_error.unwrap_or_else(|| no_devices(format, text)));
    }
    Ok(rows)
}

/// Splits `0    Iluvatar BI-V150` into the device number and the rest.
pub(crate) fn index_and_name(
    format: &'static str,
    cell: &str,
    line: usize,
) -> Result<(u32, String), ParseError> {
    let mut parts = cell.splitn(2, char::is_whitespace);
    let idx = parts
        .next()
        .and_then(|s| s.parse::<u32>().ok())
        .ok_or_else(|| {
            ParseError::new(format, "device number is not a number")
                .at(line)
                .field("index")
        })?;
    let name = parts.next().unwrap_or("").trim().to_string();
    if name.is_empty() {
        return Err(ParseError::new(format, "device name is empty")
            .at(line)
            .field("name"));
    }
    Ok((idx, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_pairs() {
        assert_eq!(used_total("116MiB / 32768MiB"), Some((116, 32768)));
        assert_eq!(used_total("858/65536 MiB"), Some((858, 65536)));
        assert_eq!(used_total("0 MiB/ 23374 MiB"), Some((0, 23374)));
        assert_eq!(used_total("35552/ 44278"), Some((35552, 44278)));
        assert_eq!(used_total("0 MiB/ xxxxx MiB"), None);
        assert_eq!(mib("1 GiB"), Some(1024));
        assert_eq!(percent("100 %"), Some(100));
        assert_eq!(percent("[N/A]"), None);
    }
}
