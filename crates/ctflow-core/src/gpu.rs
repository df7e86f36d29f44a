//! Local GPUs as a resource: each job gets its own, none is shared.

use std::collections::BTreeSet;

/// A job this pool can never run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    /// The machine has no GPU at all.
    #[error("the job needs {wanted} GPU(s) but this machine has none")]
    NoGpus {
        /// GPUs the job asks for.
        wanted: u32,
    },
    /// The machine has fewer GPUs than the job asks for.
    #[error("the job needs {wanted} GPU(s) but this machine has only {total}")]
    TooFew {
        /// GPUs the job asks for.
        wanted: u32,
        /// GPUs the machine has.
        total: u32,
    },
}

/// The free and busy GPU indices of one worker pool.
#[derive(Debug, Clone, Default)]
pub struct GpuPool {
    all: BTreeSet<u32>,
    free: BTreeSet<u32>,
}

impl GpuPool {
    /// A pool of these GPU indices, all free.
    pub fn new(indices: impl IntoIterator<Item = u32>) -> GpuPool {
        let all: BTreeSet<u32> = indices.into_iter().collect();
        GpuPool {
            free: all.clone(),
            all,
        }
    }

    /// How many GPUs the pool has.
    pub fn total(&self) -> u32 {
        self.all.len() as u32
    }

    /// How many are free now.
    pub fn free(&self) -> u32 {
        self.free.len() as u32
    }

    /// Whether a job that wants `wanted` GPUs can ever run here.
    pub fn check(&self, wanted: u32) -> Result<(), GpuError> {
        match self.total() {
            _ if wanted == 0 => Ok(()),
            0 => Err(GpuError::NoGpus { wanted }),
            total if wanted > total => Err(GpuError::TooFew { wanted, total }),
            _ => Ok(()),
        }
    }

    /// Takes `wanted` free GPUs (lowest indices first), or `None` when not enough are
    /// free now.
    pub fn acquire(&mut self, wanted: u32) -> Result<Option<Vec<u32>>, GpuError> {
        self.check(wanted)?;
        if wanted == 0 {
            return Ok(Some(Vec::new()));
        }
        if self.free() < wanted {
            return Ok(None);
        }
        let taken: Vec<u32> = self.free.iter().copied().take(wanted as usize).collect();
        for gpu in &taken {
            self.free.remove(gpu);
        }
        Ok(Some(taken))
    }

    /// Gives GPUs back to the pool.
    pub fn release(&mut self, gpus: &[u32]) {
        for gpu in gpus {
            if self.all.contains(gpu) {
                self.free.insert(*gpu);
            }
        }
    }
}

/// Parses `nvidia-smi --query-gpu=index --format=csv,noheader` output.
pub fn parse_nvidia_smi_indices(output: &str) -> Vec<u32> {
    output
        .lines()
        .filter_map(|line| line.trim().parse::<u32>().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn no_gpu_machine_fails_at_once() {
        let mut pool = GpuPool::new([]);
        assert_eq!(pool.acquire(1), Err(GpuError::NoGpus { wanted: 1 }));
        assert_eq!(pool.acquire(0), Ok(Some(vec![])));
        let mut two = GpuPool::new([0, 1]);
        assert_eq!(
            two.acquire(3),
            Err(GpuError::TooFew {
                wanted: 3,
                total: 2
            })
        );
    }

    #[test]
    fn jobs_queue_until_gpus_are_free() {
        let mut pool = GpuPool::new([0, 1, 2]);
        let a = pool.acquire(2).expect("fits").expect("free");
        assert_eq!(a, vec![0, 1]);
        assert_eq!(pool.acquire(2), Ok(None));
        let b = pool.acquire(1).expect("fits").expect("free");
        assert_eq!(b, vec![2]);
        pool.release(&a);
        assert_eq!(pool.acquire(2), Ok(Some(vec![0, 1])));
    }

    #[test]
    fn nvidia_smi_output() {
        assert_eq!(parse_nvidia_smi_indices("0\n1\n\n"), vec![0, 1]);
        assert!(parse_nvidia_smi_indices("No devices were found").is_empty());
    }

    proptest! {
        /// Whatever the order of acquisitions and releases, no GPU is held twice.
        #[test]
        fn never_shared(ops in proptest::collection::vec((0u32..4, any::<bool>()), 1..100)) {
            let mut pool = GpuPool::new(0..4);
            let mut held: Vec<Vec<u32>> = Vec::new();
            for (wanted, release) in ops {
                if release && !held.is_empty() {
                    let gpus = held.remove(0);
                    pool.release(&gpus);
                } else if let Ok(Some(gpus)) = pool.acquire(wanted) {
                    held.push(gpus);
                }
                let mut all: Vec<u32> = held.iter().flatten().copied().collect();
                let count = all.len();
                all.sort();
                all.dedup();
                prop_assert_eq!(all.len(), count);
                prop_assert_eq!(pool.free() as usize + count, 4);
            }
        }
    }
}
