import Foundation

/// How one protobuf field type travels on the wire.
///
/// Each schema type (`int32`, `sint64`, `string`, a message, ...) has a codec
/// type with only static members. Generated code names the codec next to each
/// field (`writer.write(SInt64Codec.self, field: 3, offset)`), so that encoding,
/// decoding and sizing of all nineteen field kinds is written once, here.
public protocol ProtoCodec {
    associatedtype Value: Sendable & Hashable
    /// The wire type of one (unpacked) value.
    static var wireType: WireType { get }
    /// The value a missing field decodes to.
    static var defaultValue: Value { get }
    /// Bytes the payload takes, including a length prefix where there is one.
    static func size(of value: Value) -> Int
    static func write(_ value: Value, to writer: inout ProtoWriter)
    static func read(from reader: inout ProtoReader) throws(ProtoDecodingError) -> Value
}

/// A scalar that proto3 packs when repeated.
public protocol PackableCodec: ProtoCodec {
    /// The size of every value for fixed-width types, `nil` for varints.
    static var fixedSize: Int? { get }
}

/// A type that may be a map key: integers, bool and string. Keys are written
/// in this order so that a map always encodes to the same bytes.
public protocol MapKeyCodec: ProtoCodec {
    static func areInIncreasingOrder(_ a: Value, _ b: Value) -> Bool
}

extension MapKeyCodec where Value: Comparable {
    @inlinable
    public static func areInIncreasingOrder(_ a: Value, _ b: Value) -> Bool { a < b }
}

extension PackableCodec {
    @inlinable public static var fixedSize: Int? { nil }
}

// MARK: - Varint types

public enum BoolCodec: PackableCodec, MapKeyCodec {
    public typealias Value = Bool
    @inlinable public static var wireType: WireType { .varint }
    @inlinable public static var defaultValue: Bool { false }
    @inlinable public static func size(of value: Bool) -> Int { 1 }
    @inlinable public static func write(_ value: Bool, to writer: inout ProtoWriter) { writer.writeVarint(value ? 1 : 0) }
    @inlinable public static func read(from reader: inout ProtoReader) throws(ProtoDecodingError) -> Bool {
        try reader.readVarint() != 0
    }
    @inlinable public static func areInIncreasingOrder(_ a: Bool, _ b: Bool) -> Bool { !a && b }
}

/// `int32`: negative values are sign-extended to ten bytes, as the spec requires.
public enum Int32Codec: PackableCodec, MapKeyCodec {
    public typealias Value = Int32
    @inlinable public static var wireType: WireType { .varint }
    @inlinable public static var defaultValue: Int32 { 0 }
    @inlinable public static func size(of value: Int32) -> Int {
        ProtoWire.varintSize(UInt64(bitPattern: Int64(value)))
    }
    @inlinable public static func write(_ value: Int32, to writer: inout ProtoWriter) {
        writer.writeVarint(UInt64(bitPattern: Int64(value)))
    }
    @inlinable public static func read(from reader: inout ProtoReader) throws(ProtoDecodingError) -> Int32 {
        Int32(truncatingIfNeeded: try reader.readVarint())
    }
}

public enum Int64Codec: PackableCodec, MapKeyCodec {
    public typealias Value = Int64
    @inlinable public static var wireType: WireType { .varint }
    @inlinable public static var defaultValue: Int64 { 0 }
    @inlinable public static func size(of value: Int64) -> Int { ProtoWire.varintSize(UInt64(bitPattern: value)) }
    @inlinable public static func write(_ value: Int64, to writer: inout ProtoWriter) {
        writer.writeVarint(UInt64(bitPattern: value))
    }
    @inlinable public static func read(from reader: inout ProtoReader) throws(ProtoDecodingError) -> Int64 {
        Int64(bitPattern: try reader.readVarint())
    }
}

public enum UInt32Codec: PackableCodec, MapKeyCodec {
    public typealias Value = UInt32
    @inlinable public static var wireType: WireType { .varint }
    @inlinable public static var defaultValue: UInt32 { 0 }
    @inlinable public static func size(of value: UInt32) -> Int { ProtoWire.varintSize(UInt64(value)) }
    @inlinable public static func write(_ value: UInt32, to writer: inout ProtoWriter) { writer.writeVarint(UInt64(value)) }
    @inlinable public static func read(from reader: inout ProtoReader) throws(ProtoDecodingError) -> UInt32 {
        UInt32(truncatingIfNeeded: try reader.readVarint())
    }
}

public enum UInt64Codec: PackableCodec, MapKeyCodec {
    public typealias Value = UInt64
    @inlinable public static var wireType: WireType { .varint }
    @inlinable public static var defaultValue: UInt64 { 0 }
    @inlinable public static func size(of value: UInt64) -> Int { ProtoWire.varintSize(value) }
    @inlinable public static func write(_ value: UInt64, to writer: inout ProtoWriter) { writer.writeVarint(value) }
    @inlinable public static func read(from reader: inout ProtoReader) throws(ProtoDecodingError) -> UInt64 {
        try reader.readVarint()
    }
}

