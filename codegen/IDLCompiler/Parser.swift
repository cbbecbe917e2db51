/// A recursive-descent parser for the schema language (grammar: docs/IDL.md).
///
/// On a syntax error it reports what it found and what it expected, then
/// skips to the end of the current statement (`;`) or block (`}`) and goes on,
/// so that one run lists every independent mistake.
struct Parser {
    private var tokens: [Token]
    private var index = 0
    private(set) var sink = DiagnosticSink()
    private let path: String

    /// Thrown to unwind out of a statement after its error was reported.
    private struct Recover: Error {}

    init(text: String, path: String) {
        var lexer = Lexer(text: text, file: path)
        tokens = lexer.tokenize()
        sink = lexer.sink
        self.path = path
    }

    static func parse(text: String, path: String) -> (SchemaFile, [Diagnostic]) {
        var parser = Parser(text: text, path: path)
        let file = parser.parseFile()
        return (file, parser.sink.diagnostics)
    }

    // MARK: Token helpers

    private var current: Token { tokens[index] }

    private mutating func advance() -> Token {
        let t = tokens[index]
        if index < tokens.count - 1 { index += 1 }
        return t
    }

    private func isSymbol(_ c: Character) -> Bool { current.kind == .symbol(c) }

    private func isKeyword(_ word: String) -> Bool { current.kind == .identifier(word) }

    private mutating func fail(_ expected: String) -> Recover {
        // One mistake often trips several rules at the same token (a missing
        // ';' at the end of the file also leaves a block open): report the first.
        if sink.diagnostics.last?.location != current.location {
            sink.error(current.location, "unexpected \(current.display); expected \(expected)")
        }
        return Recover()
    }

    private mutating func expectSymbol(_ c: Character) throws {
        guard isSymbol(c) else { throw fail("'\(c)'") }
        _ = advance()
    }

    private mutating func expectKeyword(_ word: String) throws {
        guard isKeyword(word) else { throw fail("'\(word)'") }
        _ = advance()
    }

    private mutating func expectIdentifier(_ what: String) throws -> (String, SourceLocation) {
        guard case .identifier(let name) = current.kind else { throw fail(what) }
        let location = current.location
        _ = advance()
        return (name, location)
    }

    private mutating func expectInteger(_ what: String, allowNegative: Bool = false) throws -> (Int, SourceLocation) {
        let location = current.location
        var negative = false
        if allowNegative, isSymbol("-") {
            negative = true
            _ = advance()
        }
        guard case .integer(let value) = current.kind else { throw fail(what) }
        _ = advance()
        // Out-of-range values are clamped here and reported by the checker.
        let magnitude = value > UInt64(Int64.max) ? Int.max : Int(value)
        return (negative ? -magnitude : magnitude, location)
    }

    /// `a.b.C` or `.a.b.C`.
    private mutating func parseTypeName() throws -> (String, SourceLocation) {
        let location = current.location
        var name = ""
        if isSymbol(".") {
            name = "."
            _ = advance()
        }
        name += try expectIdentifier("a type name").0
        while isSymbol(".") {
            _ = advance()
            name += "." + (try expectIdentifier("a type name after '.'").0)
        }
        return (name, location)
    }

    /// Skips to just past the next `;` at this nesting level, or to (not past)
    /// the `}` that closes the current block.
    private mutating func synchronize() {
        var depth = 0
        while current.kind != .endOfFile {
            if isSymbol("{") { depth += 1 }
            if isSymbol("}") {
                if depth == 0 { return }
                depth -= 1
                if depth == 0 { _ = advance(); return }
            }
            if isSymbol(";") && depth == 0 { _ = advance(); return }
            _ = advance()
        }
    }

    // MARK: Grammar

    private mutating func parseFile() -> SchemaFile {
        var file = SchemaFile(path: path)
        while current.kind != .endOfFile {
            do {
                if isKeyword("package") {
                    let location = advance().location
                    var name = try expectIdentifier("a package name").0
                    while isSymbol(".") {
                        _ = advance()
                        name += "." + (try expectIdentifier("a package name component").0)
                    }
                    try expectSymbol(";")
                    if file.package != nil {
                        sink.error(location, "duplicate package declaration")
                    } else {
                        file.package = name
                        file.packageLocation = location
                    }
                } else if isKeyword("message") {
                    file.messages.append(try parseMessage())
                } else if isKeyword("enum") {
                    file.enums.append(try parseEnum())
                } else if isKeyword("service") {
                    file.services.append(try parseService())
                } else if isSymbol(";") {
                    _ = advance()
                } else {
                    throw fail("'package', 'message', 'enum' or 'service'")
                }
            } catch {
                synchronize()
                if isSymbol("}") { _ = advance() }
            }
        }
        if file.package == nil {
            sink.error(SourceLocation(file: path, line: 1, column: 1), "missing package declaration; expected 'package name;'")
        }
        return file
    }

    private mutating func parseMessage() throws -> MessageDecl {
        let doc = current.doc
        try expectKeyword("message")
        let (name, location) = try expectIdentifier("a message name")
        let message = MessageDecl(name: name, location: location, doc: doc)
        try expectSymbol("{")
        while !isSymbol("}") {
            if current.kind == .endOfFile { throw fail("'}' to close message '\(name)'") }
            do {
                if isKeyword("message") {
                    message.messages.append(try parseMessage())
                } else if isKeyword("enum") {
                    message.enums.append(try parseEnum())
                } else if isKeyword("reserved") {
                    message.reserved.append(try parseReserved())
                } else if isSymbol(";") {
                    _ = advance()
                } else {
                    message.fields.append(try parseField())
                }
            } catch {
                synchronize()
            }
        }
        _ = advance()
        return message
    }

