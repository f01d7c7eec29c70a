//! What the VM backend reports while it makes what a first run needs (the
//! boot files, the template snapshot): seconds to tens of seconds under TCG,
//! which a user should see passing rather than a silent terminal. `cordon vm
//! setup` makes the same things ahead of time and reports them the same way.
//! The backend only says what it does; the command line draws it.

/// A sink for the steps of making the VM's files.
pub trait Progress: Send + Sync {
    /// At least `steps` more steps follow (counted with those already told).
    fn begin(&self, steps: usize);
    /// The next step, `what` it makes.
    fn step(&self, what: &str);
    /// A line about the current step (a file made, a choice taken).
    fn println(&self, line: &str);
    /// The steps are over: whatever was drawn is cleared, before a command's
    /// output. Called again, does nothing.
    fn finish(&self);
}
