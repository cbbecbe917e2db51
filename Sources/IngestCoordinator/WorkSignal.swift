import Synchronization

/// Wakes long-polling `LeaseTasks` calls when work may have appeared.
///
/// Waiters are woken all at once and then race for the work through the
/// catalog, so a spurious wake-up only costs one empty lease.
///
/// A notification between a caller's look at the catalog and its `wait`
/// is not lost: the caller reads `generation` before looking, and `wait`
/// returns at once if a notification came since.
final class WorkSignal: Sendable {
    private struct State {
        /// Notifications so far.
        var generation = 0
        var next = 0
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
        /// Waits resumed before their continuation was registered.
        var fired: Set<Int> = []
    }
    private let state = Mutex(State())

    /// Notifications so far: read before looking for work, passed to `wait`.
    var generation: Int { state.withLock { $0.generation } }

    /// Returns when `notify` is called or `timeout` passes, whichever is
    /// first; at once if `notify` was called since `generation` was `seen`.
    func wait(timeout: Duration, since seen: Int? = nil) async {
        guard let id = state.withLock({ s -> Int? in
            if let seen, s.generation != seen { return nil }
            s.next += 1
            return s.next
        }) else { return }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                try? await Task.sleep(for: timeout)
                self.resume(id)
            }
            group.addTask {
                await withCheckedContinuation { continuation in
                    let resumeNow = self.state.withLock { s -> Bool in
                        // Already timed out before we registered: resume at once.
                        if s.fired.remove(id) != nil { return true }
                        s.waiters[id] = continuation
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            }
            await group.next()
            group.cancelAll()
            // Whichever finished first, make sure the other one ends too.
            resume(id)
            await group.waitForAll()
        }
        state.withLock { _ = $0.fired.remove(id) }
    }

    private func resume(_ id: Int) {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if let waiter = s.waiters.removeValue(forKey: id) { return waiter }
            s.fired.insert(id)
            return nil
        }
        waiter?.resume()
    }

    func notify() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.generation &+= 1
            defer { s.waiters.removeAll() }
            return Array(s.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }
}
