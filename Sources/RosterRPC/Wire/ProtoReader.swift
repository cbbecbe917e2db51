import Foundation

/// Reads protobuf wire format from borrowed memory, without copying it.
///
/// The reader never trusts a length it reads: every length is checked against
/// the bytes that remain before anything is allocated, so a hostile input can
/// make the decoder fail but never make it allocate more than the input's size
/// or read out of bounds. It is only valid inside the `withUnsafeBytes` scope
/// that lent it its memory.
public struct ProtoReader {
    @usableFromInline let base: UnsafeRawPointer?
    @usableFromInline var position: Int
    @usableFromInline let end: Int
    /// How many messages enclose the one being read.
    public let depth: Int

    @inlinable
    public init(buffer: UnsafeRawBufferPointer) {
        self.init(base: buffer.baseAddress, position: 0, end: buffer.count, depth: 0)
    }

    @inlinable
    init(base: UnsafeRawPointer?, position: Int, end: Int, depth: Int) {
        self.base = base
        self.position = position
        self.end = end
        self.depth = depth
    }

    /// Bytes left to read.
    @inlinable
    public var remaining: Int { end &- position }

    @inlinable
    public var isAtEnd: Bool { position >= end }

    // MARK: Primitives

    @inlinable
    public mutating func readVarint() throws(ProtoDecodingError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while position < end {
            let byte = base.unsafelyUnwrapped.load(fromByteOffset: position, as: UInt8.self)
            position &+= 1
            if shift == 63 && byte > 1 { throw .malformedVarint(offset: position &- 1) }
            result |= UInt64(byte & 0x7F) << shift
            if byte < 0x80 { return result }
            shift &+= 7
        }
        throw .truncated(offset: position)
    }

    @inlinable
    public mutating func readFixed32() throws(ProtoDecodingError) -> UInt32 {
        guard remaining >= 4 else { throw .truncated(offset: end) }
        let v = base.unsafelyUnwrapped.loadUnaligned(fromByteOffset: position, as: UInt32.self)
        position &+= 4
        return UInt32(littleEndian: v)
    }

    @inlinable
    public mutating func readFixed64() throws(ProtoDecodingError) -> UInt64 {
        guard remaining >= 8 else { throw .truncated(offset: end) }
        let v = base.unsafelyUnwrapped.loadUnaligned(fromByteOffset: position, as: UInt64.self)
        position &+= 8
        return UInt64(littleEndian: v)
    }

    /// Reads a varint length and checks it against what remains.
    @inlinable
    public mutating func readLength() throws(ProtoDecodingError) -> Int {
        let start = position
        let n = try readVarint()
        guard n <= UInt64(remaining) else { throw .lengthOutOfBounds(offset: start, length: n) }
        return Int(n)
    }

    /// Lends the next `count` bytes, already bounds-checked, and moves past them.
    @inlinable
    public mutating func withBytes<T>(
        count: Int, _ body: (UnsafeRawBufferPointer) throws(ProtoDecodingError) -> T
    ) throws(ProtoDecodingError) -> T {
        let start = position
        position &+= count
        return try body(UnsafeRawBufferPointer(start: base.map { $0 + start }, count: count))
    }

    /// Reads a length-delimited payload with a nested reader bounded to it.
    @inlinable
    public mutating func readNested<T>(
        _ body: (inout ProtoReader) throws(ProtoDecodingError) -> T
    ) throws(ProtoDecodingError) -> T {
        let length = try readLength()
        guard depth < ProtoWire.maxDepth else { throw .recursionLimitExceeded }
        var nested = ProtoReader(base: base, position: position, end: position &+ length, depth: depth &+ 1)
        let value = try body(&nested)
        position &+= length
        return value
    }

    // MARK: Fields

    /// The next field key, or `nil` at the end of the message.
    @inlinable
    public mutating func nextTag() throws(ProtoDecodingError) -> FieldTag? {
        guard position < end else { return nil }
        let start = position
        let key = try readVarint()
        let field = key >> 3
        guard field >= 1, field <= UInt64(ProtoWire.maxFieldNumber) else {
            throw .invalidFieldNumber(offset: start)
        }
        guard let wireType = WireType(rawValue: UInt8(key & 7)) else {
            throw .invalidWireType(offset: start, rawValue: UInt8(key & 7))
        }
        if wireType == .endGroup { throw .unexpectedEndGroup(offset: start) }
        return FieldTag(fieldNumber: Int(field), wireType: wireType)
    }

    @inlinable
    func expect(_ tag: FieldTag, _ wireType: WireType) throws(ProtoDecodingError) {
        guard tag.wireType == wireType else {
            throw .wireTypeMismatch(field: tag.fieldNumber, expected: wireType, found: tag.wireType)
        }
    }

    /// Reads one singular field; for scalars the last value on the wire wins.
    @inlinable
    public mutating func read<C: ProtoCodec>(_ codec: C.Type, _ tag: FieldTag) throws(ProtoDecodingError) -> C.Value {
        try expect(tag, C.wireType)
        return try C.read(from: &self)
    }

