//! Free capacity over a window, in plain arrays.
//!
//! For each candidate node the calendar filter computes, per device and for
//! the node's cpu/memory, the *peak* use over the request window by sweeping
//! the overlapping reservations. Each dimension (gpu memory, compute, slice
//! count, cpu, memory) is checked on its own, so the per-dimension peak is
//! exact, not merely conservative: a seat fits over the whole window iff for
//! every dimension `peak + need <= capacity`.

use crate::model::{Node, Reservation, Window};

/// Use or free amount of one slot: a device (gpu fields) or the node itself
/// (cpu and memory).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Amount {
    pub cpu: u64,
    pub mem: u64,
    pub gmem: u64,
    pub compute: u32,
    pub slices: u32,
}

impl Amount {
    fn add(&mut self, o: &Amount) {
        self.cpu += o.cpu;
        self.mem += o.mem;
        self.gmem += o.gmem;
        self.compute += o.compute;
        self.slices += o.slices;
    }
    fn sub(&mut self, o: &Amount) {
        self.cpu = self.cpu.saturating_sub(o.cpu);
        self.mem = self.mem.saturating_sub(o.mem);
        self.gmem = self.gmem.saturating_sub(o.gmem);
        self.compute = self.compute.saturating_sub(o.compute);
        self.slices = self.slices.saturating_sub(o.slices);
    }
    fn max_with(&mut self, o: &Amount) {
        self.cpu = self.cpu.max(o.cpu);
        self.mem = self.mem.max(o.mem);
        self.gmem = self.gmem.max(o.gmem);
        self.compute = self.compute.max(o.compute);
        self.slices = self.slices.max(o.slices);
    }
}

/// Capacity of each slot when empty: devices first (by position), the node last.
pub(crate) fn capacity_slots(node: &Node, out: &mut Vec<Amount>) {
    out.clear();
    out.extend(node.devices.iter().map(|d| Amount {
        gmem: d.memory_mib,
        compute: 100,
        // A device reporting 0 slices still takes one whole-device seat.
        slices: d.max_slices.max(1),
        ..Amount::default()
    }));
    out.push(Amount {
        cpu: node.cpu_millis as u64,
        mem: node.memory_mib,
        ..Amount::default()
    });
}

/// Reusable buffers so the sweep allocates nothing per node.
#[derive(Default)]
pub(crate) struct Sweep {
    events: Vec<(i64, bool, u32)>,
    cur_all: Vec<Amount>,
    cur_hard: Vec<Amount>,
    pub peak_all: Vec<Amount>,
    pub peak_hard: Vec<Amount>,
    slot_of: Vec<Option<usize>>,
}

impl Sweep {
    /// Peak use per slot over `window`, for all rows (`peak_all`) and for the
    /// rows that cannot be preempted (`peak_hard`). Rows with `skip` true are
    /// ignored, which lets preemption ask "what if this owner left?".
    pub fn run(
        &mut self,
        node: &Node,
        rows: &[&Reservation],
        window: Window,
        skip: impl Fn(&Reservation) -> bool,
    ) {
        let n = node.devices.len() + 1;
        for v in [
            &mut self.cur_all,
            &mut self.cur_hard,
            &mut self.peak_all,
            &mut self.peak_hard,
        ] {
            v.clear();
            v.resize(n, Amount::default());
        }
        self.slot_of.clear();
        self.events.clear();
        for (i, r) in rows.iter().enumerate() {
            // A row for a device the node no longer reports holds nothing we can place on.
            let slot = match r.device_index {
                Some(ix) => node.devices.iter().position(|d| d.index == ix),
                None => None,
            };
            self.slot_of.push(slot);
            if skip(r) || !r.window.overlaps(&window) {
                continue;
            }
            self.events
                .push((r.window.start.max(window.start), true, i as u32));
            self.events
                .push((r.window.end.min(window.end), false, i as u32));
        }
        if self.events.is_empty() {
            return;
        }
        // Common case for lesson-length windows: every row is running at one
        // shared instant, so the peak is simply the sum and no sort is needed.
        let (mut last_start, mut first_end) = (i64::MIN, i64::MAX);
        for &(t, start, _) in &self.events {
            if start {
                last_start = last_start.max(t);
            } else {
                first_end = first_end.min(t);
            }
        }
        if last_start < first_end {
            for &(_, start, i) in &self.events {
                if !start {
                    continue;
                }
                let r = rows[i as usize];
                let (node_part, dev_part) = split(r);
                let slot = self.slot_of[i as usize];
                self.peak_all[n - 1].add(&node_part);
                if let Some(s) = slot {
                    self.peak_all[s].add(&dev_part);
                }
                if !r.preemptible {
                    self.peak_hard[n - 1].add(&node_part);
                    if let Some(s) = slot {
                        self.peak_hard[s].add(&dev_part);
                    }
                }
            }
            return;
        }
        // Ends sort before starts at the same instant: windows are half-open.
        self.events
            .sort_unstable_by_key(|&(t, start, _)| (t, start));
        for &(_, start, i) in &self.events {
            let r = rows[i as usize];
            let (node_part, dev_part) = split(r);
            let slot = self.slot_of[i as usize];
            let hard = !r.preemptible;
            for (cur, peak, counts) in [
                (&mut self.cur_all, &mut self.peak_all, true),
                (&mut self.cur_hard, &mut self.peak_hard, hard),
            ] {
                if !counts {
                    continue;
                }
                if start {
                    cur[n - 1].add(&node_part);
                    peak[n - 1].max_with(&cur[n - 1]);
                    if let Some(s) = slot {
                        cur[s].add(&dev_part);
                        peak[s].max_with(&cur[s]);
                    }
                } else {
                    cur[n - 1].sub(&node_part);
                    if let Some(s) = slot {
                        cur[s].sub(&dev_part);
                    }
                }
            }
        }
    }
}

