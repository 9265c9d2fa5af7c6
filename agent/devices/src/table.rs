//! Helpers shared by the parsers of the box-drawn tables that most vendor
//! tools print. Everything here works on whole `str`s and never slices by
//! byte offset, so arbitrary (even multi-byte) input cannot panic.

use crate::ParseError;

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
    let n: u32 = s.trim_end_matches('%').trim().parse().ok()?;
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

/// Rows of a table printed as two (or more) lines per device between rules,
/// like nvidia-smi, ixsmi, mx-smi and cnmon: every line that starts a device
/// (its first cell starts with a device number) is returned together with the
/// line that follows it. Scanning stops at `stop` (the process table).
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
) -> Result<Vec<RowPair<'a>>, ParseError> {
    let mut lines = text.lines().enumerate().peekable();
    let mut header_seen = false;
    let mut rows = Vec::new();
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
            return Err(ParseError::new(
                format,
                format!("device row has {} cells, expected {width}", first.len()),
            )
            .at(i + 1));
        }
        let second = match lines.next().and_then(|(_, l)| cells(l)) {
            Some(c) if c.len() >= width => c,
            _ => {
                return Err(ParseError::new(
                    format,
                    "device row is not followed by its second line (truncated output?)",
                )
                .at(i + 1));
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
        return Err(no_devices(format, text));
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
