// The workers' hot loops, each variant side by side in one process,
// alternating, so the noisy machine affects all alike:
// - parsing one 64 MiB block from a file in the page cache (BlockParser),
//   against only reading it (the floor);
// - sorting its keys: the library's one-level bucket sort, a two-level
//   variant, and the standard library's sort;
// - writing them as a run, and merging one key range of sixteen runs.
import DataLake
import Foundation
import HashParsing
import IngestWorker
import SegmentStore

struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Two counting passes: 2,048 buckets, then 256 sub-buckets per bucket in cache.
func twoLevel(_ keys: inout [Key16]) -> Int {
    let n = keys.count
    let bits = 11
    let shift = UInt64(64 - bits)
    var starts = [Int](repeating: 0, count: (1 << bits) + 1)
    var sorted = [Key16](unsafeUninitializedCapacity: n) { out, initialized in
        keys.withUnsafeBufferPointer { k in
            starts.withUnsafeMutableBufferPointer { starts in
                for key in k { starts[Int(key.hi >> shift) + 1] += 1 }
                for b in 0..<(1 << bits) { starts[b + 1] += starts[b] }
                var next = Array(starts)
                next.withUnsafeMutableBufferPointer { next in
                    for key in k {
                        let b = Int(key.hi >> shift)
                        (out.baseAddress! + next[b]).initialize(to: key)
                        next[b] += 1
                    }
                }
            }
        }
        initialized = n
    }
    let largest = (0..<(1 << bits)).reduce(0) { max($0, starts[$1 + 1] - starts[$1]) }
    var scratch = [Key16](repeating: Key16(hi: 0, lo: 0), count: largest)
    var c = [Int](repeating: 0, count: 257)
    var nx = [Int](repeating: 0, count: 256)
    sorted.withUnsafeMutableBufferPointer { k in
        scratch.withUnsafeMutableBufferPointer { scratch in
            c.withUnsafeMutableBufferPointer { c in
                nx.withUnsafeMutableBufferPointer { nx in
                    for b in 0..<(1 << bits) {
                        let start = starts[b], end = starts[b + 1]
                        guard end - start > 1 else { continue }
                        for s in 0...256 { c[s] = 0 }
                        for i in start..<end { c[Int((k[i].hi >> (shift - 8)) & 0xFF) + 1] += 1 }
                        for s in 0..<256 { c[s + 1] += c[s]; nx[s] = c[s] }
                        for i in start..<end {
                            let s = Int((k[i].hi >> (shift - 8)) & 0xFF)
                            scratch[nx[s]] = k[i]
                            nx[s] += 1
                        }
                        for i in 0..<(end - start) { k[start + i] = scratch[i] }
                        for s in 0..<256 {
                            let a = start + c[s], e = start + c[s + 1]
                            guard e - a > 1 else { continue }
                            for i in (a + 1)..<e {
                                let key = k[i]
                                var j = i
                                while j > a && key < k[j - 1] { k[j] = k[j - 1]; j -= 1 }
                                k[j] = key
                            }
                        }
                    }
                }
            }
        }
    }
    keys = sorted
    var out = 1
    keys.withUnsafeMutableBufferPointer { k in
        for i in 1..<n where k[i] != k[out - 1] { k[out] = k[i]; out += 1 }
    }
    return out
}

let n = 2_033_602 // the keys of one 64 MiB block
var rng = SplitMix64(state: 42)
let input = (0..<n).map { _ in Key16(hi: rng.next(), lo: rng.next()) }
let clock = ContinuousClock()
var results: [String: [Duration]] = [:]
let sortScratch = ScratchBuffer()
for round in 0..<5 {
    for (name, sort) in [("library one-level (reused scratch, as workers do)", { (k: inout [Key16]) -> Int in
                             let sorted = k.withUnsafeBufferPointer { KeySorter.sortAndDeduplicate($0, low: 0, significantBits: 64, in: sortScratch) }
                             k.withUnsafeMutableBufferPointer { _ = $0.update(fromContentsOf: sorted) }
                             return sorted.count
                         }),
                         ("two-level", { (k: inout [Key16]) in twoLevel(&k) }),
                         ("stdlib sort", { (k: inout [Key16]) in k.sort(); return k.count })] as [(String, (inout [Key16]) -> Int)] {
        var keys = input
        var distinct = 0
        let t = clock.measure { distinct = sort(&keys) }
        precondition(distinct == n && keys[0] < keys[1], name)
        if round > 0 { results[name, default: []].append(t) }
    }
}
for (name, times) in results.sorted(by: { $0.key < $1.key }) {
    let best = times.min()!
    print("\(name): best \(best), all \(times.map { "\($0.components.attoseconds / 1_000_000_000_000_000) ms" })")
}

