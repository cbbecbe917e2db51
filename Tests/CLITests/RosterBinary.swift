import Foundation
import XCTest

/// The built `roster` executable, run as a user would.
enum RosterBinary {
    static var url: URL {
        // The test bundle sits next to the products of the same build.
        var dir = Bundle(for: Marker.self).bundleURL.deletingLastPathComponent()
        if !FileManager.default.fileExists(atPath: dir.appendingPathComponent("roster").path) {
            dir = URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent(".build/debug")
        }
        return dir.appendingPathComponent("roster")
    }

    private final class Marker {}

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// An unprivileged user to run as (nobody) when the tests run as root;
    /// nil when they already run as another user. Throws XCTSkip when root
    /// has no `setpriv` (required under CI).
    static func unprivilegedUser() throws -> UInt32? {
        guard getuid() == 0 else { return nil }
        guard FileManager.default.isExecutableFile(atPath: setpriv) else {
            if ProcessInfo.processInfo.environment["CI"] == "true" { XCTFail("CI runs as root and has no \(setpriv) (util-linux)") }
            throw XCTSkip("running as root without \(setpriv): cannot drop privileges")
        }
        return 65534
    }

    static let setpriv = "/usr/bin/setpriv"

    /// Points `process` at the binary, as `user` when given (through setpriv).
    static func prepare(_ process: Process, _ args: [String], as user: UInt32?, netns: String? = nil) {
        if let netns {
            // `ip netns exec` enters the namespace and execs the binary: the
            // process (and its pid, for signals) is roster's own.
            process.executableURL = URL(fileURLWithPath: NetnsRig.ip)
            process.arguments = ["netns", "exec", netns, url.path] + args
        } else if let user {
            process.executableURL = URL(fileURLWithPath: setpriv)
            process.arguments = ["--reuid=\(user)", "--regid=\(user)", "--clear-groups", "--", url.path] + args
        } else {
            process.executableURL = url
            process.arguments = args
        }
    }

    /// Every variable a token comes from: none leaks from the test's own environment.
    static let tokenVariables = ["ROSTER_TOKEN", "ROSTER_ADMIN_TOKEN", "ROSTER_OPERATOR_TOKEN", "ROSTER_WORKER_TOKEN", "ROSTER_NODE_TOKEN",
                                 "ROSTER_CLIENT_TOKENS", "ROSTER_ADMIN_TOKENS", "ROSTER_OPERATOR_TOKENS", "ROSTER_VIEWER_TOKENS",
                                 "ROSTER_WORKER_TOKENS", "ROSTER_NODE_TOKENS", "ROSTER_COORDINATOR_TOKENS"]

