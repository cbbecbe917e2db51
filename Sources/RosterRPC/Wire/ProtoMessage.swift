import Foundation

/// A message that encodes to and decodes from the protobuf binary format.
///
/// Generated code conforms every schema message to this protocol; the three
/// requirements below are all it writes. Everything else, such as decoding from
/// `Data` or encoding to `[UInt8]`, is shared here.
public protocol ProtoMessage: Sendable, Hashable {
    /// A message with every field at its default.
    init()

    /// Reads fields until the reader is exhausted, with proto3 semantics: for
    /// scalars the last value wins, repeated fields append, messages merge, and
    /// unknown fields are kept.
    mutating func merge(from reader: inout ProtoReader) throws(ProtoDecodingError)

    /// The exact number of bytes `encode(to:)` writes.
    var serializedSize: Int { get }

    /// Writes every field that is not at its default, in field-number order.
    func encode(to writer: inout ProtoWriter)
}

extension ProtoMessage {
    /// Decodes a message from `bytes`.
    @inlinable
    public init(decoding bytes: UnsafeRawBufferPointer) throws(ProtoDecodingError) {
        self.init()
        var reader = ProtoReader(buffer: bytes)
        try merge(from: &reader)
    }

    /// Decodes a message from any contiguous bytes (`[UInt8]`, `Data`, ...).
    @inlinable
    public init(serializedBytes bytes: some ContiguousBytes) throws(ProtoDecodingError) {
        let result: Result<Self, ProtoDecodingError> = bytes.withUnsafeBytes { buffer in
            do throws(ProtoDecodingError) { return .success(try Self(decoding: buffer)) } catch { return .failure(error) }
        }
        self = try result.get()
    }

    /// Writes the message into `buffer`, which must hold at least
    /// `serializedSize` bytes; returns the number of bytes written.
    @inlinable
    public func encode(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        var writer = ProtoWriter(buffer: buffer)
        encode(to: &writer)
        return writer.position
    }

    /// The message's encoding as an array.
    @inlinable
    public func serializedBytes() -> [UInt8] {
        let size = serializedSize
        return [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
            count = encode(into: UnsafeMutableRawBufferPointer(buffer))
            precondition(count == size, "serializedSize disagrees with encode(to:)")
        }
    }

    /// The message's encoding as `Data`.
    @inlinable
    public func serializedData() -> Data {
        let size = serializedSize
        var data = Data(count: size)
        data.withUnsafeMutableBytes { buffer in
            let written = encode(into: buffer)
            precondition(written == size, "serializedSize disagrees with encode(to:)")
        }
        return data
    }
}

/// A schema enum. Proto3 enums are open: a number this schema does not name
/// decodes to `.unrecognized(n)` and re-encodes unchanged.
public protocol ProtoEnum: Sendable, Hashable, CaseIterable {
    /// The enum's first value, number 0, which proto3 uses as the default.
    init()
    /// The case with this number, or `.unrecognized(rawValue)`.
    init(rawValue: Int32)
    /// The number on the wire.
    var rawValue: Int32 { get }
}

/// Fields that the decoder did not recognise, kept as their exact wire bytes.
///
/// A service built from an older schema can therefore pass a newer message
/// through without dropping what it does not understand.
public struct UnknownFields: Sendable, Hashable {
    public var bytes: [UInt8]

    @inlinable
    public init() { bytes = [] }

    @inlinable
    public var isEmpty: Bool { bytes.isEmpty }

    @inlinable
    public var count: Int { bytes.count }
}
