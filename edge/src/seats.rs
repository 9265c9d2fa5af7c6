//! `classgrid-edge seats`: the site's seats as this edge last heard them from
//! the broker — what the site's agents keep running while the region is
//! unreachable. Read straight from the edge's local store, so it works with
//! the broker down and with the edge itself stopped.

use std::{path::Path, process::ExitCode};

use classgrid_edge::autonomy::{Seat, Seats};

pub async fn show(state_dir: &Path, output: &str) -> ExitCode {
    if output != "table" && output != "json" {
        eprintln!("classgrid-edge: --output: must be table or json, not `{output}`");
        return ExitCode::from(2);
    }
    let db_path = state_dir.join("edge.db");
    if !db_path.exists() {
        eprintln!(
            "classgrid-edge: no edge state at {}; pass the --state-dir that `classgrid-edge run` uses",
            db_path.display()
        );
        return ExitCode::FAILURE;
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let seats = match classgrid_edge::state::open(&db_path).await {
        Ok(db) => Seats::new(db).current(now_ms).await,
        Err(e) => {
            eprintln!("classgrid-edge: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let seats = match seats {
        Ok(s) => s,
        Err(e) => {
            eprintln!("classgrid-edge: cannot read the kept seats: {e}");
            return ExitCode::FAILURE;
        }
    };
    if output == "json" {
        println!(
            "{}",
            serde_json::json!({ "now_unix_ms": now_ms, "seats": seats })
        );
    } else {
        print!("{}", table(&seats, now_ms));
    }
    ExitCode::SUCCESS
}

fn table(seats: &[Seat], now_ms: i64) -> String {
    let mut out = format!(
        "{:<36}  {:<36}  {:>3}  {:<36}  {:<9}  ENDS IN\n",
        "LESSON", "ASSIGNMENT", "GEN", "NODE", "STATE"
    );
    for s in seats {
        let left_s = (s.ends_unix_ms - now_ms).max(0) / 1000;
        out += &format!(
            "{:<36}  {:<36}  {:>3}  {:<36}  {:<9}  {}m{:02}s\n",
            s.lesson_id,
            s.assignment_id,
            s.generation,
            s.node_id,
            s.state,
            left_s / 60,
            left_s % 60
        );
    }
    out += &format!("{} seat(s) kept for this site\n", seats.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_each_seat_and_the_time_left() {
        let seat = Seat {
            assignment_id: "a1".into(),
            generation: 3,
            node_id: "n1".into(),
            lesson_id: "l1".into(),
            ends_unix_ms: 10_000 + 125_000,
            state: "running".into(),
        };
        let t = table(&[seat], 10_000);
        let row = t.lines().nth(1).unwrap();
        assert!(row.starts_with("l1"), "{t}");
        assert!(row.contains("running") && row.ends_with("2m05s"), "{t}");
        assert!(t.ends_with("1 seat(s) kept for this site\n"), "{t}");
    }
}
