import Crypto
import Foundation
import HexDigits

/// A member's hash as lists in the lake hold it in hex: the MD5 (16 bytes)
/// or the SHA-256 (32 bytes) of the normalised email.
public struct MemberHash: Hashable, Sendable, CustomStringConvertible {
    public let bytes: Data

    /// MD5 or SHA-256, by width.
    public var type: HashType { bytes.count == 32 ? .sha256 : .md5 }

    /// From 32 or 64 hex digits (either case; surrounding whitespace ignored).
    public init?(hex: some StringProtocol) {
        guard let bytes = hex.withUTF8Bytes({ Self.decode($0) }) else { return nil }
        self.bytes = bytes
    }

    /// From 32 or 64 hex digits in UTF-8 (either case; surrounding ASCII
    /// whitespace, CR included, ignored): a line of a hash file, with no String made.
    public init?(hexUTF8 line: UnsafeRawBufferPointer) {
        guard let bytes = Self.decode(line) else { return nil }
        self.bytes = bytes
    }

    private static func decode(_ line: UnsafeRawBufferPointer) -> Data? {
        func isSpace(_ c: UInt8) -> Bool { c == 0x20 || (0x09...0x0D).contains(c) }
        var start = 0, end = line.count
        while start < end, isSpace(line[start]) { start += 1 }
        while end > start, isSpace(line[end - 1]) { end -= 1 }
        guard end - start == 32 || end - start == 64 else { return nil }
        var out = Data(count: (end - start) / 2)
        for half in stride(from: start, to: end, by: 32) {
            guard let key = HexDigits.decode32(line.baseAddress! + half) else { return nil }
            out.withUnsafeMutableBytes {
                $0.storeBytes(of: key.hi.bigEndian, toByteOffset: (half - start) / 2, as: UInt64.self)
                $0.storeBytes(of: key.lo.bigEndian, toByteOffset: (half - start) / 2 + 8, as: UInt64.self)
            }
        }
        return out
    }

    /// From an email, normalised as `normalise` says, then hashed: MD5 by
    /// default, as most lists hold; SHA-256 as the large customer-match
    /// products take them.
    public init(email: String, type: HashType = .md5) {
        let normalised = Array(Self.normalise(email).utf8)
        bytes = type == .sha256 ? Data(SHA256.hash(data: normalised)) : Data(MD5.digest(normalised))
    }

    /// The normalised email, as lists are built from (docs/INGEST.md):
    /// surrounding whitespace trimmed, lowercased. Nothing else: Gmail's
    /// dots and `+tags` are kept, since whether `a.b@gmail.com` and
    /// `ab@gmail.com` are one person is the list owner's rule, not ours, and
    /// a hash only matches if both sides normalised alike.
    public static func normalise(_ email: String) -> String {
        email.trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
    }

    /// From 16 (MD5) or 32 (SHA-256) bytes.
    public init?(bytes: Data) {
        guard bytes.count == 16 || bytes.count == 32 else { return nil }
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
