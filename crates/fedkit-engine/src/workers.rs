//! In-process parallel execution: a fixed set of workers, each with its own single-threaded
//! rayon pool (so the tensor backend inside never splits a reduction across threads) and its own
//! model object. Jobs are pulled in any order, results returned in job order: the output never
//! depends on the thread count or on scheduling.

use std::sync::atomic::{AtomicUsize, Ordering};

use fedkit_core::{Error, Model, ModelPool, Result};

/// Worker threads with their models: one object per architecture (the run's model, then the
/// `[[model.per_client]]` ones) on each worker.
pub struct Workers {
    pools: Vec<rayon::ThreadPool>,
    models: Vec<Vec<Box<dyn Model>>>,
}

/// The worker threads `threads` asks for: 0 = RAYON_NUM_THREADS, else all cores.
pub fn thread_count(threads: usize) -> usize {
    match threads {
        0 => std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n: &usize| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)),
        n => n,
    }
}

impl Workers {
    /// `threads` workers (0 = RAYON_NUM_THREADS, else all cores), each with a copy of `model`.
    pub fn new(threads: usize, model: &dyn Model) -> Result<Self> {
        Self::with_architectures(threads, &[model])
    }

    /// `threads` workers, each with a copy of every model of `architectures` (index = the
    /// architecture [`Workers::map_on`] selects).
    pub fn with_architectures(threads: usize, architectures: &[&dyn Model]) -> Result<Self> {
        let n = thread_count(threads);
        let pools = (0..n)
            .map(|i| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .thread_name(move |_| format!("fedkit-worker-{i}"))
                    .build()
                    .map_err(|e| Error::Method(format!("cannot start worker thread: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let models = (0..n).map(|_| architectures.iter().map(|m| m.clone_box()).collect()).collect();
        Ok(Workers { pools, models })
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.pools.len()
    }

    /// True when there are no workers (never, once built).
    pub fn is_empty(&self) -> bool {
        self.pools.is_empty()
    }

    /// Run `job(model, i)` for i in 0..n across the workers, on the first architecture; results
    /// in job order.
    pub fn map<T: Send>(&mut self, n: usize, job: impl Fn(&mut dyn Model, usize) -> T + Sync) -> Vec<T> {
        self.map_on(n, |_| 0, job)
    }

    /// [`Workers::map`] with job i on the model of architecture `arch(i)`.
    pub fn map_on<T: Send>(
        &mut self,
        n: usize,
        arch: impl Fn(usize) -> usize + Sync,
        job: impl Fn(&mut dyn Model, usize) -> T + Sync,
    ) -> Vec<T> {
        if n == 0 {
            return Vec::new();
        }
        let next = AtomicUsize::new(0);
        let used = self.pools.len().min(n);
        let mut parts: Vec<Vec<(usize, T)>> = Vec::with_capacity(used);
        std::thread::scope(|s| {
            let handles: Vec<_> = self
                .pools
                .iter()
                .zip(self.models.iter_mut())
                .take(used)
                .map(|(pool, models)| {
                    let (next, job, arch) = (&next, &job, &arch);
                    s.spawn(move || {
                        pool.install(|| {
                            let mut out = Vec::new();
                            loop {
                                let i = next.fetch_add(1, Ordering::Relaxed);
                                if i >= n {
                                    break out;
                                }
                                out.push((i, job(models[arch(i)].as_mut(), i)));
                            }
                        })
                    })
                })
                .collect();
            for h in handles {
                match h.join() {
                    Ok(p) => parts.push(p),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        });
        let mut all: Vec<(usize, T)> = parts.into_iter().flatten().collect();
        all.sort_by_key(|(i, _)| *i);
        all.into_iter().map(|(_, t)| t).collect()
    }
}

impl ModelPool for Workers {
    fn run(&mut self, n: usize, job: &(dyn Fn(&mut dyn Model, usize) + Sync)) {
        self.map(n, job);
    }
}
