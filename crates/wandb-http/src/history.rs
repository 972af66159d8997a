//! Step bookkeeping between `log` calls and file_stream requests: merging rows of one step,
//! numbering history lines, the summary, and cutting batches under the size limit. No I/O.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Value, json};

use crate::row::{Field, Row, encode_object};

/// When a row was logged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Stamp {
    /// Seconds since the run started.
    pub(crate) runtime: f64,
    /// Unix time in seconds.
    pub(crate) timestamp: f64,
}

/// What happened to one logged row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Logged {
    /// Merged into (or opened) the row of its step.
    Accepted,
    /// Its step is lower than the open row's; dropped.
    Stale { open_step: u64 },
    /// Its step is at or below the last step the resumed run already has on the server; not
    /// sent as history, but its values went into the summary.
    AlreadyOnServer { server_step: u64 },
}

/// A closed history line awaiting delivery.
#[derive(Debug, Clone)]
struct Line {
    step: u64,
    text: String,
    /// Length once escaped as a JSON string inside the request body.
    wire_len: usize,
}

/// A file_stream request body covering `rows` pending lines (and maybe the summary).
#[derive(Debug, Clone)]
pub(crate) struct Batch {
    pub(crate) body: String,
    pub(crate) rows: usize,
    pub(crate) summary_version: Option<u64>,
}

/// Open row, closed-but-undelivered lines and the summary.
///
/// The summary holds the latest value of every key of the *closed* rows (like the reference
/// client, which updates it when a history row is committed), and it is sent only with the
/// request that delivers the last pending line, or alone when none is pending. So the server's
/// summary `_step` never runs ahead of the history it has, which is what a resumed run relies on
/// to know which steps are already there.
#[derive(Debug)]
pub(crate) struct History {
    open: Option<(u64, Row, Stamp)>,
    pending: VecDeque<Line>,
    /// Sum of `wire_len` over `pending`.
    pending_bytes: usize,
    /// History line number of `pending[0]`.
    next_offset: u64,
    summary: BTreeMap<String, Field>,
    /// The largest step that went into the summary (its `_step`).
    summary_step: Option<u64>,
    summary_version: u64,
    summary_delivered_version: u64,
    /// Steps at or below this are already in the resumed run's history on the server.
    server_step: Option<u64>,
    /// The last step counted in `rows_skipped`, so a step logged in several calls counts once.
    last_skipped_step: Option<u64>,
    max_pending: usize,
    max_pending_bytes: usize,
    max_body: usize,
    /// Rows closed so far (delivered or not), not counting skipped ones.
    pub(crate) rows_closed: u64,
    /// Closed rows dropped because the pending queue was full or the row alone exceeded the
    /// request size limit.
    pub(crate) rows_discarded: u64,
    /// Distinct steps not sent because the resumed run already had them.
    pub(crate) rows_skipped: u64,
}

/// Room kept for the JSON wrapping around the lines of one request.
const BODY_OVERHEAD: usize = 256;

impl History {
    pub(crate) fn new(max_pending: usize, max_pending_bytes: usize, max_body: usize) -> History {
        History {
            open: None,
            pending: VecDeque::new(),
            pending_bytes: 0,
            next_offset: 0,
            summary: BTreeMap::new(),
            summary_step: None,
            summary_version: 0,
            summary_delivered_version: 0,
            server_step: None,
            last_skipped_step: None,
            max_pending: max_pending.max(1),
            max_pending_bytes: max_pending_bytes.max(1),
            max_body: max_body.max(BODY_OVERHEAD * 4),
            rows_closed: 0,
            rows_discarded: 0,
            rows_skipped: 0,
        }
    }

    /// Sets the line number of the first undelivered row (the run's `historyLineCount`).
    pub(crate) fn start_at(&mut self, offset: u64) {
        self.next_offset = offset;
    }

