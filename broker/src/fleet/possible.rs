//! "Could any node of this fleet hold this seat at all?" remembered for the
//! last snapshot and spec: the check is O(nodes), and a term's thousands of
//! occurrences ask it of one snapshot with one spec (decision 111).

use std::sync::{Arc, Mutex, Weak};

use classgrid_placement::{self as placement, Fleet, SeatSpec, SpecError};

/// The last answer, by snapshot (weakly: a memo must not keep an old fleet
/// alive) and spec.
#[derive(Default)]
pub struct PossibleMemo {
    last: Mutex<Option<(Weak<Fleet>, SeatSpec, Result<(), SpecError>)>>,
}

impl PossibleMemo {
    /// `placement::check_possible`, answered again without a scan for the
    /// same spec on the same snapshot.
    pub fn check(&self, fleet: &Arc<Fleet>, seat: &SeatSpec) -> Result<(), SpecError> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((f, s, answer)) = last.as_ref()
            && f.upgrade().is_some_and(|f| Arc::ptr_eq(&f, fleet))
            && s == seat
        {
            return answer.clone();
        }
        let answer = placement::check_possible(fleet, seat);
        *last = Some((Arc::downgrade(fleet), seat.clone(), answer.clone()));
        answer
    }
}