    private mutating func parseField() throws -> FieldDecl {
        let doc = current.doc
        var label = FieldLabel.singular
        if isKeyword("repeated") {
            label = .repeated
            _ = advance()
        } else if isKeyword("optional") {
            label = .optional
            _ = advance()
        }
        let type: TypeExpr
        if isKeyword("map") {
            let mapLocation = advance().location
            if label != .singular {
                sink.error(mapLocation, "map fields cannot be '\(label == .repeated ? "repeated" : "optional")'")
            }
            try expectSymbol("<")
            let keyLocation = current.location
            let key = try parseFieldType()
            try expectSymbol(",")
            if isKeyword("map") { throw fail("a map value type (maps cannot nest)") }
            let value = try parseFieldType()
            try expectSymbol(">")
            type = .map(key: key, keyLocation: keyLocation, value: value)
        } else {
            if case .identifier = current.kind {} else if !isSymbol(".") {
                throw fail("a field type, 'message', 'enum', 'reserved' or '}'")
            }
            type = try parseFieldType()
        }
        let (name, location) = try expectIdentifier("a field name")
        try expectSymbol("=")
        let (number, numberLocation) = try expectInteger("a field number", allowNegative: true)
        try expectSymbol(";")
        return FieldDecl(name: name, location: location, doc: doc, label: label, type: type,
                         number: number, numberLocation: numberLocation)
    }

    private mutating func parseFieldType() throws -> TypeExpr {
        if case .identifier(let word) = current.kind, let scalar = ScalarType(rawValue: word) {
            _ = advance()
            return .scalar(scalar)
        }
        let (name, location) = try parseTypeName()
        return .named(name, location)
    }

    private mutating func parseReserved() throws -> ReservedDecl {
        try expectKeyword("reserved")
        var decl = ReservedDecl()
        if case .string = current.kind {
            repeat {
                if isSymbol(",") { _ = advance() }
                guard case .string(let name) = current.kind else { throw fail("a quoted field name") }
                decl.names.append((name, advance().location))
            } while isSymbol(",")
        } else {
            repeat {
                if isSymbol(",") { _ = advance() }
                let (low, location) = try expectInteger("a field number or a quoted name", allowNegative: true)
                var high = low
                if isKeyword("to") {
                    _ = advance()
                    if isKeyword("max") {
                        _ = advance()
                        high = Int(Int32.max)
                    } else {
                        high = try expectInteger("a number or 'max'", allowNegative: true).0
                    }
                }
                if high < low {
                    sink.error(location, "reserved range \(low) to \(high) is empty; expected the lower bound first")
                } else {
                    decl.ranges.append((low...high, location))
                }
            } while isSymbol(",")
        }
        try expectSymbol(";")
        return decl
    }

    private mutating func parseEnum() throws -> EnumDecl {
        let doc = current.doc
        try expectKeyword("enum")
        let (name, location) = try expectIdentifier("an enum name")
        let decl = EnumDecl(name: name, location: location, doc: doc)
        try expectSymbol("{")
        while !isSymbol("}") {
            if current.kind == .endOfFile { throw fail("'}' to close enum '\(name)'") }
            do {
                if isKeyword("reserved") {
                    decl.reserved.append(try parseReserved())
                } else if isSymbol(";") {
                    _ = advance()
                } else {
                    let valueDoc = current.doc
                    let (valueName, valueLocation) = try expectIdentifier("an enum value name, 'reserved' or '}'")
                    try expectSymbol("=")
                    let (number, _) = try expectInteger("an enum value number", allowNegative: true)
                    try expectSymbol(";")
                    decl.values.append(EnumValueDecl(name: valueName, location: valueLocation, doc: valueDoc, number: number))
                }
            } catch {
                synchronize()
            }
        }
        _ = advance()
        return decl
    }

    private mutating func parseService() throws -> ServiceDecl {
        let doc = current.doc
        try expectKeyword("service")
        let (name, location) = try expectIdentifier("a service name")
        try expectSymbol("=")
        let (id, idLocation) = try expectInteger("a service id (1 to 65535)")
        let service = ServiceDecl(name: name, location: location, doc: doc, id: id, idLocation: idLocation)
        // `inline`: its handlers never suspend, so an InlineHandler protocol
        // is generated for it (docs/IDL.md).
        if isKeyword("inline") {
            _ = advance()
            service.inline = true
        }
        if !isSymbol("{") { throw fail("'inline' or '{' after the id of service '\(name)'") }
        _ = advance()
        while !isSymbol("}") {
            if current.kind == .endOfFile { throw fail("'}' to close service '\(name)'") }
            do {
                if isSymbol(";") {
                    _ = advance()
                    continue
                }
                let methodDoc = current.doc
                try expectKeyword("rpc")
                let (methodName, methodLocation) = try expectIdentifier("a method name")
                try expectSymbol("(")
                let (input, inputLocation) = try parseTypeName()
                try expectSymbol(")")
                try expectKeyword("returns")
                try expectSymbol("(")
                let (output, outputLocation) = try parseTypeName()
                try expectSymbol(")")
                try expectSymbol("=")
                let (number, numberLocation) = try expectInteger("a method number (1 to 65535)")
                try expectSymbol(";")
                service.methods.append(MethodDecl(
                    name: methodName, location: methodLocation, doc: methodDoc,
                    input: .named(input, inputLocation), output: .named(output, outputLocation),
                    number: number, numberLocation: numberLocation))
            } catch {
                synchronize()
            }
        }
        _ = advance()
        return service
    }
}