// Parsing: one 64 MiB block of a generated list, read through the local lake.
let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ingest-micro-\(getpid())")
try FileManager.default.createDirectory(at: dir.appendingPathComponent("a"), withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(at: dir) }
var text = [UInt8]()
text.reserveCapacity(64 << 20)
let hex = Array("0123456789abcdef".utf8)
while text.count + 33 <= 64 << 20 {
    for _ in 0..<2 {
        var v = rng.next()
        for _ in 0..<16 { text.append(hex[Int(v >> 60)]); v <<= 4 }
    }
    text.append(0x0A)
}
try Data(text).write(to: dir.appendingPathComponent("a/list.txt"))
let lake = LocalFolderLake(root: dir)
let object = try await lake.head("a/list.txt")
let block = BlockRange(start: 0, end: object.size)
var parseTimes: [Duration] = [], readTimes: [Duration] = []
for _ in 0..<5 {
    var keys: [Key16] = []
    keys.reserveCapacity(text.count / 33 + 16)
    let start = clock.now
    let stats = try await BlockParser().parse(lake, object: object, block: block, into: &keys)
    parseTimes.append(clock.now - start)
    precondition(stats.keys == text.count / 33)
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 64)
    let readStart = clock.now
    var offset: Int64 = 0
    while true {
        let n = try await lake.read("a/list.txt", offset: offset, into: buffer, ifMatch: object.etag)
        if n == 0 { break }
        offset += Int64(n)
    }
    readTimes.append(clock.now - readStart)
    buffer.deallocate()
}
let textBytes = Double(text.count)
@MainActor func mbps(_ d: Duration) -> Int { Int(textBytes / 1e6 / (Double(d.components.attoseconds) / 1e18 + Double(d.components.seconds))) }
print("parse 64 MiB block: best \(parseTimes.min()!) (\(mbps(parseTimes.min()!)) MB/s); read only: best \(readTimes.min()!) (\(mbps(readTimes.min()!)) MB/s)")

// Writing one block's keys as a run (grouped on 4 bits, as for a 1 GB file;
// not synced), against its parts: hashing the bytes and writing them out.
let runScratch = ScratchBuffer()
var reusedRunTimes: [Duration] = []
var runTimes: [Duration] = [], hashTimes: [Duration] = [], writeTimes: [Duration] = []
let runPath = dir.appendingPathComponent("block.run").path
let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: n * 16, alignment: 16)
defer { bytes.deallocate() }
for i in 0..<n * 16 { bytes[i] = UInt8(truncatingIfNeeded: i &* 2654435761 >> 7) }
var sink: UInt64 = 0
for _ in 0..<5 {
    runTimes.append(try clock.measure {
        _ = try input.withUnsafeBufferPointer { try RunWriter.write($0, partitionBits: 4, version: 1, to: runPath, durable: false) }
    })
    reusedRunTimes.append(try clock.measure {
        _ = try input.withUnsafeBufferPointer {
            try RunWriter.write($0, partitionBits: 4, version: 1, to: runPath, durable: false, scratch: runScratch)
        }
    })
    hashTimes.append(clock.measure { sink &+= XXH64.hash(UnsafeRawBufferPointer(bytes)) })
    writeTimes.append(clock.measure {
        let fd = open(runPath + ".raw", O_CREAT | O_TRUNC | O_WRONLY, 0o644)
        var done = 0
        while done < bytes.count { done += write(fd, bytes.baseAddress! + done, bytes.count - done) }
        close(fd)
        unlink(runPath + ".raw")
    })
}
print("write a run (\(n) keys, 4 bits): best \(runTimes.min()!) in fresh memory, \(reusedRunTimes.min()!) in a reused buffer; XXH64 of its \((n * 16) >> 20) MiB: best \(hashTimes.min()!); plain file write: best \(writeTimes.min()!) (\(sink & 1))")

// One merge task of a 1 GB file: a 1/16 key range of 16 runs (4 bits), its
// parts timed apart: reading the range from the runs, sorting, writing the segment.
var runPaths: [String] = []
for r in 0..<16 {
    let keys = (0..<n).map { _ in Key16(hi: rng.next(), lo: rng.next()) }
    let path = dir.appendingPathComponent("run-\(r).run").path
    _ = try keys.withUnsafeBufferPointer { try RunWriter.write($0, partitionBits: 4, version: 1, to: path, durable: false) }
    runPaths.append(path)
}
let (low, high): (UInt64, UInt64) = (5 << 60, 6 << 60)
var mergeKeys: [Key16] = []
let mergeBuffer = ScratchBuffer()
var mergeTimes: [Duration] = [], gatherTimes: [Duration] = [], sortTimes: [Duration] = [], segmentTimes: [Duration] = []
for _ in 0..<5 {
    let covered = try RunMerger.keysCovering(runPaths: runPaths, low: low, high: high)
    let out = dir.appendingPathComponent("merged.seg").path
    mergeTimes.append(try clock.measure {
        let writer = try SegmentWriter(path: out, advertiserID: "a", version: 1, estimatedKeys: covered, durable: false)
        _ = try RunMerger.merge(runPaths: runPaths, low: low, high: high, coveredKeys: covered, memoryLimit: 512 << 20,
                                scratch: out, into: writer, keys: &mergeKeys, buffer: mergeBuffer)
        _ = try writer.finish()
    })
    var gathered: [Key16] = []
    gatherTimes.append(try clock.measure {
        gathered.reserveCapacity(covered)
        for path in runPaths { try RunFile(path: path).forEachKey(low: low, high: high) { gathered.append(contentsOf: $0) } }
    })
    var count = 0
    sortTimes.append(clock.measure { count = KeySorter.sortAndDeduplicate(&gathered, low: low, significantBits: 60) })
    segmentTimes.append(try clock.measure {
        _ = try gathered.withUnsafeBufferPointer {
            try SegmentWriter.create(UnsafeBufferPointer(rebasing: $0[..<count]), at: out, advertiserID: "a", version: 1, durable: false)
        }
    })
}
print("merge a range of 16 runs (\(n) keys): best \(mergeTimes.min()!); read \(gatherTimes.min()!), sort \(sortTimes.min()!), write \(segmentTimes.min()!)")
