//! The calendar is free for the window: at least one seat fits beside the
//! peak use of overlapping reservations (preemptible ones count as free when
//! the request may preempt). Leaves the node's free capacity in the flat
//! arrays the seats are assigned from.

use super::{Candidate, Ctx, Filter, Verdict, Work};
use crate::capacity::{capacity_slots, free_slots};

pub(crate) struct CalendarFree;

impl Filter for CalendarFree {
    fn name(&self) -> &'static str {
        "calendar"
    }

    fn check<'a>(&self, ctx: &Ctx<'a>, cand: &mut Candidate<'a>, work: &mut Work<'a>) -> Verdict {
        let node = cand.node;
        let window = ctx.req.window;
        work.rows.clear();
        work.rows.extend(ctx.calendar.overlapping(node.id, window));
        work.sweep.run(node, &work.rows, window, |_| false);
        capacity_slots(node, &mut work.cap);

        let start = work.free_all.len();
        let mut tmp = std::mem::take(&mut work.rows_free);
        free_slots(&work.cap, &work.sweep.peak_all, &mut tmp);
        work.free_all.extend_from_slice(&tmp);
        let peak = if ctx.preempt {
            &work.sweep.peak_hard
        } else {
            &work.sweep.peak_all
        };
        free_slots(&work.cap, peak, &mut tmp);
        work.free_pre.extend_from_slice(&tmp);
        work.rows_free = tmp;
        let end = work.free_all.len();

        let cap = ctx.req.seats;
        cand.fits = ctx
            .need
            .seats_in(&work.free_pre[start..end], cand.usable, cap);
        if cand.fits == 0 {
            work.free_all.truncate(start);
            work.free_pre.truncate(start);
            return Verdict::Fail("");
        }
        cand.slots = start..end;
        Verdict::Pass
    }

    fn detail(&self, _: &Ctx<'_>, _: &[(&'static str, u32)]) -> String {
        "calendar busy".into()
    }
}
