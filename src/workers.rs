//! Helper threads for the CPU block kernel's per-token products.
//!
//! A decode step makes some 200 small matrix products. Handing each to rayon costs a sleeping
//! worker's wake-up, which the profile put at a fifth of the step (BENCHMARKS.md). These
//! helpers instead spin for a short while after a product, so the next one finds them awake;
//! then they park until a caller unparks them. The calling thread always works too, and never
//! waits for a helper that has not started, so a job finishes even if no helper ever comes.
//!
//! Natively the helpers are OS threads; in the browser's threaded build, Web Workers (see
//! [`start_helpers`]); in the browser build without threads there are none.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::SeqCst};
use std::sync::OnceLock;
use std::thread::Thread;

/// How long an idle helper spins before it parks (each round is one `spin_loop` hint).
// (The browser build without threads has no helpers.)
#[cfg_attr(
    all(target_arch = "wasm32", not(feature = "threads")),
    allow(dead_code)
)]
const SPIN_ROUNDS: u32 = 20_000;

struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    n: usize,
    next: AtomicUsize,
    panicked: AtomicBool,
}

impl Job<'_> {
    /// Takes items until none is left.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, SeqCst);
            if i >= self.n {
                return;
            }
            if catch_unwind(AssertUnwindSafe(|| (self.f)(i))).is_err() {
                self.panicked.store(true, SeqCst);
            }
        }
    }
}

/// The job on offer (a `Job` on the caller's stack), or null.
static JOB: AtomicPtr<()> = AtomicPtr::new(std::ptr::null_mut());
/// Helpers that may be reading `JOB`'s job: the caller waits for zero before its job ends.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// One caller at a time; another runs its items itself.
static BUSY: AtomicBool = AtomicBool::new(false);
static HELPERS: OnceLock<Vec<Thread>> = OnceLock::new();

/// The threads a job runs on: the helpers and the caller. Cached, because the standard
/// library's `available_parallelism` reads the cgroup files on every call on Linux, which cost
/// about 14 µs: as much as a whole 192 × 576 product.
pub fn threads() -> usize {
    helpers().len() + 1
}

fn helpers() -> &'static [Thread] {
    HELPERS.get_or_init(start_helpers)
}

/// Natively, one helper per core beyond the caller's.
#[cfg(not(target_arch = "wasm32"))]
fn start_helpers() -> Vec<Thread> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (1..cores)
        .filter_map(|_| {
            std::thread::Builder::new()
                .name("captioner-kernel".into())
                .spawn(helper)
                .ok()
                .map(|h| h.thread().clone())
        })
        .collect()
}

/// In the browser a thread is a Web Worker on the shared memory, and only JavaScript can start
/// one: [`crate::web::init_threads`] has wasm-bindgen-rayon start a pool, and each of its
/// threads becomes a helper for good (the pool runs nothing else). Without a pool, or in the
/// build without threads, the caller works alone.
#[cfg(target_arch = "wasm32")]
fn start_helpers() -> Vec<Thread> {
    #[cfg(feature = "threads")]
    {
        let pool = POOL_THREADS.load(SeqCst);
        (0..pool)
            .filter_map(|_| {
                let (tx, rx) = std::sync::mpsc::channel();
                rayon::spawn(move || {
                    if tx.send(std::thread::current()).is_ok() {
                        helper();
                    }
                });
                // The engine runs in a dedicated worker, where blocking is allowed.
                rx.recv().ok()
            })
            .collect()
    }
    #[cfg(not(feature = "threads"))]
    Vec::new()
}

/// The size of the Web Worker pool JavaScript started (0: none), set before it starts.
#[cfg(all(target_arch = "wasm32", feature = "threads"))]
pub static POOL_THREADS: AtomicUsize = AtomicUsize::new(0);

#[cfg_attr(
    all(target_arch = "wasm32", not(feature = "threads")),
    allow(dead_code)
)]
fn helper() {
    let mut idle = 0u32;
    loop {
        if JOB.load(SeqCst).is_null() {
            idle += 1;
            if idle < SPIN_ROUNDS {
                std::hint::spin_loop();
            } else {
                std::thread::park();
            }
            continue;
        }
        // Register before looking again: a caller that clears `JOB` then sees `ACTIVE` at
        // zero knows no helper still holds its job.
        ACTIVE.fetch_add(1, SeqCst);
        let job = JOB.load(SeqCst);
        if !job.is_null() {
            // SAFETY: the job outlives every helper registered while it was on offer: its
            // caller clears `JOB` and waits for `ACTIVE` to reach zero before returning.
            unsafe { &*(job as *const Job) }.work();
            idle = 0;
        }
        ACTIVE.fetch_sub(1, SeqCst);
    }
}

/// Runs `f(i)` for every `i` in `0..n`, on this thread and the helpers.
pub fn for_each(n: usize, f: &(dyn Fn(usize) + Sync)) {
    let helpers = helpers();
    if n <= 1 || helpers.is_empty() || BUSY.swap(true, SeqCst) {
        (0..n).for_each(f);
        return;
    }
    let job = Job {
        f,
        n,
        next: AtomicUsize::new(0),
        panicked: AtomicBool::new(false),
    };
    JOB.store(&job as *const Job as *mut (), SeqCst);
    for h in helpers {
        h.unpark();
    }
    job.work();
    JOB.store(std::ptr::null_mut(), SeqCst);
    while ACTIVE.load(SeqCst) != 0 {
        std::hint::spin_loop();
    }
    BUSY.store(false, SeqCst);
    if job.panicked.load(SeqCst) {
        panic!("a CPU kernel item panicked on a helper thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_runs_once_from_many_callers() {
        let callers: Vec<_> = (0..4)
            .map(|c| {
                std::thread::spawn(move || {
                    for round in 0..200 {
                        let n = 1 + (round * 7 + c) % 37;
                        let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                        for_each(n, &|i| {
                            hits[i].fetch_add(1, SeqCst);
                        });
                        assert!(hits.iter().all(|h| h.load(SeqCst) == 1));
                    }
                })
            })
            .collect();
        for c in callers {
            c.join().expect("caller");
        }
    }
}
