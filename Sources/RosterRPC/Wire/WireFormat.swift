// The protobuf binary wire format, as far as Roster's messages need it.
//
// Everything here follows https://protobuf.dev/programming-guides/encoding/ so
// that any protobuf library can read what Roster writes and vice versa.

/// The low three bits of every field key: how the payload that follows is framed.
public enum WireType: UInt8, Sendable, Hashable {
    /// int32, int64, uint32, uint64, sint32, sint64, bool, enum.
    case varint = 0
    /// fixed64, sfixed64, double.
    case fixed64 = 1
    /// string, bytes, embedded messages, packed repeated fields, map entries.
    case lengthDelimited = 2
    /// Deprecated proto2 groups; only ever skipped.
    case startGroup = 3
    case endGroup = 4
    /// fixed32, sfixed32, float.
    case fixed32 = 5
}

/// A decoded field key: the field number and the wire type of its payload.
public struct FieldTag: Sendable, Hashable {
    public let fieldNumber: Int
    public let wireType: WireType

    @inlinable
    public init(fieldNumber: Int, wireType: WireType) {
        self.fieldNumber = fieldNumber
        self.wireType = wireType
    }

    /// The key as it is written on the wire, before varint encoding.
    @inlinable
    public var rawValue: UInt64 { UInt64(fieldNumber) << 3 | UInt64(wireType.rawValue) }
}

/// Limits and sizes of the wire format.
public enum ProtoWire {
    /// Whether every byte is below 0x80: ASCII, so valid UTF-8 as it stands.
    /// Eight bytes at a time; the strings on this wire are short.
    @inlinable
    public static func isASCII(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        guard let base = bytes.baseAddress else { return true }
        let raw = UnsafeRawPointer(base)
        var i = 0
        var high: UInt64 = 0
        while i &+ 8 <= bytes.count {
            high |= raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            i &+= 8
        }
        while i < bytes.count {
            high |= UInt64(bytes[i])
            i &+= 1
        }
        return high & 0x8080_8080_8080_8080 == 0
    }

    /// Whether the first `count` bytes at `a` and at `b` are the same, eight
    /// at a time. (A generic `elementsEqual` goes byte by byte: for the
    /// head a run of calls shares, token and all, it showed in profiles.)
    @inlinable
    public static func sameBytes(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, count: Int) -> Bool {
        var i = 0
        while i &+ 8 <= count {
            guard a.loadUnaligned(fromByteOffset: i, as: UInt64.self) == b.loadUnaligned(fromByteOffset: i, as: UInt64.self) else { return false }
            i &+= 8
        }
        while i < count {
            guard a.load(fromByteOffset: i, as: UInt8.self) == b.load(fromByteOffset: i, as: UInt8.self) else { return false }
            i &+= 1
        }
        return true
    }

    /// The largest legal field number, 2^29 - 1.
    public static let maxFieldNumber = (1 << 29) - 1

    /// How deeply messages may nest before decoding gives up.
    ///
    /// Recursive message types would otherwise let a few kilobytes of input
    /// exhaust the stack; 100 matches other protobuf implementations.
    public static let maxDepth = 100

    /// The number of bytes `value` takes as a varint (1 to 10).
    @inlinable
    public static func varintSize(_ value: UInt64) -> Int {
        // Each byte carries 7 bits; a zero still takes one byte.
        let bits = 64 - (value | 1).leadingZeroBitCount
        return (bits + 6) / 7
    }

    /// The number of bytes a field key takes.
    @inlinable
    public static func tagSize(_ fieldNumber: Int) -> Int {
        varintSize(UInt64(fieldNumber) << 3)
    }

    /// ZigZag encoding maps signed integers of small magnitude to small unsigned ones.
    @inlinable public static func zigZag(_ v: Int32) -> UInt32 { UInt32(bitPattern: (v << 1) ^ (v >> 31)) }
    @inlinable public static func zigZag(_ v: Int64) -> UInt64 { UInt64(bitPattern: (v << 1) ^ (v >> 63)) }
    @inlinable public static func unZigZag(_ v: UInt32) -> Int32 { Int32(bitPattern: (v >> 1) ^ (0 &- (v & 1))) }
    @inlinable public static func unZigZag(_ v: UInt64) -> Int64 { Int64(bitPattern: (v >> 1) ^ (0 &- (v & 1))) }
}
