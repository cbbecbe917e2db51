import Foundation
import XCTest

/// roster-idl as a user runs it: exit status, stdout, stderr.
final class CommandLineTests: XCTestCase {
    private var binary: URL {
        // The test bundle sits in the build folder beside the executables.
        var dir = Bundle(for: CommandLineTests.self).bundleURL
        while dir.pathExtension == "xctest" || dir.lastPathComponent == "Contents" || dir.lastPathComponent == "MacOS" {
            dir.deleteLastPathComponent()
        }
        return dir.appendingPathComponent("roster-idl")
    }

    private func run(_ arguments: [String], in directory: URL? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = directory }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    private func tempDir() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("roster-idl-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir
    }

    func testErrorsGoToStderrWithPositionsAndExitOne() throws {
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: binary.path), "roster-idl not built at \(binary.path)")
        let dir = try tempDir()
        try "package x;\nmessage A {\n  int32 a = 0;\n  Nope b = 2;\n}\n".write(to: dir.appendingPathComponent("bad.rdl"), atomically: true, encoding: .utf8)
        let result = try run(["--swift-out", "out", "bad.rdl"], in: dir)
        XCTAssertEqual(result.status, 1)
        XCTAssertEqual(result.stderr, """
            bad.rdl:3:13: error: field number 0 out of range; expected 1 to 536870911 (2^29-1)
            bad.rdl:4:3: error: unknown type 'Nope'; expected a scalar type, a message or an enum
            2 errors

            """)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("out").path), "nothing written on error")
    }

    func testGenerateThenCheck() throws {
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: binary.path), "roster-idl not built at \(binary.path)")
        let dir = try tempDir()
        try "package x;\nmessage A { int32 a = 1; }\n".write(to: dir.appendingPathComponent("a.rdl"), atomically: true, encoding: .utf8)
        var result = try run(["--check", "--swift-out", "out", "a.rdl"], in: dir)
        XCTAssertEqual(result.status, 1)
        XCTAssertEqual(result.stderr, "drift: out/a.swift: missing; the schema generates it\n")
        result = try run(["--swift-out", "out", "--proto-out", "out", "a.rdl"], in: dir)
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertEqual(result.stdout, "wrote out/a.swift\nwrote out/a.proto\n")
        result = try run(["--check", "--swift-out", "out", "--proto-out", "out", "a.rdl"], in: dir)
        XCTAssertEqual(result.status, 0, result.stderr)
    }

    func testUsageErrorsExitTwo() throws {
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: binary.path), "roster-idl not built at \(binary.path)")
        for args in [[], ["--swift-out"], ["--bogus", "a.rdl"]] {
            let result = try run(args)
            XCTAssertEqual(result.status, 2, "\(args)")
            XCTAssertTrue(result.stderr.hasPrefix("roster-idl: "), result.stderr)
            XCTAssertTrue(result.stderr.contains("usage: roster-idl"), result.stderr)
        }
        let missing = try run(["no-such-file.rdl"])
        XCTAssertEqual(missing.status, 1)
        XCTAssertTrue(missing.stderr.contains("no-such-file.rdl"), missing.stderr)
    }

    func testManifestCheckPassesOnTheRepository() throws {
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: binary.path), "roster-idl not built at \(binary.path)")
        let result = try run(["--manifest", repositoryRoot.appendingPathComponent("codegen/manifest.json").path, "--check"])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertEqual(result.stdout, "generated code is up to date with the schema\n")
    }
}
