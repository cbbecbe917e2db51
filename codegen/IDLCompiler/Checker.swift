/// A set of schema files that parsed and passed every check: ready to emit.
public struct CheckedSchema {
    public var package: String
    public var files: [SchemaFile]
}

/// Resolves type names and enforces the rules that make a schema valid both
/// for Roster's Swift output and for protoc reading the emitted `.proto`.
struct Checker {
    private var sink = DiagnosticSink()
    private var symbols: [String: ResolvedType] = [:]
    private var symbolLocations: [String: SourceLocation] = [:]
    private var topLevelNames: Set<String> = []
    private var package = ""

    /// Field numbers protobuf keeps for its own implementation.
    static let implementationReserved = 19000...19999

    /// Swift names generated code refers to; a schema type of the same name
    /// would shadow them.
    static let swiftReservedTypeNames: Set<String> = [
        "Bool", "Int", "Int32", "Int64", "UInt32", "UInt64", "Float", "Double", "String", "Data",
        "Array", "Dictionary", "Optional", "Error", "Void", "Never", "Any", "AnyObject", "Type", "Self",
        "Protocol", "Sendable", "Hashable", "Equatable", "Foundation", "Swift", "Method", "Client", "Handler",
        "InlineHandler", "UnknownFields", "ProtoReader", "ProtoWriter", "ProtoSize", "RPCContext",
        "CallOptions", "RPCServerMethod", "RPCMethodDescriptor", "RosterRPC",
    ]

    static func check(_ files: [SchemaFile]) -> (CheckedSchema, [Diagnostic]) {
        var checker = Checker()
        let schema = checker.run(files)
        return (schema, checker.sink.diagnostics)
    }

    private mutating func run(_ files: [SchemaFile]) -> CheckedSchema {
        // One package per compilation: generated Swift has no namespaces for them.
        for file in files {
            guard let p = file.package, let location = file.packageLocation else { continue }
            if package.isEmpty {
                package = p
            } else if p != package {
                sink.error(location, "package '\(p)' differs from '\(package)'; all files compiled together must share one package")
            }
        }
        for file in files { declare(file) }
        for file in files {
            for message in file.messages { checkMessage(message) }
            for e in file.enums { checkEnum(e) }
            checkEnumValueScope(file.enums, messages: file.messages)
        }
        checkServices(files)
        return CheckedSchema(package: package, files: files)
    }

    // MARK: Declarations

    private mutating func declare(_ file: SchemaFile) {
        let prefix = package.isEmpty ? "" : package + "."
        for m in file.messages { declare(message: m, scope: "", prefix: prefix, file: file.path) }
        for e in file.enums { declare(enum: e, scope: "", prefix: prefix, file: file.path) }
        for s in file.services {
            s.fullName = prefix + s.name
            addSymbol(name: s.name, fullName: s.fullName, location: s.location, symbol: nil, topLevel: true)
        }
    }

    private mutating func declare(message m: MessageDecl, scope: String, prefix: String, file: String) {
        m.scopedName = scope.isEmpty ? m.name : scope + "." + m.name
        m.fullName = prefix + m.scopedName
        m.file = file
        addSymbol(name: m.name, fullName: m.fullName, location: m.location, symbol: .message(m), topLevel: scope.isEmpty)
        for nested in m.messages { declare(message: nested, scope: m.scopedName, prefix: prefix, file: file) }
        for nested in m.enums { declare(enum: nested, scope: m.scopedName, prefix: prefix, file: file) }
    }

    private mutating func declare(enum e: EnumDecl, scope: String, prefix: String, file: String) {
        e.scopedName = scope.isEmpty ? e.name : scope + "." + e.name
        e.fullName = prefix + e.scopedName
        e.file = file
        addSymbol(name: e.name, fullName: e.fullName, location: e.location, symbol: .enum(e), topLevel: scope.isEmpty)
    }

    private mutating func addSymbol(name: String, fullName: String, location: SourceLocation,
                                    symbol: ResolvedType?, topLevel: Bool) {
        if Checker.swiftReservedTypeNames.contains(name) {
            sink.error(location, "type name '\(name)' is reserved: generated Swift code uses it; choose another name")
        }
        if let first = symbolLocations[fullName] {
            sink.error(location, "duplicate type name '\(fullName)' (first declared at \(first))")
            return
        }
        symbolLocations[fullName] = location
        if let symbol { symbols[fullName] = symbol }
        if topLevel { topLevelNames.insert(name) }
    }

    // MARK: Name resolution

