import Foundation
import IDLCompiler
import RosterRPC
import TestSupport
import XCTest

/// Interop with an independent protobuf implementation (protobuf-c): the
/// `.proto` roster-idl emits is compiled by protoc-c, and a C program checks
/// bytes from the Swift encoder and produces bytes for the Swift decoder.
///
/// The C toolchain and protobuf-c come from Debian (`.ci/run` installs them).
/// Where they are missing the test is skipped, except under CI (CI=true, as
/// `.ci/run` runs) or with ROSTER_REQUIRE_INTEROP=1, where a skip would hide a
/// missing install step and so fails instead.
final class InteropTests: XCTestCase {
    private let goldenDir = repositoryRoot.appendingPathComponent("Tests/Fixtures/interop")

    func testSwiftEncodingMatchesGolden() throws {
        let bytes = InteropFixture.document.serializedBytes()
        try assertGolden(bytes, name: "document.swift.hex")
    }

    func testProtobufCReadsSwiftAndSwiftReadsProtobufC() throws {
        let tools = try buildInteropChecker()
        let swiftBytes = InteropFixture.document.serializedBytes()

        // Swift → C: protobuf-c decodes our bytes and checks every field.
        let swiftFile = tools.dir.appendingPathComponent("swift.bin")
        try Data(swiftBytes).write(to: swiftFile)
        let decode = try run(tools.checker, ["decode", swiftFile.path])
        XCTAssertEqual(decode.status, 0, "protobuf-c rejected the Swift encoding:\n\(decode.output)")

        // C → Swift: our decoder reads protobuf-c's bytes back exactly.
        let cFile = tools.dir.appendingPathComponent("c.bin")
        let encode = try run(tools.checker, ["encode", cFile.path])
        XCTAssertEqual(encode.status, 0, encode.output)
        let cBytes = [UInt8](try Data(contentsOf: cFile))
        try assertGolden(cBytes, name: "document.c.hex")
        let decoded = try Document(serializedBytes: cBytes)
        XCTAssertTrue(decoded.unknownFields.isEmpty)
        // Re-encoding is deterministic, so equal bytes mean every field agrees,
        // bit for bit (a NaN payload included, which == cannot compare).
        XCTAssertEqual(hex(decoded.serializedBytes()), hex(swiftBytes))
        XCTAssertEqual(decoded.repeats?.real64s.first?.bitPattern, InteropFixture.nanBits)
    }

    func testGoldenVectorsDecodeBothWays() throws {
        // Each side's golden bytes decode to the canonical value, with no tools needed.
        for name in ["document.swift.hex", "document.c.hex"] {
            let text = try String(contentsOf: goldenDir.appendingPathComponent(name), encoding: .utf8)
            let decoded = try Document(serializedBytes: unhex(text))
            XCTAssertEqual(hex(decoded.serializedBytes()), hex(InteropFixture.document.serializedBytes()), name)
        }
    }

