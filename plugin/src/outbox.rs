//! The bounded queue of requests waiting for the bridge, and its retry schedule.
//!
//! Jobs go out one at a time, in order, so a rating never reaches the bridge before the capture
//! of its turn was acknowledged. Captures and ratings wait while the bridge is down; commands
//! that a person waits on are answered at once instead.

use std::collections::VecDeque;

pub const MAX_JOBS: usize = 512;
/// The most request-body bytes kept waiting, whatever the count.
pub const MAX_BYTES: usize = 16 << 20;
pub const JOB_TTL_MS: u64 = 24 * 3600 * 1000;
pub const BACKOFF_MIN_MS: u64 = 1_000;
pub const BACKOFF_MAX_MS: u64 = 60_000;
/// A request the host has not answered within this time counts as failed.
pub const REQUEST_TIMEOUT_MS: u64 = 30_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobKind {
    Capture { turn_id: String },
    Rate { good: bool },
    Unrate,
    Command { name: String },
}

#[derive(Clone, Debug)]
pub struct Job {
    pub kind: JobKind,
    pub method: &'static str,
    pub path: &'static str,
    pub body: Vec<u8>,
    /// The command or callback id of a person waiting for the answer.
    pub reply_to: Option<String>,
    /// What to tell that person when the bridge has no such turn (404 `turn_not_found`),
    /// instead of the bridge's own words.
    pub not_found: Option<&'static str>,
    pub created_at: u64,
}

impl Job {
    /// Whether the job may wait for the bridge to come back (captures and ratings may;
    /// commands are answered at once).
    pub fn retries(&self) -> bool {
        !matches!(self.kind, JobKind::Command { .. })
    }
}

#[derive(Debug, Default)]
pub struct Outbox {
    jobs: VecDeque<Job>,
    bytes: usize,
}

impl Outbox {
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Queues a job; returns the oldest jobs (after the first `keep`, which may be in flight)
    /// that had to go to keep the queue within its count and byte caps.
    pub fn push(&mut self, job: Job, keep: usize) -> Vec<Job> {
        self.bytes += job.body.len();
        self.jobs.push_back(job);
        let mut dropped = Vec::new();
        while (self.jobs.len() > MAX_JOBS || self.bytes > MAX_BYTES) && self.jobs.len() > keep + 1 {
            if let Some(old) = self.jobs.remove(keep) {
                self.bytes -= old.body.len();
                dropped.push(old);
            }
        }
        dropped
    }

    pub fn front(&self) -> Option<&Job> {
        self.jobs.front()
    }

    pub fn pop(&mut self) -> Option<Job> {
        let job = self.jobs.pop_front()?;
        self.bytes -= job.body.len();
        Some(job)
    }

    /// Bytes of request bodies waiting.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Removes jobs older than the TTL (not the first `keep` ones, which may be in flight).
    pub fn expire(&mut self, now: u64, keep: usize) -> Vec<Job> {
        let mut out = Vec::new();
        let mut i = keep;
        while i < self.jobs.len() {
            if now.saturating_sub(self.jobs[i].created_at) > JOB_TTL_MS {
                let job = self.jobs.remove(i).expect("index checked");
                self.bytes -= job.body.len();
                out.push(job);
            } else {
                i += 1;
            }
        }
        out
    }

    /// Removes every job matching `pred`.
    pub fn take_where(&mut self, keep: usize, pred: impl Fn(&Job) -> bool) -> Vec<Job> {
        let mut out = Vec::new();
        let mut i = keep;
        while i < self.jobs.len() {
            if pred(&self.jobs[i]) {
                let job = self.jobs.remove(i).expect("index checked");
                self.bytes -= job.body.len();
                out.push(job);
            } else {
                i += 1;
            }
        }
        out
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Job> {
        self.jobs.iter_mut()
    }
}

/// The delay before the next attempt after `failures` consecutive failures.
pub fn backoff_ms(failures: u32) -> u64 {
    let exp = failures.saturating_sub(1).min(16);
    (BACKOFF_MIN_MS << exp).min(BACKOFF_MAX_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(at: u64) -> Job {
        Job {
            kind: JobKind::Unrate,
            method: "DELETE",
            path: "/v1/ratings",
            body: vec![],
            reply_to: None,
            not_found: None,
            created_at: at,
        }
    }

    #[test]
    fn bounded_in_count_and_age() {
        let mut o = Outbox::default();
        for i in 0..MAX_JOBS as u64 {
            assert!(o.push(job(i), 0).is_empty());
        }
        let dropped = o.push(job(1000), 0);
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].created_at, 0);
        assert_eq!(o.len(), MAX_JOBS);
        let gone = o.expire(JOB_TTL_MS + 500, 1);
        assert_eq!(gone.len(), 498);
        assert_eq!(o.len(), MAX_JOBS - 498);
    }

    #[test]
    fn bounded_in_bytes_and_the_job_in_flight_stays() {
        let mut o = Outbox::default();
        let big = |at| Job {
            body: vec![b'x'; 6 << 20],
            ..job(at)
        };
        assert!(o.push(big(1), 1).is_empty());
        assert!(o.push(big(2), 1).is_empty());
        // a third would pass 16 MiB: the oldest after the one in flight goes
        let dropped = o.push(big(3), 1);
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].created_at, 2);
        assert_eq!(o.front().unwrap().created_at, 1);
        assert_eq!(o.bytes(), 12 << 20);
        o.pop();
        assert_eq!(o.bytes(), 6 << 20);
        o.take_where(0, |_| true);
        assert_eq!(o.bytes(), 0);
    }

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        assert_eq!(backoff_ms(1), 1_000);
        assert_eq!(backoff_ms(2), 2_000);
        assert_eq!(backoff_ms(3), 4_000);
        assert_eq!(backoff_ms(10), 60_000);
        assert_eq!(backoff_ms(u32::MAX), 60_000);
    }
}
