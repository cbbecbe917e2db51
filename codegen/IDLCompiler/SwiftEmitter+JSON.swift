/// The protobuf JSON mapping, emitted next to the wire format: enums know
/// their value names, messages convert to and from `JSONValue`, and a
/// per-file registry lists every method, so a generic tool (`roster call`)
/// can call any RPC from JSON.
extension SwiftEmitter {
    mutating func emitJSONSection(messages: [MessageDecl], enums: [EnumDecl], services: [ServiceDecl], sourceName: String) {
        w.line()
        w.line("// MARK: - JSON mapping")
        for e in enums {
            w.line()
            emitJSONEnum(e)
        }
        for m in messages {
            w.line()
            emitJSONMessage(m)
        }
        w.line()
        emitRegistry(messages: messages, enums: enums, services: services, sourceName: sourceName)
    }

    static func registryName(sourceName: String) -> String {
        let file = sourceName.split(separator: "/").last.map(String.init) ?? sourceName
        let base = file.hasSuffix(".rdl") ? String(file.dropLast(4)) : file
        return Naming.upperCamel(base.replacingOccurrences(of: "-", with: "_")) + "Schema"
    }

    private mutating func emitJSONEnum(_ e: EnumDecl) {
        let cases = SwiftEmitter.caseNames(e)
        w.block("extension \(e.scopedName): ProtoJSONEnum") { w in
            w.line("public static let schemaDefinition = \(SwiftEmitter.stringLiteral(SwiftEmitter.definitionText(e)))")
            w.line()
            w.block("public var protoName: String?") { w in
                w.switchBlock("self") { w in
                    for (v, name) in zip(e.values, cases) { w.line("case .\(Naming.escaped(name)): return \"\(v.name)\"") }
                    w.line("case .unrecognized: return nil")
                }
            }
            w.line()
            w.block("public init?(protoName: String)") { w in
                w.switchBlock("protoName") { w in
                    for (v, name) in zip(e.values, cases) { w.line("case \"\(v.name)\": self = .\(Naming.escaped(name))") }
                    w.line("default: return nil")
                }
            }
        }
    }

    private mutating func emitJSONMessage(_ m: MessageDecl) {
        let fields = m.fields.map { FieldPlan($0) }
        w.block("extension \(m.scopedName): ProtoJSONMessage") { w in
            w.line("public static let protoName = \"\(m.fullName)\"")
            w.line("public static let schemaDefinition = \(SwiftEmitter.stringLiteral(SwiftEmitter.definitionText(m)))")
            w.line()
            w.block("public func jsonValue(includeDefaults: Bool) -> JSONValue") { w in
                w.line("\(fields.isEmpty ? "let" : "var") object = JSONObjectWriter(includeDefaults: includeDefaults)")
                for f in fields { w.line(f.jsonWriteStatement) }
                w.line("return object.value")
            }
            w.line()
            w.block("public mutating func merge(json: JSONValue) throws(JSONMappingError)") { w in
                let known = fields.map { "\"\($0.jsonName)\"" }.joined(separator: ", ")
                w.block("for (key, \(fields.isEmpty ? "_" : "value")) in try JSONReader.members(json, message: Self.protoName)") { w in
                    w.switchBlock("key") { w in
                        for f in fields {
                            let labels = f.jsonName == f.decl.name ? "\"\(f.jsonName)\"" : "\"\(f.jsonName)\", \"\(f.decl.name)\""
                            w.line("case \(labels): \(f.jsonReadStatement)")
                        }
                        w.line("default: throw JSONReader.unknownField(key, message: Self.protoName, known: [\(known)])")
                    }
                }
            }
        }
    }

