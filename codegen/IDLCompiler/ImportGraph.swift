import Foundation

/// Which schema files use which: what each emitted `.proto` imports, and
/// the cycles protoc refuses ("File recursively imports itself").
///
/// A file imports another when one of its fields or methods names a type
/// declared there. Files that import each other, directly or through
/// others, cannot be compiled one at a time by any protobuf tool, so the
/// compiler refuses them, at the first use that closes the cycle.
enum ImportGraph {
    /// The first place `file` uses a type of each other file, by that file's path.
    static func uses(of file: SchemaFile) -> [String: SourceLocation] {
        var first: [String: SourceLocation] = [:]
        func use(_ other: String, at location: SourceLocation) {
            guard other != file.path else { return }
            if let known = first[other], known <= location { return }
            first[other] = location
        }
        func typeLocation(_ type: TypeExpr, or fallback: SourceLocation) -> SourceLocation {
            switch type {
            case .named(_, let location): location
            case .map(_, _, let value): typeLocation(value, or: fallback)
            case .scalar: fallback
            }
        }
        func visit(_ message: MessageDecl) {
            for field in message.fields {
                switch field.resolved {
                case .message(let t): use(t.file, at: typeLocation(field.type, or: field.location))
                case .enum(let t): use(t.file, at: typeLocation(field.type, or: field.location))
                case nil: break
                }
            }
            message.messages.forEach(visit)
        }
        file.messages.forEach(visit)
        for service in file.services {
            for method in service.methods {
                if let t = method.resolvedInput { use(t.file, at: typeLocation(method.input, or: method.location)) }
                if let t = method.resolvedOutput { use(t.file, at: typeLocation(method.output, or: method.location)) }
            }
        }
        return first
    }

    /// One diagnostic per cycle of imports, at the use in the cycle's first
    /// file (by path) of the next file in it.
    static func cycles(in schema: CheckedSchema) -> [Diagnostic] {
        let edges = Dictionary(uniqueKeysWithValues: schema.files.map { ($0.path, uses(of: $0)) })
        var reported = Set<[String]>()
        var diagnostics: [Diagnostic] = []
        // From each file, the shortest way back to itself (breadth first), if any.
        for start in edges.keys.sorted() {
            var previous: [String: String] = [:]
            var queue = [start]
            var found: String?
            search: while !queue.isEmpty {
                let here = queue.removeFirst()
                for next in (edges[here] ?? [:]).keys.sorted() {
                    if next == start { found = here; break search }
                    if previous[next] == nil && next != start {
                        previous[next] = here
                        queue.append(next)
                    }
                }
            }
            guard let last = found else { continue }
            var path = [last]
            while let step = previous[path[0]] { path.insert(step, at: 0) }
            if path.first != start { path.insert(start, at: 0) }
            // The same cycle seen from each of its files is reported once, from its first.
            let key = rotated(path)
            guard reported.insert(key).inserted else { continue }
            let from = key[0], to = key.count > 1 ? key[1] : key[0]
            guard let location = edges[from]?[to] else { continue }
            let names = (key + [key[0]]).map { ($0 as NSString).lastPathComponent }.joined(separator: " → ")
            diagnostics.append(Diagnostic(location, "schema files import each other in a cycle (\(names)): protoc refuses a .proto that imports itself; "
                + "move the messages both use into one file (a common.rdl both import)"))
        }
        return diagnostics
    }

    /// `cycle` starting at its smallest path, so each cycle has one name.
    private static func rotated(_ cycle: [String]) -> [String] {
        guard let smallest = cycle.indices.min(by: { cycle[$0] < cycle[$1] }) else { return cycle }
        return Array(cycle[smallest...] + cycle[..<smallest])
    }
}
