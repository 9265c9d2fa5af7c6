//! The site's seats' desired state, kept in the edge's local store so that
//! it survives the edge's own restart and an unreachable broker. The broker
//! sends the full list on every sync; the edge replaces its copy only then,
//! so while the region is gone the last known intent stays: which
//! assignments (id, generation) run on which node, and until when.
//!
//! The agents act on it themselves (they keep running seats, restart a seat
//! whose process died within its reservation, and stop it at its end time);
//! the edge's copy is what `classgrid-edge seats` shows and what a
//! reconnecting agent behind the site can be checked against.

use classgrid_proto::v1 as pb;
use sqlx::SqlitePool;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Seat {
    pub assignment_id: String,
    pub generation: i64,
    pub node_id: String,
    pub lesson_id: String,
    pub ends_unix_ms: i64,
    pub state: String,
}

#[derive(Clone)]
pub struct Seats {
    db: SqlitePool,
}

impl Seats {
    pub fn new(db: SqlitePool) -> Self {
        Self { db }
    }

    /// Replaces the kept intent with the broker's current list, in one
    /// transaction: a crash leaves the old list or the new one.
    pub async fn replace(&self, seats: &[pb::SeatIntent]) -> sqlx::Result<()> {
        let mut tx = self.db.begin().await?;
        sqlx::query("DELETE FROM seats").execute(&mut *tx).await?;
        for s in seats {
            sqlx::query(
                "INSERT OR REPLACE INTO seats (assignment_id, generation, node_id, lesson_id, ends_unix_ms, state)
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&s.assignment_id)
            .bind(s.generation)
            .bind(&s.node_id)
            .bind(&s.lesson_id)
            .bind(s.ends_unix_ms)
            .bind(&s.state)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// The kept intent; seats whose end has passed are left out, since no
    /// one may run them any longer, with or without the broker.
    pub async fn current(&self, now_unix_ms: i64) -> sqlx::Result<Vec<Seat>> {
        let rows: Vec<(String, i64, String, String, i64, String)> = sqlx::query_as(
            "SELECT assignment_id, generation, node_id, lesson_id, ends_unix_ms, state FROM seats
             WHERE ends_unix_ms > ? ORDER BY lesson_id, assignment_id",
        )
        .bind(now_unix_ms)
        .fetch_all(&self.db)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(assignment_id, generation, node_id, lesson_id, ends_unix_ms, state)| Seat {
                    assignment_id,
                    generation,
                    node_id,
                    lesson_id,
                    ends_unix_ms,
                    state,
                },
            )
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn seat_intent_survives_an_edge_restart_and_drops_ended_seats() {
        let dir = std::env::temp_dir().join(format!("cg-edge-seats-{}", rand::random::<u64>()));
        let db = crate::state::open(&dir.join("edge.db")).await.unwrap();
        let seat = |id: &str, ends| pb::SeatIntent {
            assignment_id: id.into(),
            generation: 2,
            node_id: "n1".into(),
            lesson_id: "l1".into(),
            ends_unix_ms: ends,
            state: "running".into(),
        };
        Seats::new(db)
            .replace(&[seat("a", 2000), seat("b", 500)])
            .await
            .unwrap();
        let db = crate::state::open(&dir.join("edge.db")).await.unwrap();
        let kept = Seats::new(db).current(1000).await.unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(
            (kept[0].assignment_id.as_str(), kept[0].generation),
            ("a", 2)
        );
    }
}
