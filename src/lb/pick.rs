//! Choosing a member: weighted round robin or weighted least connections, among the members
//! in rotation (optionally all but one already tried).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::member::Member;
use super::spec::Algorithm;

/// The chooser of one pool.
#[derive(Debug, Default)]
pub struct Picker {
    turn: AtomicUsize,
}

impl Picker {
    /// A member in rotation other than `skip`, or `None` when there is none.
    pub fn pick(
        &self,
        algorithm: Algorithm,
        members: &[Arc<Member>],
        skip: Option<&Arc<Member>>,
    ) -> Option<Arc<Member>> {
        let usable = |m: &&Arc<Member>| m.in_rotation() && skip.is_none_or(|s| !Arc::ptr_eq(s, m));
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        match algorithm {
            Algorithm::RoundRobin => {
                let total: u64 = members
                    .iter()
                    .filter(usable)
                    .map(|m| u64::from(m.weight()))
                    .sum();
                if total == 0 {
                    return None;
                }
                let mut at = turn as u64 % total;
                for m in members.iter().filter(usable) {
                    let w = u64::from(m.weight());
                    if at < w {
                        return Some(m.clone());
                    }
                    at -= w;
                }
                None
            }
            Algorithm::LeastConnections => {
                let candidates: Vec<&Arc<Member>> = members.iter().filter(usable).collect();
                if candidates.is_empty() {
                    return None;
                }
                // Compare active/weight without division; start at a rotating index so ties
                // spread out instead of always landing on the first member.
                let n = candidates.len();
                let mut best = candidates[turn % n];
                for i in 1..n {
                    let m = candidates[(turn + i) % n];
                    let (a, wa) = (m.active() as u64, u64::from(m.weight()));
                    let (b, wb) = (best.active() as u64, u64::from(best.weight()));
                    if a * wb < b * wa {
                        best = m;
                    }
                }
                Some(best.clone())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::member::MemberState;

    fn members(weights: &[u32]) -> Vec<Arc<Member>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let m = Member::new(
                    format!("m{i}"),
                    format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                    *w,
                    1,
                );
                m.set_state(MemberState::Healthy);
                m
            })
            .collect()
    }

    #[test]
    fn round_robin_follows_weights_and_skips_members_out_of_rotation() {
        let ms = members(&[1, 2, 1]);
        let p = Picker::default();
        let mut counts = [0; 3];
        for _ in 0..400 {
            let m = p.pick(Algorithm::RoundRobin, &ms, None).unwrap();
            counts[ms.iter().position(|x| Arc::ptr_eq(x, &m)).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 200, 100]);
        ms[1].set_state(MemberState::Unhealthy);
        for _ in 0..10 {
            assert_ne!(p.pick(Algorithm::RoundRobin, &ms, None).unwrap().id, "m1");
        }
        let skip = ms[0].clone();
        assert_eq!(
            p.pick(Algorithm::RoundRobin, &ms, Some(&skip)).unwrap().id,
            "m2"
        );
        ms[2].set_state(MemberState::Draining);
        assert!(p.pick(Algorithm::RoundRobin, &ms, Some(&skip)).is_none());
    }

    #[test]
    fn least_connections_avoids_busy_members() {
        let ms = members(&[1, 1, 1]);
        let p = Picker::default();
        let _busy: Vec<_> = (0..5).map(|_| ms[0].begin()).collect();
        let _one = ms[1].begin();
        for _ in 0..20 {
            assert_eq!(
                p.pick(Algorithm::LeastConnections, &ms, None).unwrap().id,
                "m2"
            );
        }
    }
}
