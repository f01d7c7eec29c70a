//! The VM backend's progress ([`cordon_vm::Progress`]) on stderr: on a terminal
//! one line, redrawn, of a bar of the steps done, the step and its seconds so
//! far; else a line per step and its time once done. Drawn only once a step
//! begins: a run that makes nothing prints nothing.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Where the lines about a step go.
#[derive(Debug, Clone, Copy)]
pub enum Notes {
    /// stdout: `cordon vm setup`, whose output they are.
    Stdout,
    /// stderr: a run, whose stdout is its command's.
    Stderr,
}

pub struct TerminalProgress {
    state: Arc<Mutex<Bar>>,
    /// Set when the steps are over: the redrawing thread ends.
    done: Arc<AtomicBool>,
}

struct Bar {
    /// Who speaks, off a terminal ("cordon vm setup").
    who: &'static str,
    notes: Notes,
    total: usize,
    step: usize,
    what: String,
    since: Instant,
    tty: bool,
    drawing: bool,
}

impl Bar {
    fn draw(&self) {
        if self.tty && self.step > 0 {
            let width = 20;
            let filled = width * (self.step - 1) / self.total.max(1);
            eprint!(
                "\r\x1b[2K[{}{}] {}/{} {} ({:.1} s)",
                "#".repeat(filled),
                "-".repeat(width - filled),
                self.step,
                self.total,
                self.what,
                self.since.elapsed().as_secs_f64()
            );
        }
    }

    fn clear(&self) {
        if self.tty && self.step > 0 {
            eprint!("\r\x1b[2K");
        }
    }

    /// The step that ends, off a terminal.
    fn ended(&self) {
        if !self.tty && self.step > 0 {
            eprintln!(
                "{}: [{}/{}] {}: {:.1} s",
                self.who,
                self.step,
                self.total,
                self.what,
                self.since.elapsed().as_secs_f64()
            );
        }
    }
}

impl TerminalProgress {
    pub fn new(who: &'static str, notes: Notes) -> TerminalProgress {
        TerminalProgress {
            state: Arc::new(Mutex::new(Bar {
                who,
                notes,
                total: 0,
                step: 0,
                what: String::new(),
                since: Instant::now(),
                tty: std::io::stderr().is_terminal(),
                drawing: false,
            })),
            done: Arc::new(AtomicBool::new(false)),
        }
    }

    fn bar(&self) -> MutexGuard<'_, Bar> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl cordon_vm::Progress for TerminalProgress {
    fn begin(&self, steps: usize) {
        let mut bar = self.bar();
        bar.total = bar.total.max(bar.step + steps);
        if bar.tty && !std::mem::replace(&mut bar.drawing, true) {
            // Redrawn ten times a second: the seconds of a long step move.
            let (state, done) = (self.state.clone(), self.done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    if let Ok(bar) = state.lock() {
                        bar.draw();
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
    }

    fn step(&self, what: &str) {
        let mut bar = self.bar();
        bar.ended();
        bar.step += 1;
        bar.total = bar.total.max(bar.step);
        bar.what = what.to_string();
        bar.since = Instant::now();
        bar.draw();
    }

    /// A line between the steps, the bar redrawn below it.
    fn println(&self, line: &str) {
        let bar = self.bar();
        bar.clear();
        match bar.notes {
            Notes::Stdout => println!("{line}"),
            Notes::Stderr => eprintln!("{}: {line}", bar.who),
        }
        bar.draw();
    }

    fn finish(&self) {
        if self.done.swap(true, Ordering::Relaxed) {
            return;
        }
        let bar = self.bar();
        bar.ended();
        bar.clear();
    }
}
