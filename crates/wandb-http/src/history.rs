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
}

/// A closed history line awaiting delivery.
#[derive(Debug, Clone)]
struct Line {
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
#[derive(Debug)]
pub(crate) struct History {
    open: Option<(u64, Row, Stamp)>,
    pending: VecDeque<Line>,
    /// History line number of `pending[0]`.
    next_offset: u64,
    summary: BTreeMap<String, Field>,
    summary_version: u64,
    summary_delivered_version: u64,
    max_pending: usize,
    max_body: usize,
    /// Rows closed so far (delivered or not).
    pub(crate) rows_closed: u64,
    /// Closed rows dropped because the pending queue was full or the row alone exceeded the
    /// request size limit.
    pub(crate) rows_discarded: u64,
}

/// Room kept for the JSON wrapping around the lines of one request.
const BODY_OVERHEAD: usize = 256;

impl History {
    pub(crate) fn new(max_pending: usize, max_body: usize) -> History {
        History {
            open: None,
            pending: VecDeque::new(),
            next_offset: 0,
            summary: BTreeMap::new(),
            summary_version: 0,
            summary_delivered_version: 0,
            max_pending: max_pending.max(1),
            max_body: max_body.max(BODY_OVERHEAD * 4),
            rows_closed: 0,
            rows_discarded: 0,
        }
    }

    /// Sets the line number of the first undelivered row (the run's `historyLineCount`).
    pub(crate) fn start_at(&mut self, offset: u64) {
        self.next_offset = offset;
    }

    /// Line number the next delivered row gets.
    #[cfg(test)]
    pub(crate) fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Applies W&B's step rule: same step merges, larger step closes the open row, lower step is
    /// dropped. Accepted keys also update the summary.
    pub(crate) fn log(&mut self, step: u64, row: Row, stamp: Stamp) -> Logged {
        match &mut self.open {
            Some((open_step, _, _)) if step < *open_step => {
                return Logged::Stale {
                    open_step: *open_step,
                };
            }
            Some((open_step, open_row, open_stamp)) if step == *open_step => {
                for (k, v) in &row.fields {
                    self.summary.insert(k.clone(), v.clone());
                }
                open_row.merge(row);
                *open_stamp = stamp;
            }
            _ => {
                self.close_open();
                for (k, v) in &row.fields {
                    self.summary.insert(k.clone(), v.clone());
                }
                self.open = Some((step, row, stamp));
            }
        }
        self.summary
            .insert("_step".to_owned(), Field::Json(Value::from(step)));
        self.summary
            .insert("_runtime".to_owned(), Field::Float(stamp.runtime));
        self.summary
            .insert("_timestamp".to_owned(), Field::Float(stamp.timestamp));
        self.summary_version += 1;
        Logged::Accepted
    }

    /// Closes the open row (at finish, or when a larger step arrives).
    pub(crate) fn close_open(&mut self) {
        let Some((step, row, stamp)) = self.open.take() else {
            return;
        };
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
        } else if self.pending.len() >= self.max_pending {
            tracing::warn!(step, "W&B backlog full; history row not sent");
            self.rows_discarded += 1;
        } else {
            self.pending.push_back(Line { text, wire_len });
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

    /// The next request: as many pending lines from the front as fit under the size limit, plus
    /// the summary when it changed and fits. `None` when nothing is unsent.
    pub(crate) fn next_batch(&self) -> Option<Batch> {
        if !self.has_unsent() {
            return None;
        }
        let mut files = serde_json::Map::new();
        let mut budget = self.max_body - BODY_OVERHEAD;
        let mut summary_version = None;
        if self.summary_version > self.summary_delivered_version {
            let text = encode_object(&self.summary);
            let wire_len = Value::String(text.clone()).to_string().len();
            if wire_len < budget / 2 {
                budget -= wire_len;
                files.insert(
                    "wandb-summary.json".to_owned(),
                    json!({"offset": 0, "content": [text]}),
                );
                summary_version = Some(self.summary_version);
            } else {
                tracing::warn!(bytes = wire_len, "W&B summary too large to send");
            }
        }
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
        self.pending.drain(..n);
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
        let mut h = History::new(100, 1 << 20);
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
        let body: Value = serde_json::from_str(&batch.body).unwrap();
        let summary: Value = serde_json::from_str(
            body["files"]["wandb-summary.json"]["content"][0]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            summary,
            json!({"a": 3.0, "b": 2.0, "_step": 20, "_runtime": 3.0, "_timestamp": 1003.0})
        );
        h.acknowledge(&batch);
        assert_eq!(h.next_offset(), 6);
        assert!(!h.has_unsent());
        h.close_open();
        let (offset, lines) = history_lines(&h.next_batch().unwrap());
        assert_eq!((offset, lines.len()), (6, 1));
        assert_eq!(lines[0]["_step"], 20);
    }

    #[test]
    fn batches_are_split_under_the_size_limit_and_keep_offsets_contiguous() {
        let mut h = History::new(1000, 4096);
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
        let mut h = History::new(2, 2048);
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
