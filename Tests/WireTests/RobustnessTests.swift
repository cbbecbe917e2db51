import Foundation
import RosterAPI
import RosterRPC
import XCTest

/// Every generated decoder meets at least 100,000 random and mutated inputs.
/// Each must come back as a value or a `ProtoDecodingError`; a crash, a trap
/// or any other error fails the run. Inputs are seeded, so a failure replays.
final class RobustnessTests: XCTestCase {
    static let inputsPerDecoder = 100_000

    /// Decodes `input` as `M`; true if it decoded, false on a typed error.
    private static func attempt<M: ProtoMessage>(_: M.Type, _ input: [UInt8]) -> Bool {
        do throws(ProtoDecodingError) {
            let value = try M(serializedBytes: input)
            // Whatever decoded must re-encode and decode to the same bytes.
            let bytes = value.serializedBytes()
            precondition(bytes.count == value.serializedSize)
            precondition((try? M(serializedBytes: bytes))?.serializedBytes() == bytes, "unstable re-encoding")
            return true
        } catch {
            return false
        }
    }

    /// Runs the inputs for one decoder on every core.
    private func hammer<M: ProtoMessage>(_ type: M.Type, seed: UInt64, seeds samples: [[UInt8]], inputs: Int = inputsPerDecoder) {
        let workers = max(1, ProcessInfo.processInfo.activeProcessorCount)
        let perWorker = inputs / workers + 1
        let decoded = Counter()
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            var rng = SplitMix64(seed: seed &+ UInt64(worker) &* 0x1000_0001)
            var ok = 0
            for i in 0..<perWorker {
                let input = i % 2 == 0 ? Mutator.random(&rng) : Mutator.mutate(samples[Int(rng.next() % UInt64(samples.count))], &rng)
                if Self.attempt(type, input) { ok += 1 }
            }
            decoded.add(ok)
        }
        // Mutations of valid encodings often stay valid; purely random bytes rarely do.
        // Both paths must have been exercised.
        XCTAssertGreaterThan(decoded.value, 0, "\(M.self): nothing decoded")
        XCTAssertLessThan(decoded.value, workers * perWorker, "\(M.self): nothing failed")
    }

    private func samples(_ make: (inout RandomValues) -> [UInt8]) -> [[UInt8]] {
        var random = RandomValues(seed: 77)
        random.longArrays = false // small samples keep 100,000 decodes quick
        return (0..<64).map { _ in make(&random) }.filter { !$0.isEmpty }
    }

    /// Every message of the API schema, from the generated registry: 20,000
    /// inputs each, seeded with valid encodings of unrelated messages.
    func testEveryAPIMessageDecoderSurvivesHostileInput() {
        let seeds = samples { $0.document().serializedBytes() } + samples { $0.scalars().serializedBytes() }
        for (i, type) in RosterSchema.messages.enumerated() {
            func run<M: ProtoJSONMessage>(_ type: M.Type) {
                hammer(type, seed: 1000 + UInt64(i), seeds: seeds, inputs: 20_000)
            }
            run(type)
        }
    }

    func testFixtureDecodersSurviveHostileInput() {
        hammer(Scalars.self, seed: 1, seeds: samples { $0.scalars().serializedBytes() })
        hammer(Repeats.self, seed: 2, seeds: samples { $0.repeats().serializedBytes() })
        hammer(Optionals.self, seed: 3, seeds: samples { $0.optionals().serializedBytes() })
        hammer(Document.self, seed: 4, seeds: samples { $0.document().serializedBytes() })
        hammer(Document.Section.self, seed: 5, seeds: samples { $0.section().serializedBytes() })
        hammer(Document.Section.Paragraph.self, seed: 6, seeds: samples { $0.paragraph().serializedBytes() })
        hammer(Tree.self, seed: 7, seeds: samples { $0.tree().serializedBytes() })
        hammer(Empty.self, seed: 8, seeds: samples { $0.scalars().serializedBytes() })
    }

    func testAPIDecodersSurviveHostileInput() {
        func hashes(_ r: inout RandomValues, _ n: Int) -> Data {
            Data((0..<n * 16).map { _ in UInt8(truncatingIfNeeded: r.rng.next()) })
        }
        hammer(MatchRequest.self, seed: 11, seeds: samples { MatchRequest(advertiserID: $0.string(), hash: hashes(&$0, 1)).serializedBytes() })
        hammer(MatchResponse.self, seed: 12, seeds: samples { MatchResponse(matched: $0.bool(), version: $0.integer()).serializedBytes() })
        hammer(MatchManyRequest.self, seed: 13, seeds: samples {
            MatchManyRequest(advertiserID: $0.string(), hashes: hashes(&$0, Int.random(in: 0...20, using: &$0.rng))).serializedBytes()
        })
        hammer(MatchManyResponse.self, seed: 14, seeds: samples {
            MatchManyResponse(matched: $0.bytes(), count: $0.integer(), matchedCount: $0.integer(), version: $0.integer()).serializedBytes()
        })
        hammer(PublishRequest.self, seed: 15, seeds: samples { r in
            PublishRequest(advertiserID: r.string(), version: r.integer(),
                           segments: r.array(max: 4) { SegmentRef(path: $0.string(), keyCount: $0.integer()) }).serializedBytes()
        })
        hammer(PublishResponse.self, seed: 16, seeds: samples { PublishResponse(previousVersion: $0.integer()).serializedBytes() })
        hammer(UnpublishRequest.self, seed: 17, seeds: samples { UnpublishRequest(advertiserID: $0.string()).serializedBytes() })
        hammer(UnpublishResponse.self, seed: 18, seeds: samples { UnpublishResponse(removedVersion: $0.integer()).serializedBytes() })
        hammer(SegmentRef.self, seed: 19, seeds: samples { SegmentRef(path: $0.string(), keyCount: $0.integer()).serializedBytes() })
    }

    /// `ProtoWire.sameBytes`, which decides whether a call joins a run (its
    /// head, token and all) and whether a run of Match calls shares one
    /// advertiser: a difference in any byte, in a whole word or in the
    /// tail, at every length up to three words, is seen.
    func testSameBytesSeesADifferenceAnywhere() {
        for count in 0...24 {
            let a = (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            a.withUnsafeBytes { x in
                let copy = a
                copy.withUnsafeBytes { y in
                    XCTAssertTrue(ProtoWire.sameBytes(x.baseAddress ?? UnsafeRawPointer(bitPattern: 8)!, y.baseAddress ?? UnsafeRawPointer(bitPattern: 8)!, count: count))
                }
            }
            for at in 0..<count {
                var b = a
                b[at] ^= 0x40
                a.withUnsafeBytes { x in
                    b.withUnsafeBytes { y in
                        XCTAssertFalse(ProtoWire.sameBytes(x.baseAddress!, y.baseAddress!, count: count), "\(count) bytes, differing at \(at)")
                        XCTAssertTrue(ProtoWire.sameBytes(x.baseAddress!, y.baseAddress!, count: at), "the first \(at) agree")
                    }
                }
            }
        }
    }
}