    /// Takes in what the server already has for a resumed run: its summary (keys this session
    /// has not set yet are kept, so the first summary sent does not erase them) and the step of
    /// its last history row. Rows at or below that step — queued or open because they were
    /// logged before the upsert answered, or logged later — are not sent; their values update
    /// the summary.
    pub(crate) fn resume_from(
        &mut self,
        server_step: Option<u64>,
        server_summary: BTreeMap<String, Field>,
    ) {
        for (key, value) in server_summary {
            if key != "_step" {
                self.summary.entry(key).or_insert(value);
            }
        }
        let Some(server_step) = server_step else {
            return;
        };
        if self.summary_step.is_none_or(|s| s < server_step) {
            self.summary_step = Some(server_step);
            self.summary
                .insert("_step".to_owned(), Field::Json(Value::from(server_step)));
        }
        self.server_step = Some(server_step);
        let before = self.pending.len();
        let mut skipped_bytes = 0;
        let mut last = self.last_skipped_step;
        self.pending.retain(|line| {
            let keep = line.step > server_step;
            if !keep {
                skipped_bytes += line.wire_len;
                last = Some(line.step);
            }
            keep
        });
        let skipped = (before - self.pending.len()) as u64;
        self.pending_bytes -= skipped_bytes;
        self.last_skipped_step = last;
        self.rows_closed -= skipped;
        self.rows_skipped += skipped;
        if self
            .open
            .as_ref()
            .is_some_and(|(step, _, _)| *step <= server_step)
        {
            if let Some((step, row, stamp)) = self.open.take() {
                self.skip(step, &row, stamp);
            }
        }
    }

    /// Line number the next delivered row gets.
    #[cfg(test)]
    pub(crate) fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Applies W&B's step rule: same step merges, larger step closes the open row, lower step is
    /// dropped; a step the resumed run already has is not sent but updates the summary.
    pub(crate) fn log(&mut self, step: u64, row: Row, stamp: Stamp) -> Logged {
        match &mut self.open {
            Some((open_step, _, _)) if step < *open_step => {
                return Logged::Stale {
                    open_step: *open_step,
                };
            }
            Some((open_step, open_row, open_stamp)) if step == *open_step => {
                open_row.merge(row);
                *open_stamp = stamp;
                return Logged::Accepted;
            }
            _ => {}
        }
        if let Some(server_step) = self.server_step.filter(|&s| step <= s) {
            self.skip(step, &row, stamp);
            return Logged::AlreadyOnServer { server_step };
        }
        self.close_open();
        self.open = Some((step, row, stamp));
        Logged::Accepted
    }

    /// Counts a row the server already has and lets its values into the summary.
    fn skip(&mut self, step: u64, row: &Row, stamp: Stamp) {
        self.update_summary(step, row, stamp);
        if self.last_skipped_step != Some(step) {
            self.rows_skipped += 1;
            self.last_skipped_step = Some(step);
        }
    }

    /// The summary takes the row's values; `_step` only ever grows, `_runtime` and `_timestamp`
    /// are the latest row's.
    fn update_summary(&mut self, step: u64, row: &Row, stamp: Stamp) {
        for (k, v) in &row.fields {
            self.summary.insert(k.clone(), v.clone());
        }
        if self.summary_step.is_none_or(|s| s <= step) {
            self.summary_step = Some(step);
            self.summary
                .insert("_step".to_owned(), Field::Json(Value::from(step)));
        }
        self.summary
            .insert("_runtime".to_owned(), Field::Float(stamp.runtime));
        self.summary
            .insert("_timestamp".to_owned(), Field::Float(stamp.timestamp));
        self.summary_version += 1;
    }

    /// Closes the open row (at finish, or when a larger step arrives): it goes into the summary
    /// and, room permitting, into the pending lines.
    pub(crate) fn close_open(&mut self) {
        let Some((step, row, stamp)) = self.open.take() else {
            return;
        };
        self.update_summary(step, &row, stamp);
        self.rows_closed += 1;
        let text = row.encode_with(step, stamp.runtime, stamp.timestamp);
        let wire_len = Value::String(text.clone()).to_string().len() + 1;
        if wire_len + BODY_OVERHEAD > self.max_body {
            tracing::warn!(
                step,
                bytes = wire_len,
                "W&B history row exceeds the request size limit; not sent"
            );
            self.rows_discarded += 1;
        } else if self.pending.len() >= self.max_pending
            || self.pending_bytes + wire_len > self.max_pending_bytes
        {
            if self.rows_discarded == 0 || self.rows_discarded.is_power_of_two() {
                tracing::warn!(
                    step,
                    rows = self.pending.len(),
                    bytes = self.pending_bytes,
                    dropped = self.rows_discarded + 1,
                    "W&B backlog full; history row not sent (the summary still has its values)"
                );
            }
            self.rows_discarded += 1;
        } else {
            self.pending_bytes += wire_len;
            self.pending.push_back(Line {
                step,
                text,
                wire_len,
            });
        }
    }

