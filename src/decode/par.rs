//! A minimal parallel map for the per-sequence math between decodes
//! (log-softmax, sampling): llama.cpp's threads are idle then, so the work
//! is spread over the same number of threads.

/// `items.iter().map(f).collect()`, on up to `threads` scoped threads, in order.
pub(crate) fn par_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::par_map;

    #[test]
    fn keeps_order_for_any_thread_count() {
        let items: Vec<u64> = (0..37).collect();
        for threads in [1, 2, 3, 8, 100] {
            assert_eq!(
                par_map(&items, threads, |x| x * x),
                items.iter().map(|x| x * x).collect::<Vec<_>>()
            );
        }
        assert!(par_map(&[] as &[u64], 4, |x| *x).is_empty());
    }
}
