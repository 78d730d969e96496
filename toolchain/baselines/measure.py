"""What a fine-tuning run measures besides accuracy (peak memory) and how it samples rows
(a stratified, seeded subsample, for quick runs only)."""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def stratified_subsample(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded subsample of size ``n`` keeping class proportions (largest
    remainder); every class keeps at least one example when ``n`` allows it."""
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * (n / len(labels))
    take = np.floor(exact).astype(int)
    if n >= len(classes):
        take = np.maximum(take, 1)
    take = np.minimum(take, counts)
    # Hand out what is left by largest remainder, then take back from the largest classes.
    order = np.argsort(-(exact - np.floor(exact)), kind="stable")
    i = 0
    while take.sum() < n:
        c = order[i % len(order)]
        if take[c] < counts[c]:
            take[c] += 1
        i += 1
    while take.sum() > n:
        c = int(np.argmax(take))
        take[c] -= 1
    rng = np.random.default_rng(seed)
    chosen = []
    for cls, k in zip(classes, take, strict=True):
        idx = np.flatnonzero(labels == cls)
        chosen.append(rng.permutation(idx)[:k])
    return np.sort(np.concatenate(chosen))


class PeakMemory:
    """Peak memory of the run: the CUDA allocator's peak on a GPU; on the CPU the process's
    peak RSS (VmHWM), reset at the start where the kernel allows it (/proc/self/clear_refs)."""

    def __init__(self, device) -> None:
        self.device = device
        self.source = "rss_hwm_process"

    def start(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.source = "cuda_max_allocated"
            return
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.source = "rss_hwm"
        except OSError as exc:
            log.debug("cannot reset the peak RSS (%s); reporting the process's lifetime peak", exc)

    def peak(self) -> int:
        """Bytes: the CUDA allocator's peak, or VmHWM (or getrusage where /proc is missing)."""
        import torch

        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024



def peak_rss_bytes() -> int:
    """Peak RSS from ``resource.getrusage`` (ru_maxrss: KiB on Linux). Linux computes it from the
    same high-water mark as VmHWM, so after PeakMemory's reset it covers the run, not the
    process's lifetime (seen in CI: both within 76 KiB)."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
