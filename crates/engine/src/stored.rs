//! Stored responses, for the Responses API's `previous_response_id` and `GET`/`DELETE
//! /v1/responses/{id}` on targets that keep none themselves (every target but a Responses one,
//! which keeps its own). What is kept is what the cache keeps: the masked request's turns and the
//! masked answer, never a secret; a later turn that names one continues the conversation with the
//! placeholders as they were (a value from an earlier turn comes back as its placeholder). Both
//! are sealed ([`crate::seal`]).

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::model::{ChatResponse, Message, Role};
use crate::seal::{Column, Sealer};
use crate::store::Store;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponsesConfig {
    /// Days a response is kept; 0 keeps none.
    pub keep_days: u32,
}

/// Keeps a response: the turns it was given (system turns left out: instructions do not carry
/// over) and its answer, both masked, both sealed.
pub fn keep(
    store: &Store,
    sealer: &std::sync::Arc<Sealer>,
    id: String,
    scope: String,
    messages: &[Message],
    answer: &ChatResponse,
) {
    let turns: Vec<&Message> = messages.iter().filter(|m| m.role != Role::System).collect();
    let (Ok(turns), Ok(answer)) = (serde_json::to_vec(&turns), serde_json::to_vec(answer)) else { return };
    let sealer = std::sync::Arc::clone(sealer);
    store.write(move |c| {
        let turns = sealer.seal(Column::ResponseTurns, id.as_bytes(), &turns);
        let answer = sealer.seal(Column::ResponseAnswer, id.as_bytes(), &answer);
        let r = c.execute(
            "INSERT OR REPLACE INTO responses (id, ts_ms, scope, turns, answer) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, crate::utc::now_ms(), scope, turns, answer],
        );
        if let Err(e) = r {
            tracing::error!(error = %e, "keeping a response failed");
        }
    });
}

/// A stored response: its turns and its answer.
pub struct Stored {
    pub turns: Vec<Message>,
    pub answer: ChatResponse,
    pub ts_ms: i64,
}

impl Stored {
    /// The conversation to continue: the turns, then the answer as the assistant's.
    pub fn conversation(self) -> Vec<Message> {
        let mut turns = self.turns;
        turns.push(Message { role: Role::Assistant, content: self.answer.content });
        turns
    }
}

/// The response `id` of `scope`; `None` also when it does not open (a key no longer held).
pub fn get(c: &Connection, sealer: &Sealer, id: &str, scope: &str) -> rusqlite::Result<Option<Stored>> {
    let row: Option<(Vec<u8>, Vec<u8>, i64)> = c
        .query_row("SELECT turns, answer, ts_ms FROM responses WHERE id = ?1 AND scope = ?2", [id, scope], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    Ok(row.and_then(|(turns, answer, ts_ms)| {
        Some(Stored {
            turns: sealer.open_json(Column::ResponseTurns, id.as_bytes(), &turns)?,
            answer: sealer.open_json(Column::ResponseAnswer, id.as_bytes(), &answer)?,
            ts_ms,
        })
    }))
}

pub fn delete(c: &Connection, id: &str, scope: &str) -> rusqlite::Result<bool> {
    Ok(c.execute("DELETE FROM responses WHERE id = ?1 AND scope = ?2", [id, scope])? > 0)
}

pub fn prune(c: &Connection, now_ms: i64, keep_days: u32) -> rusqlite::Result<usize> {
    c.execute("DELETE FROM responses WHERE ts_ms < ?1", [now_ms - i64::from(keep_days) * crate::utc::DAY_MS])
}