public enum SInt32Codec: PackableCodec, MapKeyCodec {
    public typealias Value = Int32
    @inlinable public static var wireType: WireType { .varint }
    @inlinable public static var defaultValue: Int32 { 0 }
    @inlinable public static func size(of value: Int32) -> Int { ProtoWire.varintSize(UInt64(ProtoWire.zigZag(value))) }
    @inlinable public static func write(_ value: Int32, to writer: inout ProtoWriter) {
        writer.writeVarint(UInt64(ProtoWire.zigZag(value)))
    }
    @inlinable public static func read(from reader: inout ProtoReader) throws(ProtoDecodingError) -> Int32 {
        ProtoWire.unZigZag(UInt32(truncatingIfNeeded: try reader.readVarint()))
    }
}

public enum SInt64Codec: PackableCodec, MapKeyCodec {
    public typealias Value = Int64
    @inlinable public static var wireType: WireType { .varint }
    @inlinable public static var defaultValue: Int64 { 0 }
    @inlinable public static func size(of value: Int64) -> Int { ProtoWire.varintSize(ProtoWire.zigZag(value)) }
    @inlinable public static func write(_ value: Int64, to writer: inout ProtoWriter) {
        writer.writeVarint(ProtoWire.zigZag(value))
    }
    @inlinable public static func read(from reader: inout ProtoReader) throws(ProtoDecodingError) -> Int64 {
        ProtoWire.unZigZag(try reader.readVarint())
    }
}

/// An enum travels as an `int32` varint.
public enum EnumCodec<E: ProtoEnum>: PackableCodec {
    public typealias Value = E
    @inlinable public static var wireType: WireType { .varint }
    @inlinable public static var defaultValue: E { E() }
    @inlinable public static func size(of value: E) -> Int { Int32Codec.size(of: value.rawValue) }
    @inlinable public static func write(_ value: E, to writer: inout ProtoWriter) {
        Int32Codec.write(value.rawValue, to: &writer)
    }
    @inlinable public static func read(from reader: inout ProtoReader) throws(ProtoDecodingError) -> E {
        E(rawValue: try Int32Codec.read(from: &reader))
    }
}

// MARK: - Fixed-width types

public enum Fixed32Codec: PackableCodec, MapKeyCodec {
    public typealias Value = UInt32
    @inlinable public static var wireType: WireType { .fixed32 }
    @inlinable public static var fixedSize: Int? { 4 }
    @inlinable public static var defaultValue: UInt32 { 0 }
    @inlinable public static func size(of value: UInt32) -> Int { 4 }
    @inlinable public static func write(_ value: UInt32, to writer: inout ProtoWriter) { writer.writeFixed32(value) }
    @inlinable public static func read(from reader: inout ProtoReader) throws(ProtoDecodingError) -> UInt32 {
        try reader.readFixed32()
    }
}

public enum SFixed32Codec: PackableCodec, MapKeyCodec {
    public typealias Value = Int32
    @inlinable public static var wireType: WireType { .fixed32 }
    @inlinable public static var fixedSize: Int? { 4 }
    @inlinable public static var defaultValue: Int32 { 0 }
    @inlinable public static func size(of value: Int32) -> Int { 4 }
    @inlinable public static func write(_ value: Int32, to writer: inout ProtoWriter) {
        writer.writeFixed32(UInt32(bitPattern: value))
    }
    @inlinable public static func read(from reader: inout ProtoReader) throws(ProtoDecodingError) -> Int32 {
        Int32(bitPattern: try reader.readFixed32())
    }
}

/// `float` travels as its IEEE 754 bits, so NaN payloads and -0.0 survive.
public enum FloatCodec: PackableCodec {
    public typealias Value = Float
    @inlinable public static var wireType: WireType { .fixed32 }
    @inlinable public static var fixedSize: Int? { 4 }
    @inlinable public static var defaultValue: Float { 0 }
    @inlinable public static func size(of value: Float) -> Int { 4 }
    @inlinable public static func write(_ value: Float, to writer: inout ProtoWriter) { writer.writeFixed32(value.bitPattern) }
    @inlinable public static func read(from reader: inout ProtoReader) throws(ProtoDecodingError) -> Float {
        Float(bitPattern: try reader.readFixed32())
    }
}

