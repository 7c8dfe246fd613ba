//! The grey release's split: which new request (HTTP) or connection (TCP) goes to the canary,
//! and the rule that rolls it back. The split is deterministic, not random: the n-th pick goes
//! to the canary when `floor((n+1)·share) > floor(n·share)`, so after any n picks the canary
//! has had exactly `floor(n·share)` of them, evenly spread. With `--sticky ip` the pick is a
//! fixed function of the client address instead (a share of the addresses).
//!
//! The rule is judged on the request path, right after each canary answer is counted, so a
//! failing canary is taken out of the split at once, not at the supervisor's next look: the
//! failures a client can see are bounded by `--min-requests` plus what was in flight.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use handover::control_socket::CanaryRequest;

use super::gen_stats::Snapshot;
use super::upstream::Upstream;
use crate::events::{Event, Events, WorkerId};

/// The canary and how much it gets.
#[derive(Debug)]
pub struct Split {
    /// The canary's upstream.
    pub canary: Arc<Upstream>,
    /// What was asked for.
    pub plan: CanaryRequest,
    /// Picks so far (by-request split).
    seq: AtomicU64,
    /// The generation that was current when the canary started, and its figures then: the
    /// rule compares over the same period.
    main_base: (WorkerId, Snapshot),
    canary_base: Snapshot,
    /// Set once the rule tripped (the split is being taken down).
    tripped: AtomicBool,
    /// Where a trip is reported.
    events: Events,
}

impl Split {
    /// A split that sends `plan.share_bp` of new traffic to `canary`; `main` is the upstream
    /// serving the rest (its figures now are the baseline).
    pub fn new(
        canary: Arc<Upstream>,
        main: Option<&Arc<Upstream>>,
        plan: CanaryRequest,
        events: Events,
    ) -> Split {
        let main_base = main.map_or((WorkerId(0), Snapshot::default()), |m| {
            (m.id, m.stats.snapshot())
        });
        Split {
            canary_base: canary.stats.snapshot(),
            canary,
            plan,
            seq: AtomicU64::new(0),
            main_base,
            tripped: AtomicBool::new(false),
            events,
        }
    }

    /// Whether this request or connection (from `client`) goes to the canary.
    pub fn picks_canary(&self, client: IpAddr) -> bool {
        let bp = u64::from(self.plan.share_bp);
        if self.plan.sticky_ip {
            return address_point(client) < bp;
        }
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        (n + 1) * bp / 10_000 > n * bp / 10_000
    }

    /// The old generation's and the canary's figures since the canary started. `main` is the
    /// upstream serving the rest now (a replacement after a crash counts from its start).
    pub fn figures(&self, main: Option<&Arc<Upstream>>) -> (Snapshot, Snapshot) {
        let old = match main {
            Some(m) if m.id == self.main_base.0 => m.stats.snapshot().since(&self.main_base.1),
            Some(m) => m.stats.snapshot(),
            None => Snapshot::default(),
        };
        let new = self.canary.stats.snapshot().since(&self.canary_base);
        (old, new)
    }

    /// The rule: once the canary has `min_requests`, it fails when its error rate exceeds
    /// the old generation's plus `max_error_rate`. The reason, with the figures, if it fails.
    pub fn verdict(&self, old: &Snapshot, new: &Snapshot) -> Option<String> {
        if new.requests < self.plan.min_requests {
            return None;
        }
        let max = f64::from(self.plan.max_error_rate_bp) / 10_000.0;
        (new.error_rate() > old.error_rate() + max).then(|| {
            format!(
                "the canary's error rate {} exceeds the old generation's {} + --max-error-rate {}",
                rate(new),
                rate(old),
                percent_bp(self.plan.max_error_rate_bp)
            )
        })
    }

    /// Judges the rule after a canary answer was counted; on the first failure, reports it
    /// and returns true (the caller takes the split down).
    pub fn judge(&self, main: Option<&Arc<Upstream>>) -> bool {
        if self.tripped.load(Ordering::Relaxed) {
            return false;
        }
        let (old, new) = self.figures(main);
        let Some(reason) = self.verdict(&old, &new) else {
            return false;
        };
        if self.tripped.swap(true, Ordering::SeqCst) {
            return false; // another thread got there first
        }
        let _ = self.events.send(Event::CanaryTripped {
            id: self.canary.id,
            reason,
        });
        true
    }
}

/// `3.0% (3 of 100)`.
pub fn rate(s: &Snapshot) -> String {
    format!(
        "{:.1}% ({} of {})",
        s.error_rate() * 100.0,
        s.errors,
        s.requests
    )
}

/// Basis points as a percentage: `1000` → `10%`, `50` → `0.5%`.
pub fn percent_bp(bp: u32) -> String {
    let whole = bp / 100;
    match bp % 100 {
        0 => format!("{whole}%"),
        f if f % 10 == 0 => format!("{whole}.{}%", f / 10),
        f => format!("{whole}.{f:02}%"),
    }
}

