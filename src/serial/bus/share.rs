//! The bus's side of sharing the line: exchanges of programs that share it (the Modbus TCP
//! server's clients) turned away when they cannot be served, written in their turn, answered
//! from the device's frame; the line's time counted for the
//! [`Share`](crate::serial::schedule::Share); and the answers to the
//! gateway's own Modbus reads kept for the server's cached reads.

use std::time::Instant;

use bytes::Bytes;

use super::{answer_window, switch, write, Asked, Bus, Pending};
use crate::serial::exchange::{Exchange, Outcome};
use crate::serial::port::Stop;

impl Bus<'_, '_> {
    /// A new exchange: one for a device that is offline is answered at once, even while the
    /// line is busy; any other waits for its turn.
    pub(super) fn take(&mut self, e: Exchange) {
        if self.schedule.is_offline(e.member) {
            let _ = e.answer.send(Outcome::Offline);
        } else {
            self.clients.push(e.client, e);
        }
    }

    /// Answers at once the exchanges that waited past their expiry, and those for a device
    /// that is offline (asking it would cost the line a timeout).
    pub(super) fn turn_away(&mut self, now: Instant) {
        let schedule = &self.schedule;
        for e in self
            .clients
            .drain_where(|e| e.expires <= now || schedule.is_offline(e.member))
        {
            let outcome = if e.expires <= now {
                Outcome::Expired
            } else {
                Outcome::Offline
            };
            let _ = e.answer.send(outcome);
        }
    }

    /// Writes the next client's request; its answer is awaited like a poll's.
    pub(super) async fn exchange(&mut self, now: Instant, contended: bool) -> Result<(), Stop> {
        let Some(e) = self.clients.pop() else {
            return Ok(());
        };
        let Some(d) = self.task.devices.get(e.member) else {
            let _ = e.answer.send(Outcome::Closed);
            return Ok(());
        };
        switch(&mut self.frames, e.member, true);
        if let Err(why) = write(self.frames.get_mut(), &e.request).await {
            let _ = e.answer.send(Outcome::Closed);
            return Err(Stop::Gone(format!("write error: {why}")));
        }
        self.pending = Some(Pending {
            member: e.member,
            asked: Asked::Exchange,
            attempt: 0,
            deadline: Instant::now() + d.serial.wire_time(e.request.len()) + answer_window(d),
            started: now,
            contended,
        });
        self.on_line = Some(e);
        Ok(())
    }

    /// Counts a finished transaction's line time for the [`Share`], when it was contended.
    pub(super) fn account(&mut self, t: &Pending) {
        if t.contended {
            self.share
                .used(matches!(t.asked, Asked::Exchange), t.started.elapsed());
        }
    }

    /// The exchange on the line was answered: the frame goes back when its checksum passes.
    pub(super) fn answered(&mut self, d: &crate::config::Device, frame: &Bytes) {
        let Some(e) = self.on_line.take() else {
            return;
        };
        let good = d.checksum.as_ref().is_none_or(|c| c.verify(frame).is_ok());
        let outcome = if good {
            Outcome::Answer(frame.clone())
        } else {
            Outcome::NoAnswer
        };
        let _ = e.answer.send(outcome);
    }

    /// Keeps the data of a Modbus read's answer for the server's cached reads.
    pub(super) fn cache(&self, m: usize, p: usize, frame: &[u8]) {
        let Some(unit) = &self.task.devices[m].modbus else {
            return;
        };
        let Some(r) = unit.requests.get(p) else {
            return;
        };
        if let Ok(data) = crate::modbus::decode::data(unit.unit, r.table, r.start, r.count, frame) {
            self.task
                .cache
                .store(m, r.table, r.start, r.count, data, Instant::now());
        }
    }
}