public enum Fixed64Codec: PackableCodec, MapKeyCodec {
    public typealias Value = UInt64
    @inlinable public static var wireType: WireType { .fixed64 }
    @inlinable public static var fixedSize: Int? { 8 }
    @inlinable public static var defaultValue: UInt64 { 0 }
    @inlinable public static func size(of value: UInt64) -> Int { 8 }
    @inlinable public static func write(_ value: UInt64, to writer: inout ProtoWriter) { writer.writeFixed64(value) }
    @inlinable public static func read(from reader: inout ProtoReader) throws(ProtoDecodingError) -> UInt64 {
        try reader.readFixed64()
    }
}

public enum SFixed64Codec: PackableCodec, MapKeyCodec {
    public typealias Value = Int64
    @inlinable public static var wireType: WireType { .fixed64 }
    @inlinable public static var fixedSize: Int? { 8 }
    @inlinable public static var defaultValue: Int64 { 0 }
    @inlinable public static func size(of value: Int64) -> Int { 8 }
    @inlinable public static func write(_ value: Int64, to writer: inout ProtoWriter) {
        writer.writeFixed64(UInt64(bitPattern: value))
    }
    @inlinable public static func read(from reader: inout ProtoReader) throws(ProtoDecodingError) -> Int64 {
        Int64(bitPattern: try reader.readFixed64())
    }
}

public enum DoubleCodec: PackableCodec {
    public typealias Value = Double
    @inlinable public static var wireType: WireType { .fixed64 }
    @inlinable public static var fixedSize: Int? { 8 }
    @inlinable public static var defaultValue: Double { 0 }
    @inlinable public static func size(of value: Double) -> Int { 8 }
    @inlinable public static func write(_ value: Double, to writer: inout ProtoWriter) { writer.writeFixed64(value.bitPattern) }
    @inlinable public static func read(from reader: inout ProtoReader) throws(ProtoDecodingError) -> Double {
        Double(bitPattern: try reader.readFixed64())
    }
}

// MARK: - Length-delimited types

public enum StringCodec: MapKeyCodec {
    public typealias Value = String
    @inlinable public static var wireType: WireType { .lengthDelimited }
    @inlinable public static var defaultValue: String { "" }
    @inlinable public static func size(of value: String) -> Int {
        let n = value.utf8.count
        return ProtoWire.varintSize(UInt64(n)) &+ n
    }
    @inlinable public static func write(_ value: String, to writer: inout ProtoWriter) {
        var value = value
        value.withUTF8 { utf8 in
            writer.writeVarint(UInt64(utf8.count))
            writer.writeRawBytes(UnsafeRawBufferPointer(utf8))
        }
    }
    @inlinable public static func read(from reader: inout ProtoReader) throws(ProtoDecodingError) -> String {
        let length = try reader.readLength()
        return try reader.withBytes(count: length) { (bytes) throws(ProtoDecodingError) -> String in
            let utf8 = bytes.bindMemory(to: UInt8.self)
            // ASCII (ids, names: nearly every string on this wire) is valid
            // UTF-8 as it stands: checked with one pass and copied without the
            // generic validator, which looked up type metadata on every call
            // and was a measurable share of a single Match.
            if ProtoWire.isASCII(utf8) { return String(decoding: utf8, as: UTF8.self) }
            guard let s = String(validating: utf8, as: UTF8.self) else {
                throw .invalidUTF8(field: nil)
            }
            return s
        }
    }
}

public enum BytesCodec: ProtoCodec {
    public typealias Value = Data
    @inlinable public static var wireType: WireType { .lengthDelimited }
    @inlinable public static var defaultValue: Data { Data() }
    @inlinable public static func size(of value: Data) -> Int {
        ProtoWire.varintSize(UInt64(value.count)) &+ value.count
    }
    @inlinable public static func write(_ value: Data, to writer: inout ProtoWriter) {
        writer.writeVarint(UInt64(value.count))
        value.withUnsafeBytes { writer.writeRawBytes($0) }
    }
    @inlinable public static func read(from reader: inout ProtoReader) throws(ProtoDecodingError) -> Data {
        let length = try reader.readLength()
        return try reader.withBytes(count: length) { Data($0) }
    }
}

/// An embedded message: a length prefix, then the message's own encoding.
public enum MessageCodec<M: ProtoMessage>: ProtoCodec {
    public typealias Value = M
    @inlinable public static var wireType: WireType { .lengthDelimited }
    @inlinable public static var defaultValue: M { M() }
    @inlinable public static func size(of value: M) -> Int {
        let n = value.serializedSize
        return ProtoWire.varintSize(UInt64(n)) &+ n
    }
    @inlinable public static func write(_ value: M, to writer: inout ProtoWriter) {
        writer.writeVarint(UInt64(value.serializedSize))
        value.encode(to: &writer)
    }
    @inlinable public static func read(from reader: inout ProtoReader) throws(ProtoDecodingError) -> M {
        var message = M()
        try reader.readNested { (nested: inout ProtoReader) throws(ProtoDecodingError) in try message.merge(from: &nested) }
        return message
    }
}