    /// True when closed rows or a summary change await delivery.
    pub(crate) fn has_unsent(&self) -> bool {
        !self.pending.is_empty() || self.summary_version > self.summary_delivered_version
    }

    /// True when the latest summary has been acknowledged.
    pub(crate) fn summary_delivered(&self) -> bool {
        self.summary_version == self.summary_delivered_version
    }

    /// Closed rows awaiting delivery.
    pub(crate) fn pending_rows(&self) -> usize {
        self.pending.len()
    }

    /// The next request: as many pending lines from the front as fit under the size limit, plus
    /// the summary when it changed, the batch takes the last pending line and there is room.
    /// `None` when nothing is unsent or only a summary too large to send is.
    pub(crate) fn next_batch(&self) -> Option<Batch> {
        if !self.has_unsent() {
            return None;
        }
        let mut files = serde_json::Map::new();
        let budget = self.max_body - BODY_OVERHEAD;
        let mut used = 0;
        let mut lines = Vec::new();
        for line in &self.pending {
            if used + line.wire_len > budget {
                break;
            }
            used += line.wire_len;
            lines.push(Value::String(line.text.clone()));
        }
        let rows = lines.len();
        let mut summary_version = None;
        if self.summary_version > self.summary_delivered_version && rows == self.pending.len() {
            let text = encode_object(&self.summary);
            let wire_len = Value::String(text.clone()).to_string().len();
            if used + wire_len <= budget {
                files.insert(
                    "wandb-summary.json".to_owned(),
                    json!({"offset": 0, "content": [text]}),
                );
                summary_version = Some(self.summary_version);
            } else if rows == 0 {
                tracing::warn!(bytes = wire_len, "W&B summary too large to send");
            }
            // Otherwise it goes alone in the next request, after these lines.
        }
        if rows > 0 {
            files.insert(
                "wandb-history.jsonl".to_owned(),
                json!({"offset": self.next_offset, "content": lines}),
            );
        }
        if files.is_empty() {
            return None;
        }
        Some(Batch {
            body: json!({ "files": files }).to_string(),
            rows,
            summary_version,
        })
    }

    /// Marks a batch as delivered.
    pub(crate) fn acknowledge(&mut self, batch: &Batch) {
        let n = batch.rows.min(self.pending.len());
        for line in self.pending.drain(..n) {
            self.pending_bytes -= line.wire_len;
        }
        self.next_offset += n as u64;
        if let Some(v) = batch.summary_version {
            self.summary_delivered_version = self.summary_delivered_version.max(v);
        }
    }

