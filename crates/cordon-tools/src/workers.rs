//! The threads that read and run requests (see `server.rs`: each job handed here
//! is "read the next request"). An idle thread takes the next job; when none is
//! idle a new one starts, so a slow `exec` never holds up a `read`. A thread idle
//! for [`IDLE_EXIT`] ends. Reusing threads saves starting one per request (its
//! stack mapping, guard page and clone), about a fifth of a small write's cost.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How long a thread waits for another request before it ends.
const IDLE_EXIT: Duration = Duration::from_secs(30);

type Job = Box<dyn FnOnce() + Send>;

pub struct Workers {
    shared: Arc<Shared>,
    sender: Mutex<Sender<Job>>,
}

struct Shared {
    jobs: Mutex<Receiver<Job>>,
    /// Threads waiting for a job, less the jobs sent to them and not yet taken.
    idle: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes one idle thread for a job about to be sent; false if there is none.
fn claim(idle: &AtomicUsize) -> bool {
    idle.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl Workers {
    pub fn new() -> Workers {
        let (sender, jobs) = mpsc::channel();
        Workers {
            shared: Arc::new(Shared {
                jobs: Mutex::new(jobs),
                idle: AtomicUsize::new(0),
            }),
            sender: Mutex::new(sender),
        }
    }

    /// Runs `job` on an idle thread, or on a new one if none is idle.
    pub fn run(&self, job: impl FnOnce() + Send + 'static) -> io::Result<()> {
        if claim(&self.shared.idle) {
            // The claimed thread (or another idle one) takes it; the receiver lives
            // as long as `shared`, so the send cannot fail.
            let _ = lock(&self.sender).send(Box::new(job));
            return Ok(());
        }
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("request".into())
            .spawn(move || {
                job();
                shared.serve();
            })
            .map(drop)
    }
}

impl Default for Workers {
    fn default() -> Workers {
        Workers::new()
    }
}

impl Shared {
    /// Takes jobs until none comes for [`IDLE_EXIT`].
    fn serve(&self) {
        self.idle.fetch_add(1, Ordering::SeqCst);
        loop {
            let next = lock(&self.jobs).recv_timeout(IDLE_EXIT);
            match next {
                Ok(job) => {
                    job();
                    self.idle.fetch_add(1, Ordering::SeqCst);
                }
                // Leave only if no job was promised to the idle threads meanwhile;
                // if one was, it is in the channel or about to be: wait for it.
                Err(RecvTimeoutError::Timeout) if claim(&self.idle) => return,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::time::Instant;

    #[test]
    fn a_busy_thread_never_holds_up_the_next_job() {
        let workers = Workers::new();
        let (release_tx, release_rx) = channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let blocked = Arc::new(release_rx);
        let b = blocked.clone();
        workers
            .run(move || {
                let _ = lock(&b).recv();
            })
            .unwrap();
        let (done_tx, done_rx) = channel();
        workers.run(move || done_tx.send(()).unwrap()).unwrap();
        done_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the second job waited for the first");
        release_tx.send(()).unwrap();
    }

    #[test]
    fn threads_are_reused_and_every_job_runs_once() {
        let workers = Workers::new();
        let (tx, rx) = channel();
        for i in 0..200 {
            let tx = tx.clone();
            workers
                .run(move || tx.send((i, std::thread::current().id())).unwrap())
                .unwrap();
            // One job at a time: each finds the previous one's thread idle, but for
            // the moment between its job's end and its return to waiting.
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(tx);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        let mut threads = std::collections::HashSet::new();
        while let Ok((i, thread)) = rx.recv_timeout(deadline - Instant::now()) {
            seen.push(i);
            threads.insert(thread);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..200).collect::<Vec<_>>());
        assert!(threads.len() < 20, "{} threads for 200 jobs", threads.len());
    }

    #[test]
    fn concurrent_jobs_all_run() {
        let workers = Arc::new(Workers::new());
        let (tx, rx) = channel();
        let submitters: Vec<_> = (0..8)
            .map(|s| {
                let (workers, tx) = (workers.clone(), tx.clone());
                std::thread::spawn(move || {
                    for i in 0..100 {
                        let tx = tx.clone();
                        workers.run(move || tx.send(s * 100 + i).unwrap()).unwrap();
                    }
                })
            })
            .collect();
        for s in submitters {
            s.join().unwrap();
        }
        drop(tx);
        let mut seen: Vec<i32> = Vec::new();
        while let Ok(v) = rx.recv_timeout(Duration::from_secs(10)) {
            seen.push(v);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..800).collect::<Vec<_>>());
    }
}
