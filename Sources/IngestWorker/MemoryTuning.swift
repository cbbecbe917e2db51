#if os(Linux)
@_silgen_name("mallopt")
private func mallopt(_ parameter: Int32, _ value: Int32) -> Int32
#endif

/// Keeps a worker's memory at one task's worth, whatever the file size.
///
/// Tasks allocate and free buffers of tens of megabytes (a block's keys, a
/// sort buffer, a merge range). glibc serves the first from `mmap` and, on
/// freeing one, raises its threshold so that later ones come from the heap,
/// where freed memory is kept by the thread that freed it: resident memory
/// then creeps up with the number of tasks. A fixed 1 MiB threshold keeps
/// every large buffer on `mmap`, returned to the system when freed.
enum MemoryTuning {
    static func returnLargeBuffersToTheSystem() {
        #if os(Linux)
        let M_MMAP_THRESHOLD: Int32 = -3
        _ = mallopt(M_MMAP_THRESHOLD, 1 << 20)
        #endif
    }
}