/// A fixed point in 0..10000 for a client address (splitmix64 of its bits), so that one
/// address always lands on the same side and a share of the addresses on the canary's.
fn address_point(ip: IpAddr) -> u64 {
    let bits: u128 = match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    };
    let mut z = (bits as u64) ^ ((bits >> 64) as u64).rotate_left(32);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    z % 10_000
}

/// Parses `--canary 10%` (or `0.5%`, `10`): basis points, 1..=9999.
pub fn parse_share(s: &str) -> Result<u32, String> {
    parse_percent(s, "--canary").and_then(|bp| {
        if bp == 0 || bp >= 10_000 {
            Err(format!(
                "invalid --canary {s:?}: the share must be above 0% and below 100% (a plain \
                 upgrade moves all traffic)"
            ))
        } else {
            Ok(bp)
        }
    })
}

/// Parses a percentage with at most two decimals (`1%`, `0.25%`, `5`) into basis points,
/// 0..=10000.
pub fn parse_percent(s: &str, what: &str) -> Result<u32, String> {
    let bad = |why: &str| format!("invalid {what} {s:?}: {why}; expected a percentage like 10%");
    let t = s.strip_suffix('%').unwrap_or(s);
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || whole.len() > 3 {
        return Err(bad("not a number"));
    }
    if frac.len() > 2 || !frac.bytes().all(|b| b.is_ascii_digit()) || t.ends_with('.') {
        return Err(bad("at most two decimals"));
    }
    let whole: u32 = whole.parse().map_err(|_| bad("not a number"))?;
    let frac: u32 = format!("{frac:0<2}")
        .parse()
        .map_err(|_| bad("not a number"))?;
    let bp = whole * 100 + frac;
    if bp > 10_000 {
        return Err(bad("above 100%"));
    }
    Ok(bp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::gen_stats::Answer;
    use std::time::Duration;

    fn plan(share_bp: u32, sticky_ip: bool) -> CanaryRequest {
        CanaryRequest {
            share_bp,
            for_ms: 1000,
            max_error_rate_bp: 100,
            min_requests: 10,
            sticky_ip,
        }
    }

    fn split(p: CanaryRequest) -> (Split, tokio::sync::mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let addr = "127.0.0.1:9".parse().unwrap();
        let up = Arc::new(Upstream::new(WorkerId(2), 2, addr));
        (Split::new(up, None, p, tx), rx)
    }

    #[test]
    fn by_request_the_share_is_exact_and_spread() {
        let (s, _rx) = split(plan(2000, false));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let picks: Vec<bool> = (0..1000).map(|_| s.picks_canary(ip)).collect();
        assert_eq!(picks.iter().filter(|p| **p).count(), 200);
        // Evenly: one in every five.
        assert!(picks
            .chunks(5)
            .all(|c| c.iter().filter(|p| **p).count() == 1));
    }

    #[test]
    fn sticky_is_a_fixed_share_of_addresses() {
        let (s, _rx) = split(plan(2000, true));
        let mut canary = 0;
        for i in 0..10_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let first = s.picks_canary(ip);
            assert!((0..3).all(|_| s.picks_canary(ip) == first));
            canary += usize::from(first);
        }
        assert!((1800..=2200).contains(&canary), "{canary}");
    }

    #[test]
    fn the_rule_waits_for_min_requests_then_compares() {
        let (s, mut rx) = split(plan(1000, false));
        for _ in 0..9 {
            s.canary
                .stats
                .record(Answer::Status(500), Duration::from_millis(1));
            assert!(!s.judge(None));
        }
        s.canary
            .stats
            .record(Answer::Status(500), Duration::from_millis(1));
        assert!(s.judge(None));
        assert!(!s.judge(None), "reported once");
        match rx.try_recv() {
            Ok(Event::CanaryTripped { id, reason }) => {
                assert_eq!(id, WorkerId(2));
                assert!(reason.contains("100.0% (10 of 10)"), "{reason}");
                assert!(
                    reason.contains("0.0% (0 of 0) + --max-error-rate 1%"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        // Within the margin of the old generation's rate: no verdict.
        let old = Snapshot {
            requests: 100,
            errors: 10,
            ..Snapshot::default()
        };
        let new = Snapshot {
            requests: 100,
            errors: 11,
            ..Snapshot::default()
        };
        assert!(s.verdict(&old, &new).is_none());
    }

    #[test]
    fn parses_percentages_strictly() {
        assert_eq!(parse_share("10%"), Ok(1000));
        assert_eq!(parse_share("0.5%"), Ok(50));
        assert_eq!(parse_share("20"), Ok(2000));
        assert_eq!(parse_percent("1.25%", "x"), Ok(125));
        assert_eq!(parse_percent("0%", "x"), Ok(0));
        for bad in ["", "%", "abc", "1.234%", "-1%", "1.%", "101%", "1e2"] {
            assert!(parse_percent(bad, "x").is_err(), "{bad}");
        }
        assert!(parse_share("0%").unwrap_err().contains("above 0%"));
        assert!(parse_share("100%").unwrap_err().contains("below 100%"));
        assert_eq!(percent_bp(1000), "10%");
        assert_eq!(percent_bp(50), "0.5%");
        assert_eq!(percent_bp(125), "1.25%");
    }
}