    private mutating func emitRegistry(messages: [MessageDecl], enums: [EnumDecl], services: [ServiceDecl], sourceName: String) {
        w.line("/// Every message, enum and method of \(sourceName.split(separator: "/").last ?? ""), for tools that work from JSON.")
        w.block("public enum \(SwiftEmitter.registryName(sourceName: sourceName))") { w in
            w.line("public static let messages: [any ProtoJSONMessage.Type] = [")
            w.indent { w in for m in messages { w.line("\(m.scopedName).self,") } }
            w.line("]")
            w.line()
            w.line("public static let enums: [any ProtoJSONEnum.Type] = [")
            w.indent { w in for e in enums { w.line("\(e.scopedName).self,") } }
            w.line("]")
            w.line()
            w.line("public static let methods: [MethodDescription] = [")
            w.indent { w in
                for s in services {
                    for m in s.methods {
                        guard let input = m.resolvedInput, let output = m.resolvedOutput else { continue }
                        let name = Naming.escaped(Naming.lowerCamel(m.name))
                        let doc = SwiftEmitter.stringLiteral(m.doc.joined(separator: "\n"))
                        w.line("MethodDescription(descriptor: \(s.name).Method.\(name), requestType: \(input.scopedName).self, "
                               + "responseType: \(output.scopedName).self, doc: \(doc)),")
                    }
                }
            }
            w.line("]")
        }
    }

    /// The message as it reads in the schema: doc comments, fields, nested type names.
    static func definitionText(_ m: MessageDecl) -> String {
        var lines = m.doc.map { "/// " + $0 }
        lines.append("message \(m.name) {")
        for f in m.fields {
            lines += f.doc.map { "  /// " + $0 }
            let label = f.label == .repeated ? "repeated " : f.label == .optional ? "optional " : ""
            lines.append("  \(label)\(typeText(f.type)) \(f.name) = \(f.number);")
        }
        for nested in m.messages { lines.append("  message \(nested.name) { … }") }
        for nested in m.enums { lines.append("  enum \(nested.name) { \(nested.values.map(\.name).joined(separator: ", ")) }") }
        lines.append("}")
        return lines.joined(separator: "\n")
    }

    /// The enum as it reads in the schema: doc comments, values and their numbers.
    static func definitionText(_ e: EnumDecl) -> String {
        var lines = e.doc.map { "/// " + $0 }
        lines.append("enum \(e.name) {")
        for v in e.values {
            lines += v.doc.map { "  /// " + $0 }
            lines.append("  \(v.name) = \(v.number);")
        }
        lines.append("}")
        return lines.joined(separator: "\n")
    }

    static func typeText(_ t: TypeExpr) -> String {
        switch t {
        case .scalar(let s): return s.rawValue
        case .named(let name, _): return name
        case .map(let key, _, let value): return "map<\(typeText(key)), \(typeText(value))>"
        }
    }

    /// A Swift string literal for `text`.
    static func stringLiteral(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

extension FieldPlan {
    /// The JSON name: protobuf's lowerCamelCase (`advertiserId`), which
    /// differs from the Swift property for initialisms (`advertiserID`).
    var jsonName: String { Naming.jsonName(decl.name) }

    private var jsonCodec: String { codec(decl.type) }

    var jsonWriteStatement: String {
        let p = "self.\(property)"
        let n = "\"\(jsonName)\""
        if let (k, v) = mapCodecs { return "object.map(\(n), \(k).self, \(v).self, \(p))" }
        switch decl.label {
        case .repeated where isMessage: return "object.repeatedMessages(\(n), \(p))"
        case .repeated: return "object.repeated(\(n), \(jsonCodec).self, \(p))"
        case _ where isMessage: return "object.message(\(n), \(p))"
        case .optional: return "object.optional(\(n), \(jsonCodec).self, \(p))"
        case .singular: return "object.singular(\(n), \(jsonCodec).self, \(p))"
        }
    }

    var jsonReadStatement: String {
        let p = "self.\(property)"
        let n = "field: \"\(jsonName)\""
        if let (k, v) = mapCodecs { return "\(p) = try JSONReader.map(\(k).self, \(v).self, value, \(n))" }
        switch decl.label {
        case .repeated: return "\(p) = try JSONReader.repeated(\(jsonCodec).self, value, \(n))"
        case _ where isMessage: return "\(p) = try JSONReader.optional(\(jsonCodec).self, value, \(n))"
        case .optional: return "\(p) = try JSONReader.optional(\(jsonCodec).self, value, \(n))"
        case .singular: return "\(p) = try JSONReader.singular(\(jsonCodec).self, value, \(n))"
        }
    }
}