    /// Resolves `name` as seen from inside `scope` (a scoped name such as
    /// `Outer.Inner`), innermost scope first, the way protoc does: the first
    /// component picks the scope, the rest must be found inside it.
    private func resolve(_ name: String, from scope: String) -> ResolvedType? {
        let prefix = package.isEmpty ? "" : package + "."
        if name.hasPrefix(".") {
            return symbols[String(name.dropFirst())]
        }
        let first = name.split(separator: ".").first.map(String.init) ?? name
        var scopeParts = scope.isEmpty ? [] : scope.split(separator: ".").map(String.init)
        while true {
            let candidateScope = scopeParts.joined(separator: ".")
            let base = prefix + (candidateScope.isEmpty ? "" : candidateScope + ".")
            if symbolLocations[base + first] != nil {
                return symbols[base + name]
            }
            if scopeParts.isEmpty { break }
            scopeParts.removeLast()
        }
        // A package-qualified name without the leading dot.
        if !prefix.isEmpty, name.hasPrefix(prefix) { return symbols[name] }
        return nil
    }

    private mutating func resolveNamed(_ name: String, _ location: SourceLocation, scope: String) -> ResolvedType? {
        if let found = resolve(name, from: scope) { return found }
        sink.error(location, "unknown type '\(name)'; expected a scalar type, a message or an enum")
        return nil
    }

    // MARK: Messages

    private mutating func checkMessage(_ m: MessageDecl) {
        if !m.scopedName.contains(".") {
            // top-level: nothing extra
        } else if topLevelNames.contains(m.name) {
            sink.error(m.location, "nested type '\(m.scopedName)' has the name of top-level type '\(m.name)'; generated code could not tell them apart")
        }
        var numbers: [Int: FieldDecl] = [:]
        var names: [String: FieldDecl] = [:]
        var swiftNames: [String: FieldDecl] = [:]
        var jsonNames: [String: FieldDecl] = [:]
        let reservedRanges = m.reserved.flatMap { $0.ranges }
        let reservedNames = m.reserved.flatMap { $0.names }
        for r in reservedRanges where r.range.lowerBound < 1 || r.range.upperBound > Int(Int32.max) {
            sink.error(r.location, "reserved field numbers must lie between 1 and \(ProtoLimits.maxFieldNumber)")
        }

        for field in m.fields {
            // Numbers.
            if field.number < 1 || field.number > ProtoLimits.maxFieldNumber {
                sink.error(field.numberLocation, "field number \(field.number) out of range; expected 1 to \(ProtoLimits.maxFieldNumber) (2^29-1)")
            } else if Checker.implementationReserved.contains(field.number) {
                sink.error(field.numberLocation, "field number \(field.number) lies in 19000-19999, which protobuf reserves for itself")
            } else if let first = numbers[field.number] {
                sink.error(field.numberLocation, "duplicate field number \(field.number) in '\(m.name)' (first used by '\(first.name)' at \(first.location))")
            } else if let r = reservedRanges.first(where: { $0.range.contains(field.number) }) {
                sink.error(field.numberLocation, "field number \(field.number) is reserved (at \(r.location))")
            }
            if numbers[field.number] == nil { numbers[field.number] = field }

            // Names.
            if let first = names[field.name] {
                sink.error(field.location, "duplicate field name '\(field.name)' in '\(m.name)' (first declared at \(first.location))")
            } else if let r = reservedNames.first(where: { $0.name == field.name }) {
                sink.error(field.location, "field name '\(field.name)' is reserved (at \(r.location))")
            } else {
                let swiftName = Naming.propertyName(field.name)
                let jsonName = Naming.jsonName(field.name)
                if let other = swiftNames[swiftName] {
                    sink.error(field.location, "field '\(field.name)' and field '\(other.name)' both become '\(swiftName)' in generated code")
                } else if let other = jsonNames[jsonName] {
                    sink.error(field.location, "field '\(field.name)' and field '\(other.name)' both have the JSON name '\(jsonName)'")
                }
                swiftNames[swiftName] = field
                jsonNames[jsonName] = field
            }
            if names[field.name] == nil { names[field.name] = field }

            // Types.
            switch field.type {
            case .scalar:
                break
            case .named(let name, let location):
                field.resolved = resolveNamed(name, location, scope: m.scopedName)
            case .map(let key, let keyLocation, let value):
                switch key {
                case .scalar(let s) where s.isValidMapKey:
                    break
                case .scalar(let s):
                    sink.error(keyLocation, "map key type '\(s.rawValue)' is not allowed; expected an integer type, bool or string")
                case .named(let name, _):
                    sink.error(keyLocation, "map key type '\(name)' is not allowed; expected an integer type, bool or string")
                case .map:
                    sink.error(keyLocation, "map key cannot be a map")
                }
                if case .named(let name, let location) = value {
                    field.resolved = resolveNamed(name, location, scope: m.scopedName)
                }
            }
        }
        for nested in m.messages { checkMessage(nested) }
        for nested in m.enums { checkEnum(nested) }
        checkEnumValueScope(m.enums, messages: m.messages)
    }

    // MARK: Enums

