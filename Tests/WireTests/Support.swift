import Foundation
import XCTest
@_exported import TestSupport

/// The repository root, found from this file's path.
let repositoryRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

func hex(_ bytes: [UInt8]) -> String {
    bytes.map { String(format: "%02x", $0) }.joined()
}

func unhex(_ text: String) -> [UInt8] {
    let digits = Array(text.filter { $0.isHexDigit }.utf8)
    return stride(from: 0, to: digits.count - 1, by: 2).map {
        UInt8(String(decoding: digits[$0...$0 + 1], as: UTF8.self), radix: 16)!
    }
}

/// Hex laid out 32 bytes to a line, for golden files that diff well.
func hexLines(_ bytes: [UInt8]) -> String {
    stride(from: 0, to: bytes.count, by: 32).map { hex(Array(bytes[$0..<min($0 + 32, bytes.count)])) }
        .joined(separator: "\n") + "\n"
}
