//! A term's timetable in the console (issue 26): the import form, its
//! preview — a week grid of every class with conflicts in red and the
//! reason on hover, and the term's voucher cost — with one button that
//! commits it; and a series as a series, each occurrence linking to its
//! lesson.

use std::collections::HashMap;

use axum::{
    Form,
    extract::{FromRequest, Multipart, Path, Request, State},
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use chrono::Datelike;
use uuid::Uuid;

use super::super::{
    html::{Page, Th, error, esc, render, state_badge, table_open},
    i18n::{Lang, t},
    session::Session,
    zone,
};
use crate::{
    domain::{ServiceError, spec::Workload},
    service::{series::SeriesAnswer, timetable::TimetableAnswer},
    state::App,
    timetable::{
        sheet::{self, Upload},
        workbook,
    },
    vouchers::hours,
};

const DAYS: [(&str, &str); 7] = [
    ("周一", "Mon"),
    ("周二", "Tue"),
    ("周三", "Wed"),
    ("周四", "Thu"),
    ("周五", "Fri"),
    ("周六", "Sat"),
    ("周日", "Sun"),
];

/// The form's fields, as sent back with the preview so that the commit
/// books exactly what was previewed.
#[derive(Default)]
struct Sheet {
    csv: String,
    policy: String,
    command: String,
}

impl Sheet {
    fn of(f: &HashMap<String, String>) -> Self {
        let get = |k: &str| f.get(k).cloned().unwrap_or_default();
        Sheet {
            csv: get("csv"),
            policy: get("policy"),
            command: get("command"),
        }
    }

    fn workload(&self) -> Workload {
        let mut words = self.command.split_whitespace().map(str::to_string);
        Workload {
            command: words.next().unwrap_or_default(),
            args: words.collect(),
            ..Default::default()
        }
    }
}

fn form(l: Lang, csrf: &str, s: &Sheet) -> String {
    let selected = |p: &str| if s.policy == p { " selected" } else { "" };
    format!(
        r#"<form method="post" action="/console/timetable/import" class="stack" enctype="multipart/form-data">
<input type="hidden" name="_csrf" value="{csrf}">
<p><a href="/v1/timetable/template" download>{template}</a></p>
<label for="file"><span>{file}</span></label>
<input type="file" id="file" name="file" accept=".xlsx,.csv,text/csv,{xlsx}">
<label for="csv">{sheet}</label>
<textarea id="csv" name="csv" rows="12" cols="120" spellcheck="false">{csv}</textarea>
<label for="policy">{policy}</label>
<select id="policy" name="policy"><option value="all_or_nothing"{s_all}>{all}</option><option value="book_what_fits"{s_fit}>{fit}</option></select>
<label for="command"><span>{command}</span></label>
<input id="command" name="command" value="{cmd}" size="60">
<p><button type="submit" name="action" value="preview" id="term-preview">{preview}</button></p>
</form>"#,
        csrf = esc(csrf),
        template = t(l, "term_template"),
        file = t(l, "term_file"),
        xlsx = workbook::MEDIA_TYPE,
        sheet = t(l, "term_sheet"),
        csv = esc(&s.csv),
        policy = t(l, "term_policy"),
        s_all = selected("all_or_nothing"),
        all = t(l, "term_policy_all"),
        s_fit = selected("book_what_fits"),
        fit = t(l, "term_policy_fit"),
        command = t(l, "term_command"),
        cmd = esc(&s.command),
        preview = t(l, "term_preview"),
    )
}

/// GET: the form, with the template to start from.
pub async fn page(State(_app): State<App>, s: Session, uri: Uri) -> Response {
    let sheet = Sheet {
        csv: sheet::template(),
        policy: "all_or_nothing".into(),
        command: "jupyter lab --port $(PORT)".into(),
    };
    let body = form(s.lang, &s.csrf, &sheet);
    render(
        &s,
        zone(),
        uri.path(),
        Page::new(t(s.lang, "term_import"), "timetable", body),
    )
}

/// What the import form sent: its fields, and the file chosen, if any.
struct Sent {
    fields: HashMap<String, String>,
    file: Option<Vec<u8>>,
    /// The file went past the console's limit on a form's size: the form's
    /// later fields are not read.
    too_large: bool,
}

/// The most a console form may send, file included. A term's timetable
/// is a few hundred KB even as a workbook.
pub const MAX_FORM_BYTES: usize = 2 << 20;

/// The import form is multipart (it may carry a file); the preview's commit
/// button sends a plain form.
async fn read_form(req: Request) -> Result<Sent, String> {
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if !multipart {
        let Form(fields) = Form::<HashMap<String, String>>::from_request(req, &())
            .await
            .map_err(|e| e.body_text())?;
        return Ok(Sent {
            fields,
            file: None,
            too_large: false,
        });
    }
    let mut m = Multipart::from_request(req, &())
        .await
        .map_err(|e| e.body_text())?;
    let mut sent = Sent {
        fields: HashMap::new(),
        file: None,
        too_large: false,
    };
    // The body is bounded by the router's limit on request bodies.
    let unreadable = |e: axum::extract::multipart::MultipartError| {
        format!("the form could not be read: {}", e.body_text())
    };
    loop {
        let field = match m.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                sent.too_large = true;
                break;
            }
            Err(e) => return Err(unreadable(e)),
        };
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            let bytes = match field.bytes().await {
                Ok(b) => b,
                // Named on the form like any other bad file, not a bare 400.
                Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    sent.too_large = true;
                    break;
                }
                Err(e) => return Err(unreadable(e)),
            };
            // A form with no file chosen still sends an empty part.
            if !bytes.is_empty() {
                sent.file = Some(bytes.to_vec());
            }
        } else {
            let text = field.text().await.map_err(unreadable)?;
            sent.fields.insert(name, text);
        }
    }
    Ok(sent)
}

