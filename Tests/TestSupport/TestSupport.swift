import Foundation
import RosterRPC
import XCTest

/// A small, fast, seedable generator (SplitMix64), so that every random test
/// replays the same inputs on every machine.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Runs `body`, expecting an `RPCError` with `code`; returns the error.
@discardableResult
public func assertStatus(_ code: RPCStatusCode, file: StaticString = #filePath, line: UInt = #line,
                         _ body: () async throws -> Void) async -> RPCError? {
    do {
        try await body()
        XCTFail("expected \(code), got success", file: file, line: line)
        return nil
    } catch let error as RPCError {
        XCTAssertEqual(error.code, code, error.message, file: file, line: line)
        return error
    } catch {
        XCTFail("expected RPCError \(code), got \(error)", file: file, line: line)
        return nil
    }
}

/// Polls `condition` every 10 ms for up to `timeout`.
public func waitUntil(timeout: Duration = .seconds(5), file: StaticString = #filePath, line: UInt = #line,
                      _ condition: () -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        if ContinuousClock.now > deadline {
            XCTFail("condition not met within \(timeout)", file: file, line: line)
            return
        }
        try await Task.sleep(for: .milliseconds(10))
    }
}

/// What a test needs from outside the package (a server `.ci/run` starts, a
/// tool it installs) is missing: a visible skip on a developer's machine,
/// but a failure under CI (`CI=true`) or with `requireVariable=1`, where a
/// skip would hide a missing install step.
public func missingDependency(_ message: String, requireVariable: String,
                              file: StaticString = #filePath, line: UInt = #line) -> XCTSkip {
    let environment = ProcessInfo.processInfo.environment
    if environment["CI"] == "true" || environment[requireVariable] == "1" {
        XCTFail(message + " (required under CI=true or \(requireVariable)=1)", file: file, line: line)
        return XCTSkip("failed: " + message)
    }
    return XCTSkip(message + " (set \(requireVariable)=1 to fail instead)")
}

/// Polls an async condition (bounded).
public func waitUntilAsync(timeout: Duration = .seconds(20), file: StaticString = #filePath, line: UInt = #line,
                    _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while try await !condition() {
        if ContinuousClock.now > deadline {
            XCTFail("condition not met within \(timeout)", file: file, line: line)
            return
        }
        try await Task.sleep(for: .milliseconds(10))
    }
}

