//! The worker pool: a fixed number of inference threads fed by one bounded
//! queue of images.
//!
//! Why this shape:
//! - A request's images are queued as separate jobs, so a batch of two is
//!   served by two workers at once when they are free.
//! - The queue is bounded in images ([`Pool::submit`] takes all of a
//!   request's images or none): when it is full the caller answers `busy`
//!   at once instead of letting work pile up without limit.
//! - Each worker owns its own engine state (for tract, a run state on the
//!   shared plan); nothing is locked on the inference path but the queue.
//! - A panic in a worker is caught, answered as an `internal` error for that
//!   image, and the worker's state is thrown away and rebuilt: the worker is
//!   replaced and the server keeps serving.
//! - Every job is answered exactly once, whatever happens, so a connection
//!   waiting for its replies can never hang on a lost job.
//! - A request's images are ranges of its one frame body, shared by its jobs
//!   (no copies); the body, and the memory it holds, is freed when the last
//!   job is done with it.
//! - A request can be cancelled (its connection is gone, or one of its
//!   images failed and the request has failed with it): its jobs still in the
//!   queue are then taken out and answered at once without being run.

use std::collections::VecDeque;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use shared::frame::{ClassScore, ErrorCode, ErrorReply, ImageResult, StageTimings};

/// What a worker does with one image. The real engine is tract (see
/// `main.rs`); tests use engines that fail or panic on purpose.
pub trait Engine: Send + Sync + 'static {
    type State: Send + 'static;
    fn new_state(&self) -> Result<Self::State, String>;
    /// Classifies one encoded image. Returns the top classes and the time
    /// spent decoding and in inference, in microseconds.
    fn classify(&self, state: &mut Self::State, image: &[u8], top_k: usize) -> Result<Classified, ErrorReply>;
}

pub struct Classified {
    pub top: Vec<ClassScore>,
    pub decode_us: u32,
    pub infer_us: u32,
}

/// The answer for one image, tagged with its place in the request.
pub type ImageOutcome = (usize, Result<ImageResult, ErrorReply>);

/// The bytes a request's images lie in (a frame body, and whatever memory
/// reservation comes with it), shared by the request's jobs.
pub type Body = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// One request's work: its images as ranges of `body`.
pub struct Batch {
    pub body: Body,
    pub images: Vec<Range<usize>>,
    pub top_k: usize,
    /// Set by the submitter to drop the request's jobs still queued.
    pub cancel: Arc<AtomicBool>,
}

struct Job {
    body: Body,
    image: Range<usize>,
    index: usize,
    top_k: usize,
    arrived: Instant,
    cancel: Arc<AtomicBool>,
    reply: Sender<ImageOutcome>,
}

struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    capacity: usize,
    panics: AtomicU64,
}

fn lock(m: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    // A poisoned lock only means another thread panicked while holding it;
    // the queue itself is always in a consistent state between operations.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue cannot take all of the request's images now.
    Busy { queued: usize, capacity: usize },
    /// The pool is shutting down.
    Closed,
}

impl Pool {
    /// Starts `workers` threads, each building its state first. Fails if any
    /// worker cannot build its state.
    pub fn start<E: Engine>(engine: Arc<E>, workers: usize, capacity: usize) -> Result<Pool, String> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue { jobs: VecDeque::with_capacity(capacity), closed: false }),
            ready: Condvar::new(),
            capacity,
            panics: AtomicU64::new(0),
        });
        let mut handles = Vec::with_capacity(workers);
        for n in 0..workers {
            let state = engine.new_state()?;
            let (engine, shared) = (Arc::clone(&engine), Arc::clone(&shared));
            let handle = std::thread::Builder::new()
                .name(format!("worker-{n}"))
                .spawn(move || work(n, engine.as_ref(), state, &shared))
                .map_err(|e| format!("cannot start worker {n}: {e}"))?;
            handles.push(handle);
        }
        Ok(Pool { shared, workers: handles })
    }

    /// Queues every image of one request, or none of them. The outcomes
    /// arrive on the returned channel, one per image, in any order.
    pub fn submit(&self, batch: Batch) -> Result<Receiver<ImageOutcome>, SubmitError> {
        let (tx, rx) = channel();
        let arrived = Instant::now();
        let mut q = lock(&self.shared.queue);
        if q.closed {
            return Err(SubmitError::Closed);
        }
        if q.jobs.len() + batch.images.len() > self.shared.capacity {
            return Err(SubmitError::Busy { queued: q.jobs.len(), capacity: self.shared.capacity });
        }
        let Batch { body, images, top_k, cancel } = batch;
        for (index, image) in images.into_iter().enumerate() {
            let (body, cancel, reply) = (Arc::clone(&body), Arc::clone(&cancel), tx.clone());
            q.jobs.push_back(Job { body, image, index, top_k, arrived, cancel, reply });
        }
        drop(q);
        self.shared.ready.notify_all();
        Ok(rx)
    }

    /// Cancels a request: sets its flag, so that a worker about to take one
    /// of its jobs skips it, and takes its jobs still queued out of the queue
    /// at once, answering each as cancelled. Returns how many were taken.
    pub fn cancel(&self, cancel: &Arc<AtomicBool>) -> usize {
        cancel.store(true, Ordering::SeqCst);
        let mut q = lock(&self.shared.queue);
        let (taken, kept): (VecDeque<Job>, VecDeque<Job>) = q.jobs.drain(..).partition(|j| Arc::ptr_eq(&j.cancel, cancel));
        q.jobs = kept;
        drop(q);
        for job in &taken {
            let _ = job.reply.send((job.index, Err(cancelled())));
        }
        taken.len()
    }

    /// How many worker panics were caught since start.
    pub fn panics(&self) -> u64 {
        self.shared.panics.load(Ordering::Relaxed)
    }

    /// Stops taking work, lets the workers finish what is queued, and joins them.
    pub fn shutdown(self) {
        lock(&self.shared.queue).closed = true;
        self.shared.ready.notify_all();
        for w in self.workers {
            let _ = w.join();
        }
    }
}

