import Foundation
@testable import IngestCoordinator
import XCTest

/// The long poll's wake-up: a notification that lands between a lease
/// call's look at the catalog and its wait is not lost (it used to be: the
/// call then slept up to a second with work waiting).
final class WorkSignalTests: XCTestCase {
    /// Whether `body` finishes before `limit` (far longer than it needs).
    private func finishes(within limit: Duration, _ body: @escaping @Sendable () async -> Void) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask { await body(); return true }
            group.addTask { try? await Task.sleep(for: limit); return false }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }

    func testANotificationSinceTheCallerLookedEndsTheWaitAtOnce() async {
        let signal = WorkSignal()
        let seen = signal.generation
        signal.notify() // work appeared while the caller was looking
        let woke = await finishes(within: .seconds(20)) { await signal.wait(timeout: .seconds(60), since: seen) }
        XCTAssertTrue(woke, "the notification was lost")
    }

    func testAWaiterIsWokenByANotificationAndOtherwiseTimesOut() async {
        let signal = WorkSignal()
        let seen = signal.generation
        let waiter = Task { await signal.wait(timeout: .seconds(60), since: seen) }
        // Notify until the waiter has registered and been woken.
        let woke = await finishes(within: .seconds(20)) {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await waiter.value }
                group.addTask {
                    while !Task.isCancelled { signal.notify(); try? await Task.sleep(for: .milliseconds(5)) }
                }
                await group.next()
                group.cancelAll()
            }
        }
        XCTAssertTrue(woke)
        let timedOut = await finishes(within: .seconds(20)) { await signal.wait(timeout: .milliseconds(10), since: signal.generation) }
        XCTAssertTrue(timedOut, "a wait with nothing new ends at its timeout")
    }
}