fn split(r: &Reservation) -> (Amount, Amount) {
    let node = Amount {
        cpu: r.cpu_millis as u64,
        mem: r.memory_mib,
        ..Amount::default()
    };
    let dev = Amount {
        gmem: r.gpu_memory_mib,
        compute: r.gpu_compute_percent,
        slices: 1,
        ..Amount::default()
    };
    (node, dev)
}

/// Free amount = capacity − peak, per slot.
pub(crate) fn free_slots(cap: &[Amount], peak: &[Amount], out: &mut Vec<Amount>) {
    out.clear();
    out.extend(cap.iter().zip(peak).map(|(c, p)| {
        let mut f = *c;
        f.sub(p);
        f
    }));
}

/// What one seat takes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SeatNeed {
    pub cpu: u64,
    pub mem: u64,
    /// `(gpu memory MiB, compute percent, devices)` when the seat has a GPU.
    pub gpu: Option<(u64, u32, u32)>,
}

impl SeatNeed {
    /// How many of this seat's slices one device slot can still hold.
    pub fn slices_on(&self, free: &Amount) -> u32 {
        let Some((gmem, compute, _)) = self.gpu else {
            return 0;
        };
        let by_mem = free.gmem.checked_div(gmem).unwrap_or(u64::MAX);
        let by_compute = free.compute.checked_div(compute).unwrap_or(u32::MAX);
        (by_mem.min(u32::MAX as u64) as u32)
            .min(by_compute)
            .min(free.slices)
    }

    /// How many whole seats fit in these free slots (devices, then the node),
    /// counting only devices whose bit is set in `usable`. Stops at `cap`.
    pub fn seats_in(&self, free: &[Amount], usable: u64, cap: u32) -> u32 {
        let (node, devs) = free.split_last().expect("slots end with the node");
        let by_cpu = node.cpu.checked_div(self.cpu).unwrap_or(u64::MAX);
        let by_mem = node.mem.checked_div(self.mem).unwrap_or(u64::MAX);
        let mut seats = by_cpu.min(by_mem).min(cap as u64) as u32;
        if let Some((_, _, count)) = self.gpu {
            let slots = devs
                .iter()
                .enumerate()
                .filter(|(i, _)| *i < 64 && usable & (1 << i) != 0)
                .map(|(_, d)| self.slices_on(d).min(cap));
            if count <= 1 {
                seats = seats.min(slots.sum::<u32>());
            } else {
                // Seats needing `count` distinct devices: s seats fit iff every
                // device gives at most s slices and together they give s·count.
                let slots: Vec<u32> = slots.collect();
                let mut s = seats.min(slots.iter().sum::<u32>() / count);
                while s > 0 && slots.iter().map(|&x| x.min(s)).sum::<u32>() < s * count {
                    s -= 1;
                }
                seats = s;
            }
        }
        seats
    }

