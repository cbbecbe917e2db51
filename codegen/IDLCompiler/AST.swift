/// The syntax tree of one schema file, as written. Names are resolved and
/// rules checked later, by `Checker`; the parser only records.
public struct SchemaFile {
    public var path: String
    public var package: String?
    public var packageLocation: SourceLocation?
    public var messages: [MessageDecl] = []
    public var enums: [EnumDecl] = []
    public var services: [ServiceDecl] = []
}

/// The scalar types of the language, spelled as in protobuf.
public enum ScalarType: String, CaseIterable, Sendable {
    case bool, int32, int64, uint32, uint64, sint32, sint64
    case fixed32, fixed64, sfixed32, sfixed64, float, double, string, bytes

    /// Types protobuf allows as map keys.
    var isValidMapKey: Bool {
        switch self {
        case .float, .double, .bytes: return false
        default: return true
        }
    }

    /// Types that proto3 packs when repeated.
    var isPackable: Bool { self != .string && self != .bytes }
}

/// A field's type as written: a scalar keyword, a (possibly dotted) name, or a map.
public indirect enum TypeExpr {
    case scalar(ScalarType)
    case named(String, SourceLocation)
    case map(key: TypeExpr, keyLocation: SourceLocation, value: TypeExpr)
}

public enum FieldLabel: Sendable {
    /// proto3 implicit presence: a default value is not sent.
    case singular
    /// Explicit presence: the field is `nil` when absent.
    case optional
    case repeated
}

public final class FieldDecl {
    public let name: String
    public let location: SourceLocation
    public let doc: [String]
    public let label: FieldLabel
    public let type: TypeExpr
    public let number: Int
    public let numberLocation: SourceLocation
    /// Filled in by the checker: what a `.named` type refers to.
    var resolved: ResolvedType?

    init(name: String, location: SourceLocation, doc: [String], label: FieldLabel, type: TypeExpr,
         number: Int, numberLocation: SourceLocation) {
        self.name = name
        self.location = location
        self.doc = doc
        self.label = label
        self.type = type
        self.number = number
        self.numberLocation = numberLocation
    }
}

/// `reserved 2, 15, 9 to 11;` or `reserved "foo", "bar";`.
public struct ReservedDecl {
    public var ranges: [(range: ClosedRange<Int>, location: SourceLocation)] = []
    public var names: [(name: String, location: SourceLocation)] = []
}

public final class MessageDecl {
    public let name: String
    public let location: SourceLocation
    public let doc: [String]
    public var fields: [FieldDecl] = []
    public var reserved: [ReservedDecl] = []
    public var messages: [MessageDecl] = []
    public var enums: [EnumDecl] = []
    /// `roster.v1.Outer.Inner`, set by the checker.
    public internal(set) var fullName = ""
    /// `Outer.Inner`: the name without the package.
    public internal(set) var scopedName = ""
    public internal(set) var file = ""

    init(name: String, location: SourceLocation, doc: [String]) {
        self.name = name
        self.location = location
        self.doc = doc
    }
}

public struct EnumValueDecl {
    public var name: String
    public var location: SourceLocation
    public var doc: [String]
    public var number: Int
}

public final class EnumDecl {
    public let name: String
    public let location: SourceLocation
    public let doc: [String]
    public var values: [EnumValueDecl] = []
    public var reserved: [ReservedDecl] = []
    public internal(set) var fullName = ""
    public internal(set) var scopedName = ""
    public internal(set) var file = ""

    init(name: String, location: SourceLocation, doc: [String]) {
        self.name = name
        self.location = location
        self.doc = doc
    }
}

public final class MethodDecl {
    public let name: String
    public let location: SourceLocation
    public let doc: [String]
    public let input: TypeExpr
    public let output: TypeExpr
    public let number: Int
    public let numberLocation: SourceLocation
    var resolvedInput: MessageDecl?
    var resolvedOutput: MessageDecl?

    init(name: String, location: SourceLocation, doc: [String], input: TypeExpr, output: TypeExpr,
         number: Int, numberLocation: SourceLocation) {
        self.name = name
        self.location = location
        self.doc = doc
        self.input = input
        self.output = output
        self.number = number
        self.numberLocation = numberLocation
    }
}

public final class ServiceDecl {
    public let name: String
    public let location: SourceLocation
    public let doc: [String]
    public let id: Int
    public let idLocation: SourceLocation
    public var methods: [MethodDecl] = []
    public internal(set) var fullName = ""
    /// Declared `inline`: handlers that never suspend, run on the event loop.
    public internal(set) var inline = false

    init(name: String, location: SourceLocation, doc: [String], id: Int, idLocation: SourceLocation) {
        self.name = name
        self.location = location
        self.doc = doc
        self.id = id
        self.idLocation = idLocation
    }
}

/// What a named type resolved to.
public enum ResolvedType {
    case message(MessageDecl)
    case `enum`(EnumDecl)
}
