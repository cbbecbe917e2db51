/// Memory a worker reuses from task to task instead of allocating afresh.
///
/// A block's run image and a merge range's sort buffer are tens of
/// megabytes. Allocated per task, such a buffer comes fresh from the kernel
/// (glibc serves it with `mmap`) and costs a page fault per 4 KiB on first
/// touch: about 15 ms per 32 MB on this machine, on every task. A worker
/// slot runs one task at a time, so it keeps one scratch buffer; a buffer
/// grown unusually large (say by a crowded merge range) is released by
/// `shrink(toAtMost:)` after the task, so memory stays bounded.
///
/// Not thread-safe: one owner at a time.
public final class ScratchBuffer: @unchecked Sendable {
    private var base: UnsafeMutableRawPointer?
    public private(set) var capacity = 0

    public init() {}

    deinit { base?.deallocate() }

    /// At least `count` bytes, 64-byte aligned, valid until the next call.
    /// The contents are not kept when the buffer grows.
    public func bytes(_ count: Int) -> UnsafeMutableRawPointer {
        if count > capacity || base == nil {
            base?.deallocate()
            capacity = max(count, capacity + capacity / 4, 4096)
            base = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64)
        }
        return base!
    }

    /// Gives the memory back to the system if it is larger than `limit` bytes.
    public func shrink(toAtMost limit: Int) {
        guard capacity > limit else { return }
        base?.deallocate()
        base = nil
        capacity = 0
    }
}