    /// Takes one seat out of `free`, choosing devices to keep fragmentation
    /// low, and returns the chosen device positions. `None` if it does not fit.
    pub fn take(&self, free: &mut [Amount], usable: u64) -> Option<Vec<usize>> {
        let n = free.len() - 1;
        if free[n].cpu < self.cpu || free[n].mem < self.mem {
            return None;
        }
        let mut chosen = Vec::new();
        if let Some((gmem, compute, count)) = self.gpu {
            let mut open: Vec<(usize, u32)> = (0..n.min(64))
                .filter(|i| usable & (1 << i) != 0)
                .map(|i| (i, self.slices_on(&free[i])))
                .filter(|&(_, s)| s > 0)
                .collect();
            if open.len() < count as usize {
                return None;
            }
            if count <= 1 {
                // Best fit: fill the device with the least room first so whole
                // devices stay whole for whole-device seats.
                open.sort_by_key(|&(i, s)| (s, i));
            } else {
                // Most room first: that is what lets the most multi-device
                // seats share a node (see `seats_in`).
                open.sort_by_key(|&(i, s)| (std::cmp::Reverse(s), i));
            }
            for &(i, _) in open.iter().take(count.max(1) as usize) {
                free[i].gmem -= gmem;
                free[i].compute -= compute;
                free[i].slices -= 1;
                chosen.push(i);
            }
        }
        free[n].cpu -= self.cpu;
        free[n].mem -= self.mem;
        Some(chosen)
    }
}

/// Subtracts what `take` took from a second view of the same slots (used to
/// keep "free without preemption" in step with "free with preemption").
pub(crate) fn consume(free: &mut [Amount], need: &SeatNeed, devices: &[usize]) {
    let n = free.len() - 1;
    free[n].cpu = free[n].cpu.saturating_sub(need.cpu);
    free[n].mem = free[n].mem.saturating_sub(need.mem);
    if let Some((gmem, compute, _)) = need.gpu {
        for &i in devices {
            free[i].gmem = free[i].gmem.saturating_sub(gmem);
            free[i].compute = free[i].compute.saturating_sub(compute);
            free[i].slices = free[i].slices.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Device, Isolation, Liveness, Owner, Tier};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use uuid::Uuid;

    fn one_t4() -> Node {
        Node {
            id: Uuid::nil(),
            name: "n".into(),
            site_id: Uuid::nil(),
            tier: Tier::Edge,
            liveness: Liveness::Connected,
            healthy: true,
            cordoned: false,
            approved: true,
            runtimes: vec![],
            cpu_millis: 8000,
            memory_mib: 65536,
            devices: vec![Device {
                index: 0,
                vendor: "nvidia".into(),
                model: "T4".into(),
                memory_mib: 16384,
                healthy: true,
                max_slices: 8,
                isolation: Isolation::Soft,
            }],
            cached: vec![],
            staging_bytes_per_sec: None,
            lending: None,
        }
    }

    #[test]
    fn sweep_peak_matches_pointwise_maximum() {
        let node = one_t4();
        let mut rng = StdRng::seed_from_u64(7);
        let mut sweep = Sweep::default();
        for _ in 0..500 {
            let window = Window::new(100, 200);
            let rows: Vec<Reservation> = (0..rng.random_range(0..8))
                .map(|i| {
                    let s = rng.random_range(50..220);
                    Reservation {
                        owner: Owner::Job(Uuid::from_u128(i)),
                        node_id: node.id,
                        device_index: Some(0),
                        window: Window::new(s, s + rng.random_range(1..80)),
                        cpu_millis: 10,
                        memory_mib: 0,
                        gpu_memory_mib: rng.random_range(1..4) * 1024,
                        gpu_compute_percent: 10,
                        preemptible: rng.random_bool(0.5),
                    }
                })
                .collect();
            let refs: Vec<&Reservation> = rows.iter().collect();
            sweep.run(&node, &refs, window, |_| false);
            let at = |t: i64, hard_only: bool| -> u64 {
                rows.iter()
                    .filter(|r| r.window.start <= t && t < r.window.end)
                    .filter(|r| !hard_only || !r.preemptible)
                    .map(|r| r.gpu_memory_mib)
                    .sum()
            };
            let all = (window.start..window.end)
                .map(|t| at(t, false))
                .max()
                .unwrap();
            let hard = (window.start..window.end)
                .map(|t| at(t, true))
                .max()
                .unwrap();
            assert_eq!(sweep.peak_all[0].gmem, all, "{rows:?}");
            assert_eq!(sweep.peak_hard[0].gmem, hard, "{rows:?}");
        }
    }
}
