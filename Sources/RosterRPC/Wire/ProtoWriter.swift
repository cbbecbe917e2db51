import Foundation

/// Writes protobuf wire format into memory that the caller has already sized.
///
/// Messages know their exact encoded size (`ProtoMessage.serializedSize`), so
/// encoding is one allocation and one pass: the caller reserves that many bytes
/// (in an array, a `Data`, or a network buffer) and the writer fills them. It
/// never grows; writing past the end is a programming error and traps rather
/// than corrupting memory.
public struct ProtoWriter {
    @usableFromInline let base: UnsafeMutableRawPointer?
    @usableFromInline let capacity: Int
    @usableFromInline var written: Int
    /// The number of bytes written so far.
    @inlinable public var position: Int { written }

    /// Creates a writer that fills `buffer` from its start.
    @inlinable
    public init(buffer: UnsafeMutableRawBufferPointer) {
        self.base = buffer.baseAddress
        self.capacity = buffer.count
        self.written = 0
    }

    @inlinable
    mutating func reserve(_ n: Int) -> UnsafeMutableRawPointer {
        precondition(n <= capacity &- written, "ProtoWriter overflow: serializedSize disagrees with encode(to:)")
        let p = base.unsafelyUnwrapped + written
        written &+= n
        return p
    }

    // MARK: Primitives

    @inlinable
    public mutating func writeVarint(_ value: UInt64) {
        var v = value
        let p = reserve(ProtoWire.varintSize(v))
        var i = 0
        while v >= 0x80 {
            p.storeBytes(of: UInt8(truncatingIfNeeded: v) | 0x80, toByteOffset: i, as: UInt8.self)
            v >>= 7
            i &+= 1
        }
        p.storeBytes(of: UInt8(truncatingIfNeeded: v), toByteOffset: i, as: UInt8.self)
    }

    @inlinable
    public mutating func writeFixed32(_ value: UInt32) {
        reserve(4).storeBytes(of: value.littleEndian, as: UInt32.self)
    }

    @inlinable
    public mutating func writeFixed64(_ value: UInt64) {
        reserve(8).storeBytes(of: value.littleEndian, as: UInt64.self)
    }

    @inlinable
    public mutating func writeRawBytes(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        reserve(bytes.count).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
    }

    @inlinable
    public mutating func writeTag(_ fieldNumber: Int, _ wireType: WireType) {
        writeVarint(FieldTag(fieldNumber: fieldNumber, wireType: wireType).rawValue)
    }

    // MARK: Fields

    /// Writes one field: its key, then its payload.
    @inlinable
    public mutating func write<C: ProtoCodec>(_ codec: C.Type, field: Int, _ value: C.Value) {
        writeTag(field, C.wireType)
        C.write(value, to: &self)
    }

    /// Writes each element as its own field (strings, bytes, messages).
    @inlinable
    public mutating func writeRepeated<C: ProtoCodec>(_ codec: C.Type, field: Int, _ values: [C.Value]) {
        for value in values { write(codec, field: field, value) }
    }

    /// Writes a repeated scalar as one packed, length-delimited field.
    @inlinable
    public mutating func writePacked<C: PackableCodec>(_ codec: C.Type, field: Int, _ values: [C.Value]) {
        guard !values.isEmpty else { return }
        writeTag(field, .lengthDelimited)
        writeVarint(UInt64(ProtoSize.packedPayload(codec, values)))
        for value in values { C.write(value, to: &self) }
    }

    /// Writes a map as repeated entry messages (key = 1, value = 2), in key order
    /// so that equal maps always encode to equal bytes.
    @inlinable
    public mutating func writeMap<K: MapKeyCodec, V: ProtoCodec>(
        _ key: K.Type, _ value: V.Type, field: Int, _ map: [K.Value: V.Value]
    ) {
        for k in map.keys.sorted(by: K.areInIncreasingOrder) {
            let v = map[k]!
            writeTag(field, .lengthDelimited)
            writeVarint(UInt64(ProtoSize.mapEntryPayload(key, value, k, v)))
            write(key, field: 1, k)
            write(value, field: 2, v)
        }
    }

    /// Re-emits fields this version of the schema did not know, byte for byte.
    @inlinable
    public mutating func writeUnknown(_ unknown: UnknownFields) {
        unknown.bytes.withUnsafeBytes { writeRawBytes($0) }
    }
}

/// Encoded sizes, computed without writing anything.
public enum ProtoSize {
    @inlinable
    public static func field<C: ProtoCodec>(_ codec: C.Type, field: Int, _ value: C.Value) -> Int {
        ProtoWire.tagSize(field) &+ C.size(of: value)
    }

    @inlinable
    public static func repeated<C: ProtoCodec>(_ codec: C.Type, field: Int, _ values: [C.Value]) -> Int {
        var n = values.count &* ProtoWire.tagSize(field)
        for v in values { n &+= C.size(of: v) }
        return n
    }

    @inlinable
    public static func packedPayload<C: PackableCodec>(_ codec: C.Type, _ values: [C.Value]) -> Int {
        if let fixed = C.fixedSize { return fixed &* values.count }
        var n = 0
        for v in values { n &+= C.size(of: v) }
        return n
    }

    @inlinable
    public static func packed<C: PackableCodec>(_ codec: C.Type, field: Int, _ values: [C.Value]) -> Int {
        guard !values.isEmpty else { return 0 }
        let payload = packedPayload(codec, values)
        return ProtoWire.tagSize(field) &+ ProtoWire.varintSize(UInt64(payload)) &+ payload
    }

    @inlinable
    public static func mapEntryPayload<K: MapKeyCodec, V: ProtoCodec>(
        _ key: K.Type, _ value: V.Type, _ k: K.Value, _ v: V.Value
    ) -> Int {
        field(key, field: 1, k) &+ field(value, field: 2, v)
    }

    @inlinable
    public static func map<K: MapKeyCodec, V: ProtoCodec>(
        _ key: K.Type, _ value: V.Type, field: Int, _ map: [K.Value: V.Value]
    ) -> Int {
        var n = map.count &* ProtoWire.tagSize(field)
        for (k, v) in map {
            let entry = mapEntryPayload(key, value, k, v)
            n &+= ProtoWire.varintSize(UInt64(entry)) &+ entry
        }
        return n
    }
}
