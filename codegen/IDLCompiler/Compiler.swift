import Foundation

/// One generated file: where it goes and what it holds.
public struct GeneratedFile: Sendable, Hashable {
    public var path: String
    public var contents: String
}

/// What the compiler is asked to produce from a set of schema files.
public struct CompileOptions: Sendable {
    /// Folder for one `.swift` file per schema file; `nil` for none.
    public var swiftOut: String?
    /// Folder for one `.proto` file per schema file; `nil` for none.
    public var protoOut: String?
    /// Emit `optional` fields as synthetic oneofs, for protobuf tools older
    /// than protoc 3.15 (Debian's protobuf-c 1.4.1, for one).
    public var legacyOptional: Bool

    public init(swiftOut: String? = nil, protoOut: String? = nil, legacyOptional: Bool = false) {
        self.swiftOut = swiftOut
        self.protoOut = protoOut
        self.legacyOptional = legacyOptional
    }
}

/// The schema compiler's entry point: text in, generated files or
/// diagnostics out. No I/O happens here, so tests call it directly.
public enum IDLCompiler {
    /// Parses and checks `sources` (path → text) as one package.
    public static func check(_ sources: [(path: String, text: String)]) -> Result<CheckedSchema, CompileFailure> {
        var diagnostics: [Diagnostic] = []
        var files: [SchemaFile] = []
        for source in sources {
            let (file, errors) = Parser.parse(text: source.text, path: source.path)
            files.append(file)
            diagnostics += errors
        }
        let (schema, errors) = Checker.check(files)
        diagnostics += errors
        if diagnostics.isEmpty { diagnostics += ImportGraph.cycles(in: schema) }
        if !diagnostics.isEmpty {
            return .failure(CompileFailure(diagnostics: diagnostics.sorted { $0.location < $1.location }))
        }
        return .success(schema)
    }

    /// Compiles `sources` into the files `options` asks for, in a stable order.
    public static func compile(_ sources: [(path: String, text: String)], options: CompileOptions) -> Result<[GeneratedFile], CompileFailure> {
        check(sources).map { schema in
            var out: [GeneratedFile] = []
            for file in schema.files {
                let base = baseName(file.path)
                let sourceName = (file.path as NSString).lastPathComponent
                if let dir = options.swiftOut {
                    out.append(GeneratedFile(path: join(dir, base + ".swift"),
                                             contents: SwiftEmitter.emit(file, sourceName: sourceName)))
                    if let services = SwiftEmitter.emitServices(file, sourceName: sourceName) {
                        out.append(GeneratedFile(path: join(dir, base + "+Services.swift"), contents: services))
                    }
                }
                if let dir = options.protoOut {
                    out.append(GeneratedFile(
                        path: join(dir, base + ".proto"),
                        contents: ProtoEmitter.emit(file, sourceName: sourceName, imports: protoImports(file, in: schema),
                                                    style: options.legacyOptional ? .syntheticOneof : .proto3Optional)))
                }
            }
            return out
        }
    }

    /// The other files of the schema whose types `file` uses.
    static func protoImports(_ file: SchemaFile, in schema: CheckedSchema) -> [String] {
        ImportGraph.uses(of: file).keys.sorted().map { baseName($0) + ".proto" }
    }

    static func baseName(_ path: String) -> String {
        ((path as NSString).lastPathComponent as NSString).deletingPathExtension
    }

    static func join(_ dir: String, _ name: String) -> String {
        dir.isEmpty ? name : (dir as NSString).appendingPathComponent(name)
    }
}

/// Every diagnostic of a failed compilation, sorted by position.
public struct CompileFailure: Error, Sendable, CustomStringConvertible {
    public var diagnostics: [Diagnostic]
    public var description: String { diagnostics.map(\.description).joined(separator: "\n") }
}