    private mutating func checkEnum(_ e: EnumDecl) {
        if e.scopedName.contains("."), topLevelNames.contains(e.name) {
            sink.error(e.location, "nested type '\(e.scopedName)' has the name of top-level type '\(e.name)'; generated code could not tell them apart")
        }
        guard let first = e.values.first else {
            sink.error(e.location, "enum '\(e.name)' has no values; expected a first value numbered 0")
            return
        }
        if first.number != 0 {
            sink.error(first.location, "the first value of enum '\(e.name)' must be 0 (proto3 uses it as the default); found \(first.number)")
        }
        var numbers: [Int: EnumValueDecl] = [:]
        var names: [String: EnumValueDecl] = [:]
        let reservedRanges = e.reserved.flatMap { $0.ranges }
        let reservedNames = e.reserved.flatMap { $0.names }
        for v in e.values {
            if v.number < Int(Int32.min) || v.number > Int(Int32.max) {
                sink.error(v.location, "enum value \(v.number) out of range; expected a 32-bit signed integer")
            } else if let other = numbers[v.number] {
                sink.error(v.location, "duplicate enum value number \(v.number) in '\(e.name)' (first used by '\(other.name)' at \(other.location))")
            } else if let r = reservedRanges.first(where: { $0.range.contains(v.number) }) {
                sink.error(v.location, "enum value number \(v.number) is reserved (at \(r.location))")
            }
            if numbers[v.number] == nil { numbers[v.number] = v }
            if let other = names[v.name] {
                sink.error(v.location, "duplicate enum value name '\(v.name)' (first declared at \(other.location))")
            } else if let r = reservedNames.first(where: { $0.name == v.name }) {
                sink.error(v.location, "enum value name '\(v.name)' is reserved (at \(r.location))")
            }
            if names[v.name] == nil { names[v.name] = v }
        }
    }

    /// protoc scopes enum values beside their enum, not inside it, so two
    /// enums in one scope may not share a value name, nor may a value share a
    /// name with a type in that scope.
    private mutating func checkEnumValueScope(_ enums: [EnumDecl], messages: [MessageDecl]) {
        var seen: [String: (EnumDecl, SourceLocation)] = [:]
        let typeNames = Set(enums.map(\.name) + messages.map(\.name))
        for e in enums {
            for v in e.values {
                if let (other, location) = seen[v.name], other !== e {
                    sink.error(v.location, "enum value '\(v.name)' is already defined by enum '\(other.name)' at \(location); protobuf scopes enum values beside their enum, so prefix them with the enum name")
                } else if typeNames.contains(v.name) {
                    sink.error(v.location, "enum value '\(v.name)' has the name of a type in the same scope")
                }
                if seen[v.name] == nil { seen[v.name] = (e, v.location) }
            }
        }
    }

    // MARK: Services

    private mutating func checkServices(_ files: [SchemaFile]) {
        var ids: [Int: ServiceDecl] = [:]
        for service in files.flatMap(\.services) {
            if service.id < 1 || service.id > 0xFFFF {
                sink.error(service.idLocation, "service id \(service.id) out of range; expected 1 to 65535")
            } else if let other = ids[service.id] {
                sink.error(service.idLocation, "duplicate service id \(service.id) (first used by '\(other.name)' at \(other.location))")
            } else {
                ids[service.id] = service
            }
            var names: [String: MethodDecl] = [:]
            var numbers: [Int: MethodDecl] = [:]
            for method in service.methods {
                if let other = names[method.name] {
                    sink.error(method.location, "duplicate method '\(method.name)' in service '\(service.name)' (first declared at \(other.location))")
                } else if let other = names.values.first(where: { Naming.lowerCamel($0.name) == Naming.lowerCamel(method.name) }) {
                    sink.error(method.location, "methods '\(method.name)' and '\(other.name)' both become '\(Naming.lowerCamel(method.name))' in generated code")
                } else {
                    names[method.name] = method
                }
                if method.number < 1 || method.number > 0xFFFF {
                    sink.error(method.numberLocation, "method number \(method.number) out of range; expected 1 to 65535")
                } else if let other = numbers[method.number] {
                    sink.error(method.numberLocation, "duplicate method number \(method.number) in service '\(service.name)' (first used by '\(other.name)' at \(other.location))")
                } else {
                    numbers[method.number] = method
                }
                method.resolvedInput = resolveMessage(method.input, role: "request")
                method.resolvedOutput = resolveMessage(method.output, role: "response")
            }
        }
    }

    private mutating func resolveMessage(_ type: TypeExpr, role: String) -> MessageDecl? {
        guard case .named(let name, let location) = type else { return nil }
        switch resolveNamed(name, location, scope: "") {
        case .message(let m): return m
        case .enum:
            sink.error(location, "\(role) type '\(name)' is an enum; expected a message")
            return nil
        case nil: return nil
        }
    }
}

enum ProtoLimits {
    static let maxFieldNumber = (1 << 29) - 1
}
