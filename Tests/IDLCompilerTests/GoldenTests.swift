import Foundation
import IDLCompiler
import XCTest

let repositoryRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// The committed generated files are golden files: the fixture's Swift and
/// `.proto` (Tests/WireTests/Generated, Tests/Fixtures/generated) and the
/// API's (Sources/RosterAPI/Generated, schema/generated). A fresh generation
/// must match them byte for byte, which is also what keeps them from drifting.
final class GoldenTests: XCTestCase {
    func testCommittedGeneratedCodeMatchesTheSchema() throws {
        let (manifest, root) = try Manifest.load(repositoryRoot.appendingPathComponent("codegen/manifest.json").path)
        XCTAssertFalse(manifest.jobs.isEmpty)
        for job in manifest.jobs {
            let files = try IDLCompiler.run(job, root: root).get()
            XCTAssertFalse(files.isEmpty)
            let drift = IDLCompiler.drift(files, job: job, root: root)
            XCTAssertEqual(drift, [], """
                Generated code differs from the schema. Run:
                  swift run roster-idl --manifest codegen/manifest.json
                """)
        }
    }

    func testOutputIsDeterministic() throws {
        let path = "Tests/Fixtures/everything.rdl"
        let text = try String(contentsOf: repositoryRoot.appendingPathComponent(path), encoding: .utf8)
        let options = CompileOptions(swiftOut: "s", protoOut: "p")
        let first = try IDLCompiler.compile([(path, text)], options: options).get()
        for _ in 0..<5 {
            XCTAssertEqual(try IDLCompiler.compile([(path, text)], options: options).get(), first)
        }
    }

    func testDriftIsDetected() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("roster-drift-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let root = dir
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("schema"), withIntermediateDirectories: true)
        try "package d.v1;\nmessage A { int32 x = 1; }\n".write(to: dir.appendingPathComponent("schema/a.rdl"), atomically: true, encoding: .utf8)
        let job = Manifest.Job(inputs: ["schema/a.rdl"], swiftOut: "gen", protoOut: "gen")

        var files = try IDLCompiler.run(job, root: root).get()
        XCTAssertEqual(Set(IDLCompiler.drift(files, job: job, root: root)),
                       [Drift(path: "gen/a.swift", kind: .missing), Drift(path: "gen/a.proto", kind: .missing)])
        try IDLCompiler.write(files, root: root)
        XCTAssertEqual(IDLCompiler.drift(files, job: job, root: root), [])

        // A schema change without regeneration.
        try "package d.v1;\nmessage A { int32 x = 1; string y = 2; }\n".write(to: dir.appendingPathComponent("schema/a.rdl"), atomically: true, encoding: .utf8)
        files = try IDLCompiler.run(job, root: root).get()
        XCTAssertEqual(Set(IDLCompiler.drift(files, job: job, root: root)),
                       [Drift(path: "gen/a.swift", kind: .stale), Drift(path: "gen/a.proto", kind: .stale)])
        try IDLCompiler.write(files, root: root)

        // A hand edit, and a file nothing generates.
        try "// edited\n".write(to: dir.appendingPathComponent("gen/a.swift"), atomically: true, encoding: .utf8)
        try "".write(to: dir.appendingPathComponent("gen/old.swift"), atomically: true, encoding: .utf8)
        XCTAssertEqual(IDLCompiler.drift(files, job: job, root: root),
                       [Drift(path: "gen/a.swift", kind: .stale), Drift(path: "gen/old.swift", kind: .extra)])
    }

    func testGeneratedSwiftShape() throws {
        let schema = """
            package g.v1;
            /// Doc for M.
            message M {
              /// Doc for the field.
              string advertiser_id = 1;
              optional int32 limit = 2;
              bytes hash = 3;
              int32 default = 4;
              int64 unknown_fields = 5;
            }
            enum Phase { PHASE_UNSPECIFIED = 0; PHASE_RUN = 1; PHASE_DEFAULT = 2; }
            service Svc = 3 inline { rpc DoThing(M) returns (M) = 4; }
            service Plain = 5 { rpc Other(M) returns (M) = 1; }
            """
        let files = try IDLCompiler.compile([("g.rdl", schema)], options: CompileOptions(swiftOut: "")).get()
        XCTAssertEqual(files.map(\.path), ["g.swift", "g+Services.swift"], "messages and services in files of their own")
        XCTAssertFalse(files[0].contents.contains("public enum Svc"))
        XCTAssertTrue(files[1].contents.contains("extension Plain.Handler"))
        XCTAssertFalse(files[1].contents.contains("Plain.InlineHandler"), "an InlineHandler only for a service declared inline")
        XCTAssertTrue(files[1].contents.contains("extension Svc.InlineHandler"))
        let swift = files.map(\.contents).joined()
        for expected in [
            "import Foundation\nimport RosterRPC\n",
            "/// Doc for M.\npublic struct M: ProtoMessage {",
            "    /// Doc for the field.\n    public var advertiserID: String = \"\"",
            "public var limit: Int32? = nil",
            "public var hash: Data = Data()",
            "public var `default`: Int32 = 0",
            "public var unknownFields_: Int64 = 0",
            "case `default` // = 2",
            "public static let doThing = RPCMethodDescriptor(service: Svc.name, method: \"DoThing\", id: 0x0003_0004)",
            "func doThing(_ request: M, context: RPCContext) async throws -> M",
            "func doThing(_ request: M, context: RPCContext) throws -> M",
            "public func doThing(_ request: M, options: CallOptions = .defaults) async throws -> M",
            "case 1: self.advertiserID = try reader.read(StringCodec.self, tag)",
        ] {
            XCTAssertTrue(swift.contains(expected), "missing:\n\(expected)\n--- in ---\n\(swift)")
        }
        XCTAssertFalse(swift.contains("import NIO"), "generated code imports only Foundation and the runtime")
    }
}

/// The worked example in docs/IDL.md compiles, so the document stays true.
final class DocumentationTests: XCTestCase {
    func testIDLDocumentExampleCompiles() throws {
        let doc = try String(contentsOf: repositoryRoot.appendingPathComponent("docs/IDL.md"), encoding: .utf8)
        let start = try XCTUnwrap(doc.range(of: "```proto\n"))
        let end = try XCTUnwrap(doc.range(of: "```", range: start.upperBound..<doc.endIndex))
        let example = String(doc[start.upperBound..<end.lowerBound])
        let files = try IDLCompiler.compile([("shop.rdl", example)], options: CompileOptions(swiftOut: "", protoOut: "")).get()
        func file(_ path: String) -> String { files.first { $0.path == path }?.contents ?? "" }
        XCTAssertTrue(file("shop.swift").contains("public var discountPercent: Int32? = nil"))
        XCTAssertTrue(file("shop+Services.swift").contains("id: 0x0003_0001"))
        XCTAssertTrue(file("shop.proto").contains("optional int32 discount_percent = 3;"))
    }
}