fn work<E: Engine>(n: usize, engine: &E, mut state: E::State, shared: &Shared) {
    loop {
        let job = {
            let mut q = lock(&shared.queue);
            loop {
                if let Some(job) = q.jobs.pop_front() {
                    break job;
                }
                if q.closed {
                    return;
                }
                q = shared.ready.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        let queue_us = micros(job.arrived.elapsed().as_micros());
        let image = (*job.body).as_ref().get(job.image.clone());
        let outcome = match image {
            _ if job.cancel.load(Ordering::SeqCst) => Ok(Err(cancelled())),
            Some(image) => catch_unwind(AssertUnwindSafe(|| engine.classify(&mut state, image, job.top_k))),
            None => Ok(Err(ErrorReply::new(ErrorCode::Internal, "image range outside its request body"))),
        };
        let result = match outcome {
            Ok(Ok(c)) => Ok(ImageResult {
                timings: StageTimings { queue_us, decode_us: c.decode_us, infer_us: c.infer_us },
                top: c.top,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                shared.panics.fetch_add(1, Ordering::Relaxed);
                eprintln!("worker-{n}: panicked on an image; its state is discarded and rebuilt");
                match engine.new_state() {
                    Ok(fresh) => state = fresh,
                    Err(e) => eprintln!("worker-{n}: cannot rebuild its state ({e}); keeping the old one"),
                }
                Err(ErrorReply::new(ErrorCode::Internal, "the model server failed on this image (worker panicked and was replaced)"))
            }
        };
        // The receiver is gone only if its connection died; nothing to do then.
        let _ = job.reply.send((job.index, result));
        // Dropping the job here releases its share of the request's body.
    }
}

fn cancelled() -> ErrorReply {
    ErrorReply::new(ErrorCode::Internal, "not run: the request was cancelled")
}

/// Saturating conversion of a duration in microseconds to the wire's u32.
pub fn micros(us: u128) -> u32 {
    u32::try_from(us).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Answers with the image's first byte as the class; panics on "panic",
    /// fails on "fail", sleeps on "slow".
    struct Fake {
        states_built: AtomicU64,
    }

    impl Engine for Fake {
        type State = u64;
        fn new_state(&self) -> Result<u64, String> {
            Ok(self.states_built.fetch_add(1, Ordering::SeqCst))
        }
        fn classify(&self, _: &mut u64, image: &[u8], _: usize) -> Result<Classified, ErrorReply> {
            match image {
                b"panic" => panic!("test-only panic"),
                b"fail" => Err(ErrorReply::new(ErrorCode::BadImage, "bad")),
                b"slow" => {
                    std::thread::sleep(Duration::from_millis(300));
                    Ok(Classified { top: vec![], decode_us: 0, infer_us: 0 })
                }
                _ => Ok(Classified {
                    top: vec![ClassScore { class_id: u32::from(image[0]), score: 1.0 }],
                    decode_us: 1,
                    infer_us: 2,
                }),
            }
        }
    }

    fn collect(rx: Receiver<ImageOutcome>, n: usize) -> Vec<Result<ImageResult, ErrorReply>> {
        let mut out: Vec<ImageOutcome> = (0..n).map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap()).collect();
        out.sort_by_key(|(i, _)| *i);
        out.into_iter().map(|(_, r)| r).collect()
    }

    fn fake() -> Arc<Fake> {
        Arc::new(Fake { states_built: AtomicU64::new(0) })
    }

    /// A batch whose images are the given byte strings, laid end to end in one body.
    fn batch(images: Vec<Vec<u8>>) -> Batch {
        let mut body = Vec::new();
        let mut ranges = Vec::new();
        for image in images {
            ranges.push(body.len()..body.len() + image.len());
            body.extend(image);
        }
        Batch { body: Arc::new(body), images: ranges, top_k: 1, cancel: Arc::new(AtomicBool::new(false)) }
    }

    #[test]
    fn answers_every_image_in_request_order() {
        let pool = Pool::start(fake(), 2, 8).unwrap();
        let rx = pool.submit(batch(vec![vec![7], vec![9], vec![3]])).unwrap();
        let got = collect(rx, 3);
        let ids: Vec<u32> = got.iter().map(|r| r.as_ref().unwrap().top[0].class_id).collect();
        assert_eq!(ids, vec![7, 9, 3]);
        pool.shutdown();
    }

    #[test]
    fn a_panicking_worker_is_reported_and_replaced() {
        let engine = fake();
        let pool = Pool::start(Arc::clone(&engine), 1, 8).unwrap();
        let got = collect(pool.submit(batch(vec![b"panic".to_vec(), vec![5]])).unwrap(), 2);
        let err = got[0].as_ref().unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::Internal));
        // The same single worker serves the next image, on a fresh state.
        assert_eq!(got[1].as_ref().unwrap().top[0].class_id, 5);
        assert_eq!(pool.panics(), 1);
        assert_eq!(engine.states_built.load(Ordering::SeqCst), 2);
        let again = collect(pool.submit(batch(vec![vec![6]])).unwrap(), 1);
        assert_eq!(again[0].as_ref().unwrap().top[0].class_id, 6);
        pool.shutdown();
    }

    #[test]
    fn errors_are_per_image() {
        let pool = Pool::start(fake(), 1, 8).unwrap();
        let got = collect(pool.submit(batch(vec![b"fail".to_vec(), vec![1]])).unwrap(), 2);
        assert_eq!(got[0].as_ref().unwrap_err().code(), Some(ErrorCode::BadImage));
        assert!(got[1].is_ok());
        pool.shutdown();
    }

    #[test]
    fn a_full_queue_refuses_the_whole_request_at_once() {
        let pool = Pool::start(fake(), 1, 2).unwrap();
        let slow = pool.submit(batch(vec![b"slow".to_vec()])).unwrap();
        std::thread::sleep(Duration::from_millis(50)); // the worker takes it
        let held = pool.submit(batch(vec![b"slow".to_vec(), b"slow".to_vec()])).unwrap();
        assert_eq!(pool.submit(batch(vec![vec![1]])).unwrap_err(), SubmitError::Busy { queued: 2, capacity: 2 });
        collect(slow, 1);
        collect(held, 2);
        pool.shutdown();
    }

    #[test]
    fn a_cancelled_request_is_answered_without_running_its_queued_images() {
        let pool = Pool::start(fake(), 1, 8).unwrap();
        let slow = batch(vec![b"slow".to_vec(), b"slow".to_vec(), b"slow".to_vec(), b"slow".to_vec()]);
        let cancel = Arc::clone(&slow.cancel);
        let rx = pool.submit(slow).unwrap();
        std::thread::sleep(Duration::from_millis(50)); // the worker takes the first
        assert_eq!(pool.cancel(&cancel), 3, "the three queued jobs are taken out");
        assert_eq!(lock(&pool.shared.queue).jobs.len(), 0);
        let got = collect(rx, 4);
        assert!(got[0].is_ok(), "the image already running finishes");
        // The engine answers Ok for "slow": an error means it was never called.
        for r in &got[1..] {
            assert_eq!(r.as_ref().unwrap_err().message, "not run: the request was cancelled");
        }
        // Another request's jobs are untouched.
        let other = batch(vec![vec![3]]);
        assert_eq!(pool.cancel(&cancel), 0);
        assert_eq!(collect(pool.submit(other).unwrap(), 1)[0].as_ref().unwrap().top[0].class_id, 3);
        pool.shutdown();
    }

    #[test]
    fn the_body_is_released_when_the_last_job_is_done() {
        let pool = Pool::start(fake(), 1, 8).unwrap();
        let b = batch(vec![vec![1], vec![2]]);
        let body = Arc::clone(&b.body);
        collect(pool.submit(b).unwrap(), 2);
        std::thread::sleep(Duration::from_millis(20)); // the worker drops its last job
        assert_eq!(Arc::strong_count(&body), 1);
        pool.shutdown();
    }

    #[test]
    fn shutdown_finishes_queued_work_then_refuses() {
        let pool = Pool::start(fake(), 1, 8).unwrap();
        let rx = pool.submit(batch(vec![b"slow".to_vec(), vec![4]])).unwrap();
        let shared = Arc::clone(&pool.shared);
        pool.shutdown();
        assert_eq!(collect(rx, 2).len(), 2);
        assert!(lock(&shared.queue).closed);
    }
}