/// Makes hostile inputs: random bytes, and valid encodings with bytes
/// flipped, inserted, deleted, truncated or lengths inflated.
enum Mutator {
    static func random(_ rng: inout SplitMix64) -> [UInt8] {
        let count = Int(rng.next() % 48)
        return (0..<count).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
    }

    static func mutate(_ sample: [UInt8], _ rng: inout SplitMix64) -> [UInt8] {
        var bytes = sample
        for _ in 0...(rng.next() % 4) {
            let at = bytes.isEmpty ? 0 : Int(rng.next() % UInt64(bytes.count))
            switch rng.next() % 7 {
            case 0 where !bytes.isEmpty: bytes[at] ^= UInt8(1 << (rng.next() % 8))
            case 1 where !bytes.isEmpty: bytes[at] = UInt8(truncatingIfNeeded: rng.next())
            case 2: bytes.insert(UInt8(truncatingIfNeeded: rng.next()), at: at)
            case 3 where !bytes.isEmpty: bytes.remove(at: at)
            case 4: bytes = Array(bytes.prefix(at))
            case 5 where !bytes.isEmpty: bytes[at] = [0xFF, 0x80, 0x7F, 0x00][Int(rng.next() % 4)]
            default: bytes.insert(contentsOf: [0xFF, 0xFF, 0xFF, 0xFF, 0x0F], at: at)
            }
        }
        return bytes
    }
}

/// A lock-protected total, for results from concurrent workers.
final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var total = 0

    func add(_ n: Int) { lock.lock(); total += n; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return total }
}
