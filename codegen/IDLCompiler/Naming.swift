/// How schema names become Swift names.
enum Naming {
    /// `advertiser_id` → `advertiserId`, `MatchMany` → `matchMany`,
    /// `HTTP_STATUS` → `httpStatus`: protobuf's JSON names (apart from the
    /// first letter). Swift properties add initialisms (`propertyName`).
    static func lowerCamel(_ name: String) -> String {
        let parts = name.split(separator: "_", omittingEmptySubsequences: true).map(String.init)
        guard !parts.isEmpty else { return name }
        let allUpper = name.allSatisfy { !$0.isLetter || $0.isUppercase }
        var out = ""
        for (i, part) in parts.enumerated() {
            let p = allUpper ? part.lowercased() : part
            if i == 0 {
                out += lowercaseLeadingRun(p)
            } else {
                out += p.prefix(1).uppercased() + p.dropFirst()
            }
        }
        return out
    }

    /// `UpperCamel` from any spelling.
    static func upperCamel(_ name: String) -> String {
        let lower = lowerCamel(name)
        return lower.prefix(1).uppercased() + lower.dropFirst()
    }

    /// `HTTPRequest` → `httpRequest`, `Match` → `match`.
    private static func lowercaseLeadingRun(_ s: String) -> String {
        let chars = Array(s)
        var n = 0
        while n < chars.count, chars[n].isUppercase { n += 1 }
        if n == 0 { return s }
        if n == chars.count { return s.lowercased() }
        // Keep the last capital of a run when a lower-case letter follows it.
        let cut = n > 1 && chars[n].isLowercase ? n - 1 : n
        return String(chars[..<cut]).lowercased() + String(chars[cut...])
    }

    /// The Swift case name of an enum value: the enum's own prefix is dropped
    /// (`FILE_STATE_QUEUED` in `FileState` → `queued`) when what is left is a
    /// valid identifier.
    static func enumCase(_ value: String, enumName: String) -> String {
        let prefix = upperSnake(enumName) + "_"
        if value.hasPrefix(prefix) {
            let rest = String(value.dropFirst(prefix.count))
            if let first = rest.first, first.isLetter || first == "_" {
                return lowerCamel(rest)
            }
        }
        return lowerCamel(value)
    }

    /// `FileState` → `FILE_STATE`.
    static func upperSnake(_ name: String) -> String {
        var out = ""
        let chars = Array(name)
        for (i, c) in chars.enumerated() {
            if c.isUppercase, i > 0, chars[i - 1].isLowercase || (i + 1 < chars.count && chars[i + 1].isLowercase && chars[i - 1] != "_") {
                out += "_"
            }
            out += c.uppercased()
        }
        return out
    }

    /// Backticks around a name Swift would read as a keyword.
    static func escaped(_ name: String) -> String {
        swiftKeywords.contains(name) ? "`\(name)`" : name
    }

    static let swiftKeywords: Set<String> = [
        "associatedtype", "class", "deinit", "enum", "extension", "fileprivate", "func", "import", "init",
        "inout", "internal", "let", "open", "operator", "private", "precedencegroup", "protocol", "public",
        "rethrows", "static", "struct", "subscript", "typealias", "var", "break", "case", "catch", "continue",
        "default", "defer", "do", "else", "fallthrough", "for", "guard", "if", "in", "repeat", "return", "throw",
        "switch", "where", "while", "as", "Any", "false", "is", "nil", "self", "Self", "super", "throws", "true",
        "try", "await", "async", "some", "any", "consume", "borrowing", "consuming", "Type", "Protocol",
    ]

    /// Properties every generated message has; a field with one of these
    /// names gets a trailing underscore. (Methods such as `encode(to:)` or
    /// `hash(into:)` do not clash with properties named `encode` or `hash`.)
    static let messageMembers: Set<String> = ["unknownFields", "serializedSize", "hashValue"]

    /// A field's Swift property: lowerCamelCase with Swift's initialisms
    /// (`advertiser_id` → `advertiserID`, `task_ids` → `taskIDs`), as the
    /// API Design Guidelines and swift-protobuf spell them. Its JSON name
    /// stays protobuf's (`advertiserId`: `jsonName`).
    static func propertyName(_ field: String) -> String {
        let name = initialisms(lowerCamel(field))
        return messageMembers.contains(name) ? name + "_" : name
    }

    /// A field's protobuf JSON name: `advertiser_id` → `advertiserId`.
    static func jsonName(_ field: String) -> String {
        lowerCamel(field)
    }

    /// `advertiserId` → `advertiserID`, `taskIds` → `taskIDs`: an `Id` or
    /// `Ids` word (not the first) at a word boundary.
    static func initialisms(_ camel: String) -> String {
        var out = ""
        let chars = Array(camel)
        var i = 0
        while i < chars.count {
            if i > 0, chars[i] == "I", i + 1 < chars.count, chars[i + 1] == "d" {
                let after = i + 2
                let plural = after < chars.count && chars[after] == "s"
                let end = plural ? after + 1 : after
                if end == chars.count || chars[end].isUppercase || chars[end].isNumber {
                    out += plural ? "IDs" : "ID"
                    i = end
                    continue
                }
            }
            out.append(chars[i])
            i += 1
        }
        return out
    }
}