    /// Forgets an unsendable summary change so `has_unsent` does not stay true forever.
    pub(crate) fn give_up_summary(&mut self) {
        self.summary_delivered_version = self.summary_version;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(t: f64) -> Stamp {
        Stamp {
            runtime: t,
            timestamp: 1000.0 + t,
        }
    }

    fn row(k: &str, v: f64) -> Row {
        [(k, v)].into_iter().collect()
    }

    fn history_lines(batch: &Batch) -> (u64, Vec<Value>) {
        let body: Value = serde_json::from_str(&batch.body).unwrap();
        let h = &body["files"]["wandb-history.jsonl"];
        let lines = h["content"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|l| serde_json::from_str(l.as_str().unwrap()).unwrap())
                    .collect()
            })
            .unwrap_or_default();
        (h["offset"].as_u64().unwrap_or(u64::MAX), lines)
    }

    #[test]
    fn same_step_merges_larger_step_closes_lower_step_is_dropped() {
        let mut h = History::new(100, 1 << 30, 1 << 20);
        h.start_at(5);
        assert_eq!(h.log(10, row("a", 1.0), stamp(1.0)), Logged::Accepted);
        assert_eq!(h.log(10, row("b", 2.0), stamp(2.0)), Logged::Accepted);
        assert_eq!(h.log(20, row("a", 3.0), stamp(3.0)), Logged::Accepted);
        assert_eq!(
            h.log(15, row("c", 9.0), stamp(4.0)),
            Logged::Stale { open_step: 20 }
        );
        let batch = h.next_batch().unwrap();
        let (offset, lines) = history_lines(&batch);
        assert_eq!(offset, 5);
        assert_eq!(lines.len(), 1, "step 20 is still open");
        assert_eq!(
            lines[0],
            json!({"a": 1.0, "b": 2.0, "_step": 10, "_runtime": 2.0, "_timestamp": 1002.0})
        );
        // The summary covers the closed rows only: the open step 20 is not in it yet.
        assert_eq!(
            summary_of(&batch),
            Some(json!({"a": 1.0, "b": 2.0, "_step": 10, "_runtime": 2.0, "_timestamp": 1002.0}))
        );
        h.acknowledge(&batch);
        assert_eq!(h.next_offset(), 6);
        assert!(!h.has_unsent());
        h.close_open();
        let batch = h.next_batch().unwrap();
        let (offset, lines) = history_lines(&batch);
        assert_eq!((offset, lines.len()), (6, 1));
        assert_eq!(lines[0]["_step"], 20);
        assert_eq!(
            summary_of(&batch),
            Some(json!({"a": 3.0, "b": 2.0, "_step": 20, "_runtime": 3.0, "_timestamp": 1003.0}))
        );
    }

    fn summary_of(batch: &Batch) -> Option<Value> {
        let body: Value = serde_json::from_str(&batch.body).unwrap();
        body["files"]["wandb-summary.json"]["content"][0]
            .as_str()
            .map(|s| serde_json::from_str(s).unwrap())
    }

    #[test]
    fn the_summary_never_runs_ahead_of_the_history_it_is_sent_with() {
        let mut h = History::new(1000, 1 << 30, 2048);
        let big = "x".repeat(400);
        for step in 0..12 {
            let mut r = Row::new();
            r.set("s", big.clone()).set("i", step);
            h.log(step, r, stamp(step as f64));
        }
        h.close_open();
        let mut delivered_step = None;
        for _ in 0..30 {
            let Some(batch) = h.next_batch() else { break };
            let (_, lines) = history_lines(&batch);
            if let Some(last) = lines.last() {
                delivered_step = last["_step"].as_u64();
            }
            if let Some(summary) = summary_of(&batch) {
                assert_eq!(
                    summary["_step"].as_u64(),
                    delivered_step,
                    "summary ahead of history"
                );
            }
            h.acknowledge(&batch);
        }
        assert_eq!(delivered_step, Some(11));
        assert!(!h.has_unsent(), "the summary was delivered too");
    }

    #[test]
    fn resumed_steps_are_skipped_queued_or_not_and_still_reach_the_summary() {
        let mut h = History::new(100, 1 << 30, 1 << 20);
        // Logged while the upsert was still pending: 3 and 4 are queued, 5 is open.
        for step in 3..=5 {
            assert_eq!(
                h.log(step, row("a", step as f64), stamp(0.0)),
                Logged::Accepted
            );
        }
        let mut server = BTreeMap::new();
        server.insert("old_key".to_owned(), Field::Json(json!("kept")));
        server.insert("a".to_owned(), Field::Json(json!(-1.0)));
        server.insert("_step".to_owned(), Field::Json(json!(7)));
        h.start_at(8);
        h.resume_from(Some(7), server);
        assert_eq!((h.rows_closed, h.rows_skipped), (0, 3));
        assert_eq!(
            h.log(5, row("b", 1.0), stamp(1.0)),
            Logged::AlreadyOnServer { server_step: 7 }
        );
        assert_eq!(
            h.log(7, row("a", 7.5), stamp(2.0)),
            Logged::AlreadyOnServer { server_step: 7 }
        );
        assert_eq!(h.log(8, row("a", 8.0), stamp(3.0)), Logged::Accepted);
        assert_eq!(
            h.log(6, row("c", 6.0), stamp(3.0)),
            Logged::Stale { open_step: 8 }
        );
        h.close_open();
        assert_eq!((h.rows_closed, h.rows_skipped), (1, 4), "3, 4, 5 and 7");
        let batch = h.next_batch().unwrap();
        let (offset, lines) = history_lines(&batch);
        assert_eq!(offset, 8);
        let steps: Vec<u64> = lines.iter().map(|l| l["_step"].as_u64().unwrap()).collect();
        assert_eq!(steps, vec![8]);
        assert_eq!(
            summary_of(&batch),
            Some(
                json!({"a": 8.0, "b": 1.0, "old_key": "kept", "_step": 8, "_runtime": 3.0,
                        "_timestamp": 1003.0})
            )
        );
    }

    #[test]
    fn replayed_steps_do_not_move_the_summary_step_back() {
        let mut h = History::new(100, 1 << 30, 1 << 20);
        h.resume_from(Some(1000), BTreeMap::new());
        assert!(!h.has_unsent(), "what the server has is not re-sent");
        h.log(260, row("loss", 2.0), stamp(1.0));
        let summary = summary_of(&h.next_batch().unwrap()).unwrap();
        assert_eq!(summary["_step"], json!(1000));
        assert_eq!(summary["loss"], json!(2.0));
        assert_eq!(h.rows_skipped, 1);
    }

    #[test]
    fn the_backlog_is_bounded_in_bytes_too() {
        let mut h = History::new(1000, 2000, 1 << 20);
        for step in 0..10 {
            let mut r = Row::new();
            r.set("s", "y".repeat(500));
            h.log(step, r, stamp(0.0));
        }
        h.close_open();
        assert_eq!(h.rows_closed, 10);
        assert_eq!(h.pending_rows(), 3, "three 550-byte rows fit in 2000 bytes");
        assert_eq!(h.rows_discarded, 7);
        let batch = h.next_batch().unwrap();
        h.acknowledge(&batch);
        assert_eq!((h.pending_rows(), h.pending_bytes), (0, 0));
    }

    #[test]
    fn batches_are_split_under_the_size_limit_and_keep_offsets_contiguous() {
        let mut h = History::new(1000, 1 << 30, 4096);
        let big = "x".repeat(900);
        for step in 0..20 {
            let mut r = Row::new();
            r.set("s", big.clone());
            h.log(step, r, stamp(step as f64));
        }
        h.close_open();
        let mut seen = Vec::new();
        for _ in 0..40 {
            let Some(batch) = h.next_batch() else { break };
            assert!(
                batch.body.len() <= 4096,
                "body of {} bytes",
                batch.body.len()
            );
            let (offset, lines) = history_lines(&batch);
            if !lines.is_empty() {
                assert_eq!(offset, seen.len() as u64);
            }
            seen.extend(lines.iter().map(|l| l["_step"].as_u64().unwrap()));
            h.acknowledge(&batch);
        }
        assert_eq!(seen, (0..20).collect::<Vec<u64>>());
    }

    #[test]
    fn oversized_row_and_backlog_overflow_are_discarded_and_counted() {
        let mut h = History::new(2, 1 << 30, 2048);
        let mut r = Row::new();
        r.set("s", "y".repeat(5000));
        h.log(0, r, stamp(0.0));
        for step in 1..=4 {
            h.log(step, row("a", step as f64), stamp(0.0));
        }
        h.close_open();
        assert_eq!(h.rows_closed, 5);
        assert_eq!(
            h.rows_discarded, 3,
            "the huge row plus two beyond the backlog of 2"
        );
        let (_, lines) = history_lines(&h.next_batch().unwrap());
        let steps: Vec<u64> = lines.iter().map(|l| l["_step"].as_u64().unwrap()).collect();
        assert_eq!(steps, vec![1, 2]);
    }
}