    /// Reads one element of a repeated string, bytes or message field.
    @inlinable
    public mutating func readRepeated<C: ProtoCodec>(
        _ codec: C.Type, _ tag: FieldTag, into values: inout [C.Value]
    ) throws(ProtoDecodingError) {
        try expect(tag, C.wireType)
        values.append(try C.read(from: &self))
    }

    /// Reads a repeated scalar in either form: packed (one length-delimited run)
    /// or unpacked (one element per field), as the protobuf spec requires.
    @inlinable
    public mutating func readPackable<C: PackableCodec>(
        _ codec: C.Type, _ tag: FieldTag, into values: inout [C.Value]
    ) throws(ProtoDecodingError) {
        if tag.wireType == .lengthDelimited {
            let length = try readLength()
            let stop = position &+ length
            // Reserve only what the bytes on hand can justify.
            values.reserveCapacity(values.count &+ length / (C.fixedSize ?? 1))
            if let fixed = C.fixedSize, length % fixed != 0 {
                throw .lengthOutOfBounds(offset: position, length: UInt64(length))
            }
            var packed = ProtoReader(base: base, position: position, end: stop, depth: depth)
            while !packed.isAtEnd { values.append(try C.read(from: &packed)) }
            position = stop
        } else {
            try expect(tag, C.wireType)
            values.append(try C.read(from: &self))
        }
    }

    /// Reads a singular message field; a second occurrence merges into the first.
    @inlinable
    public mutating func readMessage<M: ProtoMessage>(_ tag: FieldTag, into value: inout M?) throws(ProtoDecodingError) {
        try expect(tag, .lengthDelimited)
        var message = value ?? M()
        try readNested { (nested: inout ProtoReader) throws(ProtoDecodingError) in try message.merge(from: &nested) }
        value = message
    }

    /// Reads one map entry; a missing key or value takes its default, and a
    /// repeated key replaces the earlier value.
    @inlinable
    public mutating func readMapEntry<K: MapKeyCodec, V: ProtoCodec>(
        _ key: K.Type, _ value: V.Type, _ tag: FieldTag, into map: inout [K.Value: V.Value]
    ) throws(ProtoDecodingError) {
        try expect(tag, .lengthDelimited)
        let (k, v) = try readNested { (entry: inout ProtoReader) throws(ProtoDecodingError) -> (K.Value, V.Value) in
            var k = K.defaultValue
            var v = V.defaultValue
            while let t = try entry.nextTag() {
                switch t.fieldNumber {
                case 1: k = try entry.read(key, t)
                case 2: v = try entry.read(value, t)
                default: try entry.skip(t)
                }
            }
            return (k, v)
        }
        map[k] = v
    }

    /// Skips a field this schema does not know, keeping its bytes so that
    /// re-encoding the message loses nothing.
    @inlinable
    public mutating func skip(_ tag: FieldTag, into unknown: inout UnknownFields) throws(ProtoDecodingError) {
        let start = position
        try skip(tag)
        // The key is re-encoded canonically rather than copied, so a non-minimal
        // key on the wire still gives equal unknown fields for equal content.
        var key = tag.rawValue
        while key >= 0x80 {
            unknown.bytes.append(UInt8(truncatingIfNeeded: key) | 0x80)
            key >>= 7
        }
        unknown.bytes.append(UInt8(key))
        unknown.bytes.append(contentsOf: UnsafeRawBufferPointer(start: base.map { $0 + start }, count: position &- start))
    }

    /// Skips a field's payload.
    @inlinable
    public mutating func skip(_ tag: FieldTag) throws(ProtoDecodingError) {
        switch tag.wireType {
        case .varint: _ = try readVarint()
        case .fixed32: _ = try readFixed32()
        case .fixed64: _ = try readFixed64()
        case .lengthDelimited:
            let length = try readLength()
            position &+= length
        case .startGroup: try skipGroup(tag.fieldNumber, depth: depth)
        case .endGroup: throw .unexpectedEndGroup(offset: position)
        }
    }

    @usableFromInline
    mutating func skipGroup(_ fieldNumber: Int, depth: Int) throws(ProtoDecodingError) {
        guard depth < ProtoWire.maxDepth else { throw .recursionLimitExceeded }
        while position < end {
            let start = position
            let key = try readVarint()
            let field = Int(truncatingIfNeeded: key >> 3)
            guard let wireType = WireType(rawValue: UInt8(key & 7)) else {
                throw .invalidWireType(offset: start, rawValue: UInt8(key & 7))
            }
            switch wireType {
            case .endGroup:
                guard field == fieldNumber else { throw .unexpectedEndGroup(offset: start) }
                return
            case .startGroup: try skipGroup(field, depth: depth + 1)
            default: try skip(FieldTag(fieldNumber: field, wireType: wireType))
            }
        }
        throw .truncated(offset: position)
    }
}
