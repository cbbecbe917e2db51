import Foundation
import XCTest

/// A small, fast, seedable generator (SplitMix64), so that every random test
/// replays the same inputs on every machine.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

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