    /// Runs `roster args... | reader...` (a reader that may stop early, as
    /// `head` does): roster's status and standard error, the reader's output.
    static func runPiped(_ args: [String], into reader: [String], timeout: TimeInterval = 30) throws -> Result {
        let process = Process(), consumer = Process()
        prepare(process, args, as: nil)
        var environment = ProcessInfo.processInfo.environment
        for key in tokenVariables { environment[key] = nil }
        process.environment = environment
        consumer.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        consumer.arguments = reader
        let pipe = Pipe(), out = Pipe(), err = Pipe()
        process.standardOutput = pipe
        process.standardError = err
        consumer.standardInput = pipe
        consumer.standardOutput = out
        try consumer.run()
        try process.run()
        // Only the reader holds the pipe's read end now: when it exits, roster's writes fail.
        try? pipe.fileHandleForReading.close()
        let deadline = Date().addingTimeInterval(timeout)
        while (process.isRunning || consumer.isRunning) && Date() < deadline { usleep(10_000) }
        if process.isRunning { process.terminate(); XCTFail("roster \(args.joined(separator: " ")) ran past \(timeout) s") }
        process.waitUntilExit()
        consumer.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self),
                      stderr: String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
    }

    /// Runs `roster args...` to completion (killed after `timeout`).
    static func run(_ args: [String], stdin: String? = nil, timeout: TimeInterval = 30, as user: UInt32? = nil,
                    environment extra: [String: String] = [:], netns: String? = nil) throws -> Result {
        let process = Process()
        prepare(process, args, as: user, netns: netns)
        var environment = ProcessInfo.processInfo.environment
        for key in RosterBinary.tokenVariables + ["ROSTER_COORDINATOR", "ROSTER_MATCH"] {
            environment[key] = nil
        }
        environment.merge(extra) { $1 }
        process.environment = environment
        let out = Pipe(), err = Pipe(), input = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = input
        try process.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try? input.fileHandleForWriting.close()
        let deadline = Date().addingTimeInterval(timeout)
        // Read while waiting, so a full pipe never blocks the child.
        final class Box: @unchecked Sendable { var data = Data() }
        let stdoutBox = Box(), stderrBox = Box()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async { stdoutBox.data = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        group.enter()
        DispatchQueue.global().async { stderrBox.data = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning {
            process.terminate()
            XCTFail("roster \(args.joined(separator: " ")) ran past \(timeout) s")
        }
        process.waitUntilExit()
        group.wait()
        return Result(status: process.terminationStatus, stdout: String(decoding: stdoutBox.data, as: UTF8.self),
                      stderr: String(decoding: stderrBox.data, as: UTF8.self))
    }
}

/// A long-running `roster` (dev, coordinator, ...) whose output is read as it comes.
final class RosterService: @unchecked Sendable {
    let process = Process()
    private let lock = NSLock()
    private var output = ""
    private var errors = ""

    init(_ args: [String], environment extra: [String: String] = [:], as user: UInt32? = nil, netns: String? = nil) throws {
        RosterBinary.prepare(process, args, as: user, netns: netns)
        var environment = ProcessInfo.processInfo.environment
        for key in RosterBinary.tokenVariables { environment[key] = nil }
        environment.merge(extra) { $1 }
        process.environment = environment
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        out.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            guard let self, !data.isEmpty else { return }
            self.lock.withLock { self.output += String(decoding: data, as: UTF8.self) }
        }
        err.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            guard let self, !data.isEmpty else { return }
            self.lock.withLock { self.errors += String(decoding: data, as: UTF8.self) }
        }
        try process.run()
    }

    var stdout: String { lock.withLock { output } }
    var stderr: String { lock.withLock { errors } }
    var isRunning: Bool { process.isRunning }

    /// Sends `signal` (SIGSTOP to freeze it mid-work, SIGCONT to resume).
    func signal(_ signal: Int32) { kill(process.processIdentifier, signal) }

    /// Waits until standard output has a line starting with `prefix`; returns the rest of it.
    func waitForLine(_ prefix: String, timeout: TimeInterval = 30) throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            for line in stdout.split(separator: "\n") {
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                if trimmed.hasPrefix(prefix) { return String(trimmed.dropFirst(prefix.count)).trimmingCharacters(in: .whitespaces) }
            }
            if !process.isRunning { break }
            usleep(20_000)
        }
        throw NSError(domain: "RosterService", code: 1, userInfo: [NSLocalizedDescriptionKey:
            "no line '\(prefix)' from roster \(process.arguments ?? []); stdout: \(stdout) stderr: \(stderr.suffix(2000))"])
    }

    /// Sends `signal` and waits for the process to exit; returns its status.
    @discardableResult
    func stop(_ signal: Int32 = SIGINT, timeout: TimeInterval = 20) -> Int32 {
        guard process.isRunning else { return process.terminationStatus }
        kill(process.processIdentifier, signal)
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        return process.terminationStatus
    }
}

/// Polls `body` until it returns true.
func eventually(timeout: TimeInterval = 30, _ what: String, _ body: () throws -> Bool) throws {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try body() { return }
        usleep(100_000)
    }
    throw NSError(domain: "eventually", code: 1, userInfo: [NSLocalizedDescriptionKey: "timed out waiting for \(what)"])
}
