#ifndef ROSTER_CPREFETCH_H
#define ROSTER_CPREFETCH_H

/// Asks the CPU to start loading the cache line at `address` without
/// waiting for it. Swift has no prefetch of its own; a batch lookup issues
/// these a few keys ahead so that many cache misses are in flight at once
/// instead of one (docs/STORAGE.md, "Lookup").
static inline void roster_prefetch(const void *address) {
    __builtin_prefetch(address, 0, 3);
}

#endif
