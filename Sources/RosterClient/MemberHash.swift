import Foundation
import HexDigits

/// The 16-byte key of a member: the MD5 of the normalised email, as lists
/// in the lake hold it in hex.
public struct MemberHash: Hashable, Sendable, CustomStringConvertible {
    public let bytes: Data

    /// From 32 hex digits (either case; surrounding whitespace ignored).
    public init?(hex: some StringProtocol) {
        guard let bytes = hex.withUTF8Bytes({ Self.decode($0) }) else { return nil }
        self.bytes = bytes
    }

    /// From 32 hex digits in UTF-8 (either case; surrounding ASCII whitespace,
    /// CR included, ignored): a line of a hash file, with no String made.
    public init?(hexUTF8 line: UnsafeRawBufferPointer) {
        guard let bytes = Self.decode(line) else { return nil }
        self.bytes = bytes
    }

    private static func decode(_ line: UnsafeRawBufferPointer) -> Data? {
        func isSpace(_ c: UInt8) -> Bool { c == 0x20 || (0x09...0x0D).contains(c) }
        var start = 0, end = line.count
        while start < end, isSpace(line[start]) { start += 1 }
        while end > start, isSpace(line[end - 1]) { end -= 1 }
        guard end - start == 32, let key = HexDigits.decode32(line.baseAddress! + start) else { return nil }
        var out = Data(count: 16)
        out.withUnsafeMutableBytes {
            $0.storeBytes(of: key.hi.bigEndian, toByteOffset: 0, as: UInt64.self)
            $0.storeBytes(of: key.lo.bigEndian, toByteOffset: 8, as: UInt64.self)
        }
        return out
    }

    /// From an email: trimmed, lowercased, then MD5.
    public init(email: String) {
        let normalised = email.trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
        bytes = Data(MD5.digest(Array(normalised.utf8)))
    }

    public init?(bytes: Data) {
        guard bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    public var hex: String { HexDigits.lowercase(bytes) }
    public var description: String { hex }
}

extension StringProtocol {
    /// Runs `body` over the string's UTF-8 bytes, contiguous (copied once if
    /// the string is not stored contiguously).
    fileprivate func withUTF8Bytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        if let result = utf8.withContiguousStorageIfAvailable({ body(UnsafeRawBufferPointer($0)) }) { return result }
        return Array(utf8).withUnsafeBytes(body)
    }
}