    /// Every `.proto` emitted from `schema/` compiles on its own, one file
    /// at a time as any protobuf user compiles them (no joining): with
    /// protoc (`--python_out`, `--descriptor_set_out`) as written, and with
    /// protoc-c from the `--legacy-optional` output. A schema whose files
    /// import each other fails here (protoc: "File recursively imports
    /// itself") before any user meets it.
    func testEveryEmittedProtoCompilesOnItsOwnWithProtocAndProtobufC() throws {
        for tool in ["protoc", "protoc-c"] where which(tool) == nil {
            throw missingDependency("\(tool) not found; install protobuf-compiler and protobuf-c-compiler", requireVariable: "ROSTER_REQUIRE_INTEROP")
        }
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: repositoryRoot.appendingPathComponent("codegen/manifest.json"))) as? [String: Any]
        let jobs = manifest?["jobs"] as? [[String: Any]] ?? []
        let inputs = try XCTUnwrap(jobs.first { ($0["protoOut"] as? String) == "schema/generated" }?["inputs"] as? [String])
        XCTAssertGreaterThanOrEqual(inputs.count, 5)
        let sources = try inputs.map { ($0, try String(contentsOf: repositoryRoot.appendingPathComponent($0), encoding: .utf8)) }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("roster-protos-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let modern = dir.appendingPathComponent("proto3"), legacy = dir.appendingPathComponent("legacy"), out = dir.appendingPathComponent("out")
        for folder in [modern, legacy, out] { try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true) }
        try IDLCompiler.write(try IDLCompiler.compile(sources, options: CompileOptions(protoOut: modern.path)).get(), root: dir)
        try IDLCompiler.write(try IDLCompiler.compile(sources, options: CompileOptions(protoOut: legacy.path, legacyOptional: true)).get(), root: dir)
        for input in inputs {
            let name = ((input as NSString).lastPathComponent as NSString).deletingPathExtension + ".proto"
            let protoc = try run(URL(fileURLWithPath: which("protoc")!), [
                "--proto_path=\(modern.path)", "--python_out=\(out.path)", "--descriptor_set_out=\(out.appendingPathComponent(name + ".pb").path)",
                modern.appendingPathComponent(name).path,
            ])
            XCTAssertEqual(protoc.status, 0, "protoc rejected \(name) on its own:\n\(protoc.output)")
            let protocC = try run(URL(fileURLWithPath: which("protoc-c")!),
                                  ["--proto_path=\(legacy.path)", "--c_out=\(out.path)", legacy.appendingPathComponent(name).path])
            XCTAssertEqual(protocC.status, 0, "protoc-c rejected \(name) (--legacy-optional) on its own:\n\(protocC.output)")
        }
    }

    // MARK: Helpers

    private func assertGolden(_ bytes: [UInt8], name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let url = goldenDir.appendingPathComponent(name)
        if ProcessInfo.processInfo.environment["ROSTER_UPDATE_GOLDEN"] == "1" {
            try FileManager.default.createDirectory(at: goldenDir, withIntermediateDirectories: true)
            try hexLines(bytes).write(to: url, atomically: true, encoding: .utf8)
        }
        let golden = try String(contentsOf: url, encoding: .utf8)
        XCTAssertEqual(hex(bytes), hex(unhex(golden)), "bytes differ from \(name)", file: file, line: line)
    }

    private struct Tools {
        var dir: URL
        var checker: URL
    }

    private func buildInteropChecker() throws -> Tools {
        for tool in ["protoc-c", "cc"] where which(tool) == nil {
            throw missingDependency("\(tool) not found; install protobuf-c-compiler and a C compiler", requireVariable: "ROSTER_REQUIRE_INTEROP")
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("roster-interop-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }

        let schemaPath = "Tests/Fixtures/everything.rdl"
        let text = try String(contentsOf: repositoryRoot.appendingPathComponent(schemaPath), encoding: .utf8)
        let files = try IDLCompiler.compile([(schemaPath, text)],
                                            options: CompileOptions(protoOut: dir.path, legacyOptional: true)).get()
        try IDLCompiler.write(files, root: dir)

        let protoc = try run(URL(fileURLWithPath: which("protoc-c")!),
                             ["--proto_path=\(dir.path)", "--c_out=\(dir.path)", dir.appendingPathComponent("everything.proto").path])
        XCTAssertEqual(protoc.status, 0, "protoc-c rejected the emitted .proto:\n\(protoc.output)")
        let checker = dir.appendingPathComponent("interop_check")
        let cc = try run(URL(fileURLWithPath: which("cc")!), [
            "-O1", "-I", dir.path, "-o", checker.path,
            repositoryRoot.appendingPathComponent("Tests/Interop/interop_check.c").path,
            dir.appendingPathComponent("everything.pb-c.c").path, "-lprotobuf-c", "-lm",
        ])
        if cc.status != 0 {
            throw missingDependency("cannot build the protobuf-c checker (is libprotobuf-c-dev installed?):\n\(cc.output)",
                                    requireVariable: "ROSTER_REQUIRE_INTEROP")
        }
        return Tools(dir: dir, checker: checker)
    }

    private func which(_ tool: String) -> String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":") {
            let path = "\(dir)/\(tool)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }

    private func run(_ executable: URL, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }
}