/// POST: the preview (a dry run), or the commit. A chosen file (an .xlsx
/// workbook or CSV) is previewed, never committed at once; its rows, as
/// CSV, replace the text so that the commit books what was previewed.
pub async fn submit(
    State(app): State<App>,
    s: Session,
    headers: HeaderMap,
    uri: Uri,
    req: Request,
) -> Response {
    let sent = match read_form(req).await {
        Ok(f) => f,
        Err(why) => return (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
    };
    let f = &sent.fields;
    // A form cut short at the size limit may not have reached its token;
    // it only gets the form back with the error, nothing is done.
    let token = f.get("_csrf").map(|v| v.as_str()).unwrap_or("");
    let checked = if sent.too_large && token.is_empty() {
        s.check_origin(&headers)
    } else {
        s.check_form(&headers, token)
    };
    if let Err(why) = checked {
        return (StatusCode::FORBIDDEN, format!("{why}\n")).into_response();
    }
    let l = s.lang;
    let mut sheet = Sheet::of(f);
    let commit = f.get("action").map(|a| a.as_str()) == Some("commit") && sent.file.is_none();
    let scoped = app.scoped(&s.caller);
    let answer = match sent.file.as_deref().map(Upload::detect) {
        _ if sent.too_large => Err(ServiceError::field(
            "file",
            format!(
                "must be at most {} MB (save only the timetable's sheet, or save it as CSV UTF-8)",
                MAX_FORM_BYTES >> 20
            ),
        )),
        Some(Ok(Upload::Xlsx(bytes))) => {
            let a = scoped
                .import_sheet(Upload::Xlsx(bytes), &sheet.workload(), &sheet.policy, true)
                .await;
            if a.is_ok() {
                if let Ok(read) = workbook::first_sheet(bytes) {
                    sheet.csv = workbook::to_csv(&read);
                }
            }
            a
        }
        Some(Ok(Upload::Csv(text))) => {
            sheet.csv = text.to_string();
            scoped
                .import_timetable(&sheet.csv, &sheet.workload(), &sheet.policy, true)
                .await
        }
        Some(Err(_)) => Err(ServiceError::field(
            "file",
            "must be an .xlsx workbook or CSV text in UTF-8 (save the sheet as .xlsx or as CSV UTF-8)",
        )),
        None => {
            scoped
                .import_timetable(&sheet.csv, &sheet.workload(), &sheet.policy, !commit)
                .await
        }
    };
    let body = match answer {
        Ok(a) if commit => booked(l, &a),
        Ok(a) => preview(l, &s.csrf, &sheet, &a),
        Err(ServiceError::Invalid(fields)) => {
            let mut o = format!(
                r#"<div class="notice error" role="alert"><p>{}</p><ul id="term-errors">"#,
                t(l, "term_bad")
            );
            for f in fields {
                o += &format!("<li>{} — {}</li>", esc(&f.field), esc(&f.rule));
            }
            o + "</ul></div>" + &form(l, &s.csrf, &sheet)
        }
        Err(e) => return error(&s, zone(), uri.path(), &e),
    };
    render(
        &s,
        zone(),
        uri.path(),
        Page::new(t(l, "term_import"), "timetable", body),
    )
}

fn summary(l: Lang, a: &TimetableAnswer) -> String {
    format!(
        r#"<p id="term-summary"><strong>{}</strong> {} · <strong>{}</strong> {} · {}: <strong id="term-cost">{}</strong></p>"#,
        a.admitted(),
        t(l, "term_fit"),
        a.occurrences() - a.admitted(),
        t(l, "term_refused"),
        t(l, "term_cost"),
        hours(a.held.amount_uah)
    )
}

/// The week grid: a row per class, a column per weekday; a cell is red
/// when any of that lesson's occurrences does not fit, with every refused
/// date and its reason on hover.
fn grid(l: Lang, a: &TimetableAnswer) -> String {
    let z = zone();
    let mut o =
        r#"<table class="grid" id="term-grid"><thead><tr><th scope="col">#</th>"#.to_string();
    o += &format!(r#"<th scope="col">{}</th>"#, t(l, "lesson"));
    for (zh, en) in DAYS {
        let d = if l == Lang::Zh { zh } else { en };
        o += &format!(r#"<th scope="col">{d}</th>"#);
    }
    o += "</tr></thead><tbody>";
    for (line, s) in &a.rows {
        let Some(first) = s.occurrences.first() else {
            continue;
        };
        let day = z.local(first.start).weekday().num_days_from_monday() as usize;
        o += &format!("<tr><td>{line}</td><td>{}</td>", esc(&s.title));
        for d in 0..7 {
            if d != day {
                o += "<td></td>";
                continue;
            }
            o += &cell(l, s);
        }
        o += "</tr>";
    }
    o + "</tbody></table>"
}

fn cell(l: Lang, s: &SeriesAnswer) -> String {
    let z = zone();
    let refused: Vec<String> = s
        .occurrences
        .iter()
        .filter(|o| !o.admitted)
        .map(|o| format!("{}: {}", z.fmt(o.start), o.reason))
        .collect();
    let at = s
        .occurrences
        .first()
        .map(|o| z.hm(o.start))
        .unwrap_or_default();
    let text = format!("{at} · {}/{}", s.admitted(), s.occurrences.len());
    if refused.is_empty() {
        format!(r#"<td class="fits">{text}</td>"#)
    } else {
        format!(
            r#"<td class="conflict" title="{}" aria-label="{} {}">{text}</td>"#,
            esc(&refused.join("\n")),
            t(l, "term_refused"),
            esc(&refused.join("; "))
        )
    }
}

fn preview(l: Lang, csrf: &str, sheet: &Sheet, a: &TimetableAnswer) -> String {
    let mut o = format!("<h2>{}</h2>", t(l, "term_preview"));
    o += &summary(l, a);
    o += &grid(l, a);
    o += &format!(
        r#"<form method="post" action="/console/timetable/import"><input type="hidden" name="_csrf" value="{}"><input type="hidden" name="csv" value="{}"><input type="hidden" name="policy" value="{}"><input type="hidden" name="command" value="{}"><button type="submit" name="action" value="commit" id="term-commit">{}</button></form>"#,
        esc(csrf),
        esc(&sheet.csv),
        esc(&sheet.policy),
        esc(&sheet.command),
        t(l, "term_commit")
    );
    o + &form(l, csrf, sheet)
}

fn booked(l: Lang, a: &TimetableAnswer) -> String {
    let mut o = format!("<h2>{}</h2>", t(l, "term_booked"));
    o += &summary(l, a);
    o += &table_open(
        Some("term-series"),
        &[
            Th::Num("#"),
            Th::Text(t(l, "lesson")),
            Th::Text(t(l, "series")),
            Th::Num(t(l, "term_fit")),
        ],
    );
    for (line, s) in &a.rows {
        let link = s
            .series
            .as_ref()
            .map(|r| {
                format!(
                    r#"<a href="/console/series/{}">{}</a>"#,
                    r.id,
                    esc(&r.rrule)
                )
            })
            .unwrap_or_default();
        o += &format!(
            r#"<tr><td class="num">{line}</td><td>{}</td><td>{link}</td><td class="num">{}/{}</td></tr>"#,
            esc(&s.title),
            s.admitted(),
            s.occurrences.len()
        );
    }
    o + "</tbody></table>"
}

/// A series as a series: its rule and term, and each occurrence linking to
/// its lesson.
pub async fn series(
    State(app): State<App>,
    s: Session,
    uri: Uri,
    Path(id): Path<String>,
) -> Response {
    let (l, z) = (s.lang, zone());
    let found = match id.parse::<Uuid>() {
        Ok(id) => app.scoped(&s.caller).series(id).await,
        Err(_) => Err(ServiceError::field("id", "must be a series id (a UUID)")),
    };
    let v = match found {
        Ok(v) => v,
        Err(e) => return error(&s, z, uri.path(), &e),
    };
    let r = &v.series;
    let mut o = format!(
        r#"<p>{} · {} · <code>{}</code> {} · {} – {}</p>"#,
        esc(&r.school_site),
        esc(&r.title),
        esc(&r.rrule),
        r.start_time.format("%H:%M"),
        r.term_start,
        r.term_end
    );
    o += &table_open(
        Some("series-occurrences"),
        &[
            Th::Text(t(l, "occurrence")),
            Th::Text(t(l, "lesson")),
            Th::Text(t(l, "state")),
            Th::Text(t(l, "reason")),
        ],
    );
    for occ in &v.occurrences {
        let lesson = occ
            .lesson_id
            .map(|id| {
                let at = occ.lesson_start.map(|t| z.fmt(t)).unwrap_or_default();
                format!(r#"<a href="/console/lessons/{id}">{at}</a>"#)
            })
            .unwrap_or_default();
        o += &format!(
            "<tr><td>{}</td><td>{lesson}</td><td>{}</td><td>{}</td></tr>",
            z.fmt(occ.rule_start),
            occ.lesson_state
                .as_deref()
                .map(|st| state_badge(l, st))
                .unwrap_or_default(),
            esc(&occ.reason)
        );
    }
    o += "</tbody></table>";
    render(
        &s,
        z,
        uri.path(),
        Page::new(format!("{} {}", t(l, "series"), r.title), "timetable", o),
    )
}
