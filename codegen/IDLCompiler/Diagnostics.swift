/// A position in a schema file, 1-based, counted in bytes of UTF-8 per column.
public struct SourceLocation: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int

    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }

    public var description: String { "\(file):\(line):\(column)" }

    public static func < (a: SourceLocation, b: SourceLocation) -> Bool {
        (a.file, a.line, a.column) < (b.file, b.line, b.column)
    }
}

/// One problem found in a schema, printed the way compilers print them:
/// `schema/match.rdl:12:5: error: duplicate field number 3 (first used by 'id' at 10:5)`.
public struct Diagnostic: Error, Sendable, Hashable, CustomStringConvertible {
    public var location: SourceLocation
    public var message: String

    public init(_ location: SourceLocation, _ message: String) {
        self.location = location
        self.message = message
    }

    public var description: String { "\(location): error: \(message)" }
}

/// Collects diagnostics so that one run reports every problem it can find.
struct DiagnosticSink {
    private(set) var diagnostics: [Diagnostic] = []

    mutating func error(_ location: SourceLocation, _ message: String) {
        diagnostics.append(Diagnostic(location, message))
    }

    var hasErrors: Bool { !diagnostics.isEmpty }
}
