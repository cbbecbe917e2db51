/// Why a byte string is not a valid encoding of the expected message.
///
/// Offsets count from the start of the innermost buffer being read, which is
/// enough to find the fault in a hex dump of the request.
public enum ProtoDecodingError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The input ended inside a field.
    case truncated(offset: Int)
    /// A varint ran past ten bytes or past 64 bits.
    case malformedVarint(offset: Int)
    /// A length prefix claims more bytes than remain, or a packed fixed-width
    /// run is not a whole number of elements.
    case lengthOutOfBounds(offset: Int, length: UInt64)
    /// A field key with number 0 or above 2^29 - 1.
    case invalidFieldNumber(offset: Int)
    /// A field key with wire type 6 or 7.
    case invalidWireType(offset: Int, rawValue: UInt8)
    /// An end-group key with no matching start-group.
    case unexpectedEndGroup(offset: Int)
    /// A known field arrived with a wire type its declared type cannot have.
    case wireTypeMismatch(field: Int, expected: WireType, found: WireType)
    /// A `string` field that is not valid UTF-8 (proto3 requires it).
    case invalidUTF8(field: Int?)
    /// Messages nested deeper than `ProtoWire.maxDepth`.
    case recursionLimitExceeded

    public var description: String {
        switch self {
        case .truncated(let offset): return "input truncated at byte \(offset)"
        case .malformedVarint(let offset): return "malformed varint at byte \(offset)"
        case .lengthOutOfBounds(let offset, let length):
            return "length \(length) at byte \(offset) exceeds the remaining input"
        case .invalidFieldNumber(let offset): return "invalid field number at byte \(offset)"
        case .invalidWireType(let offset, let raw): return "invalid wire type \(raw) at byte \(offset)"
        case .unexpectedEndGroup(let offset): return "unmatched end-group at byte \(offset)"
        case .wireTypeMismatch(let field, let expected, let found):
            return "field \(field) has wire type \(found.rawValue), expected \(expected.rawValue)"
        case .invalidUTF8(let field):
            return field.map { "field \($0) is not valid UTF-8" } ?? "string is not valid UTF-8"
        case .recursionLimitExceeded: return "messages nested more than \(ProtoWire.maxDepth) deep"
        }
    }
}
