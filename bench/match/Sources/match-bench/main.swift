// match-bench: how fast Roster answers membership questions.
//
//   match-bench lookup  [--keys 1000000,10000000]   in-process ns per lookup, single and batched
//   match-bench network [--keys 10000000] [--seconds 2] [--rounds 5] [--open-seconds 10]
//                       [--server PATH|self] [--redis PATH]
//                        the match server and redis-server over loopback, same
//                        hashes, same connections, same pipelining depth
//                        (MATCH_BENCH_ONLY_MATCH=1 runs one row only: Match, or
//                        MatchMany of MATCH_BENCH_BATCH keys, on
//                        MATCH_BENCH_CONNECTIONS x MATCH_BENCH_DEPTH;
//                        MATCH_BENCH_ROWS=3,1,3 runs those rows of the table,
//                        in that order; MATCH_BENCH_ONLY_OPEN_LOOP=1 only the
//                        open loop; MATCH_BENCH_TOKENS=1 starts the match
//                        server checking tokens, as in production, and every
//                        call carries one)
//   match-bench advertisers [--advertisers 200] [--keys-per-list 50000] [--seconds 2]
//                       [--rounds 3] [--rate 10000] [--open-seconds 5] [--server PATH] [--redis PATH]
//                        one user asked of many lists: MatchAdvertisers, N Match
//                        calls, and N Redis SISMEMBERs (Advertisers.swift)
//
// The network driver speaks both protocols from raw sockets with the same
// loop (write a window of requests, read the replies, repeat), so neither
// side pays for a heavier client than the other.

#if canImport(Glibc)
import Glibc
#endif
import Foundation
import MatchServer
import RosterAPI
import RosterRPC
import RosterServer
import RosterTransport
import SegmentStore

// MARK: - Keys

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

func makeKeys(_ n: Int, seed: UInt64) -> [Key16] {
    var rng = SplitMix64(seed: seed)
    var keys = (0..<n).map { _ in Key16(hi: rng.next(), lo: rng.next()) }
    keys.sort()
    return keys
}

/// Half members, half fresh random keys, shuffled; as packed 16-byte records.
func makeProbes(_ members: [Key16], count: Int, seed: UInt64) -> [UInt8] {
    var rng = SplitMix64(seed: seed)
    var out = [UInt8]()
    out.reserveCapacity(count * 16)
    for i in 0..<count {
        let key = i % 2 == 0 ? members[Int(rng.next() % UInt64(members.count))] : Key16(hi: rng.next(), lo: rng.next())
        out += key.bytes
    }
    return out
}

func now() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

// MARK: - In-process lookups

func lookupBench(sizes: [Int]) async throws {
    print("| keys | single lookup ns | batched (100) ns/key | batched (1000) ns/key | batched (100), caches churned, ns/key | file bytes/key | scrub piece µs, median / max |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in sizes {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("match-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let keys = makeKeys(n, seed: 42)
        let path = dir.appendingPathComponent("s.seg").path
        var unique = keys
        unique.removeAll(keepingCapacity: true)
        for k in keys where unique.last != k { unique.append(k) }
        _ = try SegmentWriter.create(unique, count: unique.count, at: path, advertiserID: "bench", version: 1)
        let segment = try Segment(path: path)
        let fileBytes = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        let probeCount = 2_000_000
        let probes = makeProbes(unique, count: probeCount, seed: 7)

        // Warm the mapping so page faults are not measured.
        var hits = 0
        probes.withUnsafeBytes { p in for i in 0..<probeCount where segment.contains(Key16(p.baseAddress! + i * 16)) { hits += 1 } }

        let t0 = now()
        var found = 0
        probes.withUnsafeBytes { p in for i in 0..<probeCount where segment.contains(Key16(p.baseAddress! + i * 16)) { found += 1 } }
        let single = Double(now() - t0) / Double(probeCount)

        // Batches of 100 (a typical MatchMany) and of 1000: the pipeline of
        // prefetches fills and drains once a batch, which costs more in a short one.
        //
        // With `churn`, that many bytes are written between batches (untimed;
        // 4 MiB is more than this core's L2), over the first quarter of the
        // probes: in a match server a batch follows a trip through the
        // kernel's network stack and the event loop, so the index and page
        // tables are not warm as they are back to back.
        func batchedLookups(_ batch: Int, churn churnBytes: Int = 0) -> Double {
            let churn = UnsafeMutableRawBufferPointer.allocate(byteCount: max(churnBytes, 1), alignment: 64)
            defer { churn.deallocate() }
            let count = churnBytes > 0 ? probeCount / 4 / batch * batch : probeCount
            var bitmap = [UInt8](repeating: 0, count: (batch + 7) / 8)
            var spent: UInt64 = 0
            var batchFound = 0
            var expected = count == probeCount ? found : 0
            probes.withUnsafeBytes { p in
                var i = 0
                while i < count {
                    if churnBytes > 0 { churn.initializeMemory(as: UInt8.self, repeating: UInt8(truncatingIfNeeded: i)) }
                    for j in 0..<bitmap.count { bitmap[j] = 0 }
                    let t0 = now()
                    bitmap.withUnsafeMutableBufferPointer { segment.lookup(p.baseAddress! + i * 16, count: batch, into: $0.baseAddress!) }
                    spent += now() - t0
                    batchFound += bitmap.reduce(0) { $0 + $1.nonzeroBitCount }
                    i += batch
                }
                // Over part of the probes: its single lookups counted again.
                if count < probeCount { for i in 0..<count where segment.contains(Key16(p.baseAddress! + i * 16)) { expected += 1 } }
            }
            precondition(found == hits && batchFound == expected, "lookups disagree")
            return Double(spent) / Double(count)
        }
        let batched100 = batchedLookups(100)
        let batched = batchedLookups(1000)
        let churned = batchedLookups(100, churn: 4 << 20)
        // How long the background scrub holds a core at a time: one piece
        // of `Segment.verify(inPiecesOf:)` at the match server's piece size.
        var pieces: [UInt64] = []
        var pieceStart = now()
        try await segment.verify(inPiecesOf: MatchCatalog.scrubPiece) { _ in
            let t = now()
            pieces.append(t - pieceStart)
            pieceStart = now()
        }
        pieces.sort()
        print(String(format: "| %d | %.0f | %.0f | %.0f | %.0f | %.2f | %.0f / %.0f |", n, single, batched100, batched, churned, Double(fileBytes) / Double(n),
                     Double(pieces[pieces.count / 2]) / 1000, Double(pieces.last!) / 1000))
    }
}

// MARK: - Raw socket driver

final class Socket {
    let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0 else { throw CocoaError(.fileReadUnknown) }
    }

    /// Sends `preface` and drops the server's answer of `answer` bytes.
    func handshake(_ preface: [UInt8], answer: Int) -> [UInt8] {
        sendAll(preface)
        var buffer = [UInt8]()
        while buffer.count < answer { receive(into: &buffer) }
        buffer.removeFirst(answer)
        return buffer
    }

    func sendAll(_ bytes: [UInt8]) {
        var done = 0
        bytes.withUnsafeBytes { b in
            while done < b.count {
                let n = send(fd, b.baseAddress! + done, b.count - done, Int32(MSG_NOSIGNAL))
                if n <= 0 { fatalError("send failed") }
                done += n
            }
        }
    }

    /// Where `receive` reads: one buffer for the socket's life. (A fresh
    /// zeroed 256 KiB array a call, as this once was, cost the driver ~10 µs
    /// of memset a read: the ping-pong of the closed loop waited on the
    /// driver, which held the faster server's figures down the most.)
    private let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 64)

    deinit {
        close(fd)
        chunk.deallocate()
    }

    /// Reads whatever is available (blocking for at least one byte).
    func receive(into buffer: inout [UInt8]) {
        let n = recv(fd, chunk.baseAddress!, chunk.count, 0)
        if n <= 0 { fatalError("connection closed") }
        buffer.append(contentsOf: UnsafeRawBufferPointer(rebasing: chunk[0..<n]))
    }
}

/// A protocol the driver can speak: encode request i, and find complete replies.
protocol Wire {
    func preface() -> [UInt8]
    func request(_ probes: UnsafeRawPointer, batch: Int, id: UInt32) -> [UInt8]
    /// Parses one reply from `buffer` at `offset`; returns its length and the number of hits, or nil if incomplete.
    func reply(_ buffer: [UInt8], at offset: Int) -> (length: Int, hits: Int)?
}

struct RosterWire: Wire {
    let advertiser: String
    /// Sent as `authorization: Bearer <token>` on every call, as a client of
    /// a server that checks tokens does (`MATCH_BENCH_TOKENS`).
    var token: String? = benchTokens?.client
    func preface() -> [UInt8] { [0x52, 0x4F, 0x53, 0x54, 0, 1, 0, 0] }
    func request(_ probes: UnsafeRawPointer, batch: Int, id: UInt32) -> [UInt8] {
        let message: [UInt8]
        let method: UInt32
        if batch == 1 {
            message = MatchRequest(advertiserID: advertiser, hash: Data(bytes: probes, count: 16)).serializedBytes()
            method = MatchService.Method.match.id
        } else {
            message = MatchManyRequest(advertiserID: advertiser, hashes: Data(bytes: probes, count: 16 * batch)).serializedBytes()
            method = MatchService.Method.matchMany.id
        }
        var metadata: [UInt8] = [0, 0]
        if let token {
            func string(_ text: String) -> [UInt8] { withUnsafeBytes(of: UInt16(text.utf8.count).bigEndian, Array.init) + Array(text.utf8) }
            metadata = [0, 1] + string("authorization") + string("Bearer \(token)")
        }
        var out = [UInt8]()
        out.reserveCapacity(20 + metadata.count + message.count)
        let length = UInt32(8 + metadata.count + message.count)
        out += withUnsafeBytes(of: length.bigEndian, Array.init) + [0x01, 0] + withUnsafeBytes(of: id.bigEndian, Array.init)
        out += withUnsafeBytes(of: method.bigEndian, Array.init) + [0, 0, 0, 0] + metadata
        return out + message
    }
    func reply(_ b: [UInt8], at o: Int) -> (length: Int, hits: Int)? {
        guard b.count - o >= 10 else { return nil }
        let length = Int(b[o]) << 24 | Int(b[o + 1]) << 16 | Int(b[o + 2]) << 8 | Int(b[o + 3])
        guard b.count - o >= 10 + length else { return nil }
        precondition(b[o + 10] == 0, "call failed with status \(b[o + 10])")
        // The replies are not decoded: the driver must cost the same for both
        // systems, and the tests check the answers. Only the status is read.
        return (10 + length, 0)
    }
}

struct RedisWire: Wire {
    /// The set asked.
    var key: [UInt8] = Array("s".utf8)
    func preface() -> [UInt8] { [] }
    func request(_ probes: UnsafeRawPointer, batch: Int, id: UInt32) -> [UInt8] {
        let command = batch == 1 ? "SISMEMBER" : "SMISMEMBER"
        var out = Array("*\(2 + batch)\r\n$\(command.utf8.count)\r\n\(command)\r\n$\(key.count)\r\n".utf8) + key + [13, 10]
        for i in 0..<batch {
            out += Array("$16\r\n".utf8)
            out += UnsafeRawBufferPointer(start: probes + i * 16, count: 16)
            out += [13, 10]
        }
        return out
    }
    func reply(_ b: [UInt8], at o: Int) -> (length: Int, hits: Int)? {
        // ":1\r\n" or "*N\r\n" followed by N integer replies.
        func line(_ from: Int) -> (Int, Int)? { // value, next offset
            var i = from + 1
            var value = 0
            while i < b.count, b[i] != 13 { value = value * 10 + Int(b[i] - 48); i += 1 }
            guard i + 1 < b.count else { return nil }
            return (value, i + 2)
        }
        guard o < b.count else { return nil }
        if b[o] == UInt8(ascii: ":") {
            guard let (v, next) = line(o) else { return nil }
            return (next - o, v)
        }
        precondition(b[o] != UInt8(ascii: "-"), "redis error reply")
        precondition(b[o] == UInt8(ascii: "*"), "unexpected redis reply")
        guard let (n, first) = line(o) else { return nil }
        var at = first
        var hits = 0
        for _ in 0..<n {
            guard at < b.count, let (v, next) = line(at) else { return nil }
            hits += v
            at = next
        }
        return (at - o, hits)
    }
}

struct LoadResult {
    var requests = 0
    var keys = 0
    var seconds = 0.0
    var latencies: [UInt64] = []
    /// The p99 of each one-second window of an open-loop run, in µs.
    var windowP99: [Double] = []
    func p(_ q: Double) -> Double {
        latencies.isEmpty ? .nan : Double(latencies[min(latencies.count - 1, Int(Double(latencies.count) * q))]) / 1000
    }

    /// Adds `other`'s counts and samples (unsorted: sort before `p`).
    mutating func absorb(_ other: LoadResult) {
        requests += other.requests
        keys += other.keys
        seconds += other.seconds
        latencies += other.latencies
        windowP99 += other.windowP99
    }
}

/// Closed loop per connection: write `depth` requests at once, read their replies, repeat.
func closedLoop(wire: Wire, port: Int, connections: Int, depth: Int, batch: Int, probes: [UInt8], seconds: Double) -> LoadResult {
    let results = NSLock()
    var total = LoadResult()
    let group = DispatchGroup()
    let probeCount = probes.count / 16
    let start = now()
    let warmEnd = start + 500_000_000
    let end = warmEnd + UInt64(seconds * 1e9)
    for c in 0..<connections {
        group.enter()
        Thread {
            let socket = try! Socket(port: port)
            var buffer = socket.handshake(wire.preface(), answer: wire.preface().count)
            var local = LoadResult()
            // Requests are built before the clock starts and replayed, so the
            // driver spends its time on the socket, not on encoding.
            var pool: [[UInt8]] = []
            var cursor = (c * 7919 * batch) % probeCount
            probes.withUnsafeBytes { p in
                for id in 0..<max(depth * 4, 256) {
                    if cursor + batch > probeCount { cursor = 0 }
                    pool.append(wire.request(p.baseAddress! + cursor * 16, batch: batch, id: UInt32(id + 1)))
                    cursor += batch
                }
            }
            var next = 0
            var out = [UInt8]()
            probes.withUnsafeBytes { p in
                while true {
                    let t0 = now()
                    if t0 >= end { break }
                    out.removeAll(keepingCapacity: true)
                    for _ in 0..<depth {
                        out += pool[next]
                        next = (next + 1) % pool.count
                    }
                    socket.sendAll(out)
                    var got = 0
                    var offset = 0
                    while got < depth {
                        while let (length, _) = wire.reply(buffer, at: offset) {
                            offset += length
                            got += 1
                            if t0 >= warmEnd { local.latencies.append(now() - t0) }
                            if got == depth { break }
                        }
                        if got < depth { socket.receive(into: &buffer) }
                    }
                    buffer.removeFirst(offset)
                    if t0 >= warmEnd {
                        local.requests += depth
                        local.keys += depth * batch
                    }
                }
            }
            results.lock()
            total.absorb(local)
            results.unlock()
            group.leave()
        }.start()
    }
    group.wait()
    total.seconds = Double(end - warmEnd) / 1e9
    total.latencies.sort()
    return total
}

/// Open loop: one request every 1/rate s on one connection, latency from the
/// intended send time (so a stall shows as queueing, not as missing samples).
func openLoop(wire: Wire, port: Int, rate: Int, probes: [UInt8], seconds: Double) -> LoadResult {
    let socket = try! Socket(port: port)
    let early = socket.handshake(wire.preface(), answer: wire.preface().count)
    let interval = 1_000_000_000 / UInt64(rate)
    let total = Int(Double(rate) * seconds)
    let intended = (0..<total).map { UInt64($0) * interval }
    var latencies = [UInt64](repeating: 0, count: total)
    let start = now() + 50_000_000
    let reader = Thread {
        pin(thread: 0, to: [1])
        var buffer = early
        var offset = 0
        var got = 0
        while got < total {
            while got < total, let (length, _) = wire.reply(buffer, at: offset) {
                offset += length
                latencies[got] = now() - (start + intended[got])
                got += 1
            }
            if offset > 1 << 20 { buffer.removeFirst(offset); offset = 0 }
            if got < total { socket.receive(into: &buffer) }
        }
    }
    let done = DispatchSemaphore(value: 0)
    let readerDone = Thread { reader.main(); done.signal() }
    readerDone.start()
    pin(thread: 0, to: [0])
    defer { pin(thread: 0, to: Array(0..<ProcessInfo.processInfo.activeProcessorCount)) }
    probes.withUnsafeBytes { p in
        for i in 0..<total {
            // The sender spins to its send times: sleeping 10,000 times a second
            // wakes too late on this machine and shows up as queueing. The
            // spinning thread costs one core, for both systems alike.
            let due = start + intended[i]
            while now() < due {}
            socket.sendAll(wire.request(p.baseAddress! + (i % (probes.count / 16)) * 16, batch: 1, id: UInt32(i + 1)))
        }
    }
    done.wait()
    var result = LoadResult(requests: total, keys: total, seconds: seconds, latencies: latencies)
    // Latencies are in send order, so windows of `rate` calls are seconds.
    result.windowP99 = stride(from: 0, to: total - rate + 1, by: rate).map { first in
        let window = latencies[first..<(first + rate)].sorted()
        return Double(window[Int(Double(rate) * 0.99)]) / 1000
    }.sorted()
    result.latencies.sort()
    return result
}

/// Open loops on several systems in alternating rounds, `seconds` in all for
/// each, merged per system. One long run each, one system after the other,
/// would let a burst of noise on this shared machine land on one system
/// only; rounds of a few seconds, their order turned each round, spread it
/// over both. Each server is pinned to core 1 while it runs (see `openLoop`).
func alternatingOpenLoops(_ systems: [(wire: Wire, port: Int, pid: Int32)], rate: Int, probes: [UInt8], seconds: Double) -> [LoadResult] {
    let rounds = max(1, Int(seconds / 2))
    let perRound = seconds / Double(rounds)
    let cores = Array(0..<ProcessInfo.processInfo.activeProcessorCount)
    var merged = [LoadResult](repeating: LoadResult(), count: systems.count)
    for round in 0..<rounds {
        let order = round % 2 == 0 ? Array(systems.indices) : systems.indices.reversed()
        for s in order {
            pin(process: systems[s].pid, to: [1])
            let r = openLoop(wire: systems[s].wire, port: systems[s].port, rate: rate, probes: probes, seconds: perRound)
            pin(process: systems[s].pid, to: cores)
            merged[s].absorb(r)
        }
    }
    for s in merged.indices {
        merged[s].latencies.sort()
        merged[s].windowP99.sort()
    }
    return merged
}

// MARK: - Servers

/// Restricts thread `tid` (0: the calling thread) to the given CPUs.
func pin(thread tid: Int32, to cpus: [Int]) {
    var set = cpu_set_t()
    withUnsafeMutableBytes(of: &set) { bits in
        bits.initializeMemory(as: UInt8.self, repeating: 0)
        for cpu in cpus { bits[cpu / 8] |= UInt8(1 << (cpu % 8)) }
    }
    // sched_setaffinity is a GNU extension the Glibc module does not import.
    typealias SetAffinity = @convention(c) (pid_t, Int, UnsafeRawPointer) -> Int32
    guard let symbol = dlsym(nil, "sched_setaffinity") else { return }
    _ = withUnsafeBytes(of: &set) { unsafeBitCast(symbol, to: SetAffinity.self)(tid, MemoryLayout<cpu_set_t>.size, $0.baseAddress!) }
}

/// Restricts every thread of process `pid` to the given CPUs.
func pin(process pid: Int32, to cpus: [Int]) {
    for task in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? [] {
        if let tid = Int32(task) { pin(thread: tid, to: cpus) }
    }
}

/// CPU time a process has used so far, in microseconds, in user space and in the kernel.
struct CPUTime {
    var user = 0.0
    var system = 0.0
    static func - (a: CPUTime, b: CPUTime) -> CPUTime { CPUTime(user: a.user - b.user, system: a.system - b.system) }
    static func / (a: CPUTime, n: Double) -> CPUTime { CPUTime(user: a.user / n, system: a.system / n) }
}

func cpuTime(pid: Int32) -> CPUTime {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = text.lastIndex(of: ")") else { return CPUTime() }
    // Fields after the command name: state is field 3, utime 14, stime 15.
    let fields = text[text.index(after: close)...].split(separator: " ")
    let tick = 1e6 / Double(sysconf(Int32(_SC_CLK_TCK)))
    return CPUTime(user: (Double(fields[11]) ?? 0) * tick, system: (Double(fields[12]) ?? 0) * tick)
}

func rss(pid: Int32) -> Int {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
          let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return 0 }
    return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) * 1024
}

func spawn(_ path: String, _ arguments: [String], environment: [String: String] = [:]) throws -> (Process, Pipe) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = FileHandle.nullDevice
    try process.run()
    return (process, pipe)
}

func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return Int(UInt16(bigEndian: addr.sin_port))
}

func serve(root: String, port: Int) async throws {
    let catalog = try MatchCatalog(root: URL(fileURLWithPath: root))
    let server = try RPCServer(configuration: .init(port: port, idleTimeout: nil),
                               services: [MatchHandler(catalog: catalog, access: .open), AdminHandler(catalog: catalog, access: .open)])
    try await server.start()
    FileHandle.standardOutput.write(Data("ready \(server.localAddress!.port!)\n".utf8))
    await server.waitUntilClosed()
}

/// Starts the match server measured: the shipped binary, `roster
/// match-server`, built by the root package with its own compiler settings
/// (`serverPath`), or "self": the same library in this process's own binary.
/// Returns it and its port once it listens.
/// The tokens a server started with `MATCH_BENCH_TOKENS` set checks, as a
/// production one does: every call then carries `authorization: Bearer`.
let benchTokens = ProcessInfo.processInfo.environment["MATCH_BENCH_TOKENS"] != nil
    ? (client: "bench-client-token", admin: "bench-admin-token") : nil

/// The options of an admin call to the bench's server: its admin token, if it checks tokens.
var benchAdminOptions: CallOptions {
    CallOptions(metadata: benchTokens.map { ["authorization": "Bearer \($0.admin)"] } ?? [:])
}

func startRoster(_ serverPath: String, root: URL) throws -> (Process, Int) {
    let (roster, rosterPipe): (Process, Pipe)
    if serverPath == "self" {
        (roster, rosterPipe) = try spawn(CommandLine.arguments[0], ["serve", root.path, "0"])
    } else {
        guard FileManager.default.isExecutableFile(atPath: serverPath) else {
            fatalError("no roster binary at \(serverPath): run `swift build -c release --product roster` in the project root, or pass --server PATH")
        }
        let auth = benchTokens.map { ["ROSTER_CLIENT_TOKENS": $0.client, "ROSTER_ADMIN_TOKENS": $0.admin] }
        var arguments = auth == nil ? ["match-server", "--no-auth"] : ["match-server"]
        arguments += ["--plaintext", "--data", root.path, "--store", root.path, "--listen", "127.0.0.1:0", "--log-level", "error"]
        // MATCH_BENCH_SERVER_ARGS: more options for the server, e.g. "--scrub-rate 0".
        arguments += ProcessInfo.processInfo.environment["MATCH_BENCH_SERVER_ARGS"].map { $0.split(separator: " ").map(String.init) } ?? []
        (roster, rosterPipe) = try spawn(serverPath, arguments, environment: auth ?? [:])
    }
    var line = Data()
    while !line.contains(10) {
        let chunk = rosterPipe.fileHandleForReading.availableData
        if chunk.isEmpty { fatalError("the match server exited before it was ready") }
        line.append(chunk)
    }
    // "ready <port>" from `serve`, "match server listening on 127.0.0.1:<port>; ..." from roster.
    let text = String(decoding: line, as: UTF8.self)
    let portText = serverPath == "self"
        ? text.split(separator: " ")[1]
        : text.split(separator: ";")[0].split(separator: ":").last!
    return (roster, Int(portText.trimmingCharacters(in: .whitespacesAndNewlines))!)
}

/// Starts redis-server on a free port with nothing persisted; returns it,
/// its port and a connection for loading (the caller kills it: SIGKILL).
func startRedis(_ path: String) throws -> (Process, Int, Socket) {
    let port = freePort()
    // DEBUG (Redis 7+, from loopback only) lets `settleRedis` see when its
    // set's table has finished growing.
    let (redis, _) = try spawn(path, ["--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                      "--enable-debug-command", "local"])
    var socket: Socket?
    for _ in 0..<100 where socket == nil {
        socket = try? Socket(port: port)
        if socket == nil { usleep(50_000) }
    }
    guard let socket else { fatalError("redis-server did not start") }
    return (redis, port, socket)
}

/// Sends one RESP command and waits for its reply (for loading and INFO).
func redisCommand(_ socket: Socket, _ parts: [[UInt8]]) -> [UInt8] {
    var out = Array("*\(parts.count)\r\n".utf8)
    for p in parts { out += Array("$\(p.count)\r\n".utf8) + p + [13, 10] }
    socket.sendAll(out)
    var buffer = [UInt8]()
    while true {
        socket.receive(into: &buffer)
        if buffer.first == UInt8(ascii: "$"), let crlf = buffer.firstIndex(of: 10) {
            let n = Int(String(decoding: buffer[1..<(crlf - 1)], as: UTF8.self)) ?? 0
            if buffer.count >= crlf + 1 + n + 2 { return Array(buffer[(crlf + 1)..<(crlf + 1 + n)]) }
        } else if buffer.last == 10 {
            return buffer
        }
    }
}

/// Brings the set's hash table to the state a long-running Redis serves it in.
///
/// Redis grows a set's table by rehashing it incrementally: one bucket moves
/// per operation on that set (the server's timer rehashes only the
/// keyspace's own tables). Loading 10^7 keys leaves the set mid-rehash with
/// millions of buckets to go, and until they have moved every lookup probes
/// both tables and moves a bucket itself: about twice the CPU per
/// SISMEMBER. Unsettled, the rows timed first would measure that transient
/// (as this bench once did: its first row gave roster a ratio of 1.44x that
/// was about 1.0x in steady state), and `used_memory` would count both tables.
/// So every loaded key is asked once, each ask a rehash step, and more
/// until DEBUG HTSTATS-KEY shows no rehashing table.
func settleRedis(_ socket: Socket, key: [UInt8], members: [Key16]) {
    let wire = RedisWire(key: key)
    func ask(_ start: Int, _ count: Int) {
        let hashes = members[start..<(start + count)].flatMap(\.bytes)
        socket.sendAll(hashes.withUnsafeBytes { wire.request($0.baseAddress!, batch: count, id: 0) })
        var buffer = [UInt8]()
        while wire.reply(buffer, at: 0) == nil { socket.receive(into: &buffer) }
    }
    func rehashing() -> Bool {
        let stats = String(decoding: redisCommand(socket, [Array("DEBUG".utf8), Array("HTSTATS-KEY".utf8), key]), as: UTF8.self)
        precondition(stats.contains("Hash table 0"), "DEBUG HTSTATS-KEY failed: \(stats.prefix(200))")
        return stats.contains("rehashing")
    }
    var start = 0
    var batches = 0
    while true {
        let count = min(1000, members.count - start)
        ask(start, count)
        start = (start + count) % members.count
        batches += 1
        // A table's stats walk all of it: checked after the first pass, then every 100 batches.
        if batches * 1000 >= members.count && batches % 100 == 0 && !rehashing() { break }
        precondition(batches * 1000 <= 4 * members.count, "redis never finished rehashing its set")
    }
}

func redisUsedMemory(_ socket: Socket) -> Int {
    let info = String(decoding: redisCommand(socket, [Array("INFO".utf8), Array("memory".utf8)]), as: UTF8.self)
    let line = info.split(separator: "\r\n").first { $0.hasPrefix("used_memory:") } ?? "used_memory:0"
    return Int(line.split(separator: ":")[1]) ?? 0
}

func progress(_ text: String) {
    FileHandle.standardError.write(Data("[match-bench] \(text)\n".utf8))
}

func networkBench(keys n: Int, seconds: Double, roundCount: Int, openSeconds: Double, serverPath: String, redisPath: String) async throws {
    progress("generating \(n) keys")
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("match-bench-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: root.appendingPathComponent("segments"), withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: root) }
    var members = makeKeys(n, seed: 42)
    var unique = [Key16]()
    unique.reserveCapacity(n)
    for k in members where unique.last != k { unique.append(k) }
    members = []
    _ = try SegmentWriter.create(unique, count: unique.count, at: root.appendingPathComponent("segments/0.seg").path,
                                 advertiserID: "bench", version: 1)
    let probes = makeProbes(unique, count: 1_000_000, seed: 9)

    // Roster.
    progress("starting the match server")
    // The server measured is the shipped binary, `roster match-server`, built
    // by the root package with its own compiler settings (`--server PATH`;
    // `--server self` runs the same library in this process's own binary).
    let (roster, rosterPort) = try startRoster(serverPath, root: root)
    defer { kill(roster.processIdentifier, SIGKILL); roster.waitUntilExit() }
    let rssBefore = rss(pid: roster.processIdentifier)
    let client = RPCClient(host: "127.0.0.1", port: rosterPort)
    _ = try await MatchAdmin.Client(transport: client).publish(PublishRequest(advertiserID: "bench", version: 1, segments: [SegmentRef(path: "segments/0.seg")]), options: benchAdminOptions)
    await client.close()

    progress("published; starting redis-server")
    // Redis.
    let (redis, redisPort, admin) = try startRedis(redisPath)
    // SIGKILL, not SIGTERM: the child inherits a signal mask with SIGTERM
    // blocked from the spawning thread, and a left-over redis-server would
    // take CPU from every later run.
    defer { kill(redis.processIdentifier, SIGKILL); redis.waitUntilExit() }
    let memoryBefore = redisUsedMemory(admin)
    progress("loading redis")
    var i = 0
    while i < unique.count {
        let end = min(unique.count, i + 1000)
        _ = redisCommand(admin, [Array("SADD".utf8), Array("s".utf8)] + unique[i..<end].map(\.bytes))
        i = end
    }
    progress("letting redis finish growing its set")
    settleRedis(admin, key: Array("s".utf8), members: unique)
    let memoryAfter = redisUsedMemory(admin)

    progress("loaded; running")
    let rosterWire = RosterWire(advertiser: "bench")
    let redisWire = RedisWire()
    // Touch every page of the mapping once, as a long-running server would have.
    _ = closedLoop(wire: rosterWire, port: rosterPort, connections: 1, depth: 16, batch: 1000, probes: probes, seconds: 0.5)
    let rssAfter = rss(pid: roster.processIdentifier)

    print("Medians of \(roundCount) alternating rounds of \(Int(seconds)) s each.")
    print()
    print("| call | connections x depth | system | calls/s | keys/s | p50 µs | p99 µs | server CPU µs/call user + sys | keys/s ratio |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    let environment = ProcessInfo.processInfo.environment
    let only = environment["MATCH_BENCH_ONLY_MATCH"] != nil
    let openOnly = environment["MATCH_BENCH_ONLY_OPEN_LOOP"] != nil
    let standardRows = [("Match / SISMEMBER", 1, 1, 64), ("Match / SISMEMBER", 1, 4, 64),
                        ("MatchMany 100 / SMISMEMBER 100", 100, 1, 8), ("MatchMany 100 / SMISMEMBER 100", 100, 4, 8),
                        ("MatchMany 1000 / SMISMEMBER 1000", 1000, 1, 4), ("MatchMany 1000 / SMISMEMBER 1000", 1000, 4, 4)]
    let rows: [(String, Int, Int, Int)]
    if only {
        rows = [(environment["MATCH_BENCH_BATCH"].map { "MatchMany \($0)" } ?? "Match / SISMEMBER",
                 Int(environment["MATCH_BENCH_BATCH"] ?? "1") ?? 1,
                 Int(environment["MATCH_BENCH_CONNECTIONS"] ?? "1") ?? 1,
                 Int(environment["MATCH_BENCH_DEPTH"] ?? "64") ?? 64)]
    } else if let list = environment["MATCH_BENCH_ROWS"] {
        // Rows of the standard table by number (1-6), in the order given, repeats
        // allowed: e.g. "3,1,3" shows whether a row moves when another runs first.
        rows = list.split(separator: ",").compactMap { Int($0) }.filter { (1...standardRows.count).contains($0) }.map { standardRows[$0 - 1] }
    } else {
        rows = openOnly ? [] : standardRows
    }
    for (name, batch, connections, depth) in rows {
        // Rounds alternate the two systems so a burst of noise on this shared
        // machine hits both; the ratio is the median of the per-round ratios.
        // Server CPU per call counts the 0.5 s warm-up's calls' share for both.
        var rounds: [(ours: LoadResult, theirs: LoadResult, ourCPU: CPUTime, theirCPU: CPUTime)] = []
        for _ in 0..<roundCount {
            let rosterCPU0 = cpuTime(pid: roster.processIdentifier)
            let ours = closedLoop(wire: rosterWire, port: rosterPort, connections: connections, depth: depth, batch: batch, probes: probes, seconds: seconds)
            let ourCPU = (cpuTime(pid: roster.processIdentifier) - rosterCPU0) / (Double(ours.requests) * (1 + 0.5 / seconds))
            let redisCPU0 = cpuTime(pid: redis.processIdentifier)
            let theirs = closedLoop(wire: redisWire, port: redisPort, connections: connections, depth: depth, batch: batch, probes: probes, seconds: seconds)
            let theirCPU = (cpuTime(pid: redis.processIdentifier) - redisCPU0) / (Double(theirs.requests) * (1 + 0.5 / seconds))
            rounds.append((ours, theirs, ourCPU, theirCPU))
        }
        func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
        let ratio = median(rounds.map { Double($0.ours.keys) / Double(max(1, $0.theirs.keys)) })
        for system in ["roster", "redis"] {
            let results = rounds.map { system == "roster" ? $0.ours : $0.theirs }
            let cpu = rounds.map { system == "roster" ? $0.ourCPU : $0.theirCPU }
            print(String(format: "| %@ | %d x %d | %@ | %.0f | %.0f | %.0f | %.0f | %.2f + %.2f | %@ |", name, connections, depth, system,
                         median(results.map { Double($0.requests) / $0.seconds }), median(results.map { Double($0.keys) / $0.seconds }),
                         median(results.map { $0.p(0.5) }), median(results.map { $0.p(0.99) }),
                         median(cpu.map(\.user)), median(cpu.map(\.system)),
                         system == "roster" ? String(format: "%.2fx", ratio) : ""))
        }
    }
    if only || environment["MATCH_BENCH_ROWS"] != nil { return }
    print()
    // One-second windows as well as the whole run: on this shared machine a
    // single stall of the host decides the whole run's p99 for both systems.
    print("| open loop, Match at 10,000 calls/s for \(Int(openSeconds)) s, in alternating rounds | p50 µs | p99 µs | p99.9 µs | max µs | p99 of 1-s windows: median / best / worst µs |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    // On two cores the spinning sender gets one core to itself; the server
    // and the thread reading its replies share the other (a reply reader on
    // the sender's core would wait for the scheduler to preempt a spinning
    // thread, and that wait would be counted as the server's latency).
    let systems: [(name: String, wire: Wire, port: Int, pid: Int32)] = [
        ("roster", rosterWire, rosterPort, roster.processIdentifier), ("redis", redisWire, redisPort, redis.processIdentifier)]
    let results = alternatingOpenLoops(systems.map { ($0.wire, $0.port, $0.pid) }, rate: 10_000, probes: probes, seconds: openSeconds)
    for (system, r) in zip(systems, results) {
        let w = r.windowP99
        print(String(format: "| %@ | %.0f | %.0f | %.0f | %.0f | %.0f / %.0f / %.0f |", system.name, r.p(0.5), r.p(0.99), r.p(0.999),
                     Double(r.latencies.last ?? 0) / 1000, w[w.count / 2], w.first!, w.last!))
    }
    print()
    let ours = Double(rssAfter - rssBefore) / Double(unique.count)
    let redisPerKey = Double(memoryAfter - memoryBefore) / Double(unique.count)
    print("| memory for \(unique.count) keys | bytes/key |")
    print("| --- | ---: |")
    print(String(format: "| roster (server RSS growth, segments mapped and touched) | %.1f |", ours))
    print(String(format: "| redis (used_memory growth) | %.1f |", redisPerKey))
    print(String(format: "| ratio roster / redis | %.2f |", ours / redisPerKey))
}

// MARK: - Main

let args = Array(CommandLine.arguments.dropFirst())
func option(_ name: String) -> String? {
    guard let i = args.firstIndex(of: name), i + 1 < args.count else { return nil }
    return args[i + 1]
}
switch args.first {
case "serve":
    try await serve(root: args[1], port: Int(args[2]) ?? 0)
case "lookup":
    let sizes = (option("--keys") ?? "1000000,10000000").split(separator: ",").compactMap { Int($0) }
    try await lookupBench(sizes: sizes)
case "network":
    try await networkBench(keys: Int(option("--keys") ?? "10000000") ?? 10_000_000,
                           seconds: Double(option("--seconds") ?? "2") ?? 2,
                           roundCount: Int(option("--rounds") ?? "5") ?? 5,
                           openSeconds: max(1, Double(option("--open-seconds") ?? "10") ?? 10),
                           serverPath: option("--server") ?? "../../.build/release/roster",
                           redisPath: option("--redis") ?? "/usr/bin/redis-server")
case "advertisers":
    try await advertisersBench(advertiserCount: Int(option("--advertisers") ?? "200") ?? 200,
                               keysPerList: Int(option("--keys-per-list") ?? "50000") ?? 50_000,
                               seconds: Double(option("--seconds") ?? "2") ?? 2,
                               roundCount: Int(option("--rounds") ?? "3") ?? 3,
                               rate: Int(option("--rate") ?? "10000") ?? 10_000,
                               openSeconds: max(1, Double(option("--open-seconds") ?? "5") ?? 5),
                               serverPath: option("--server") ?? "../../.build/release/roster",
                               redisPath: option("--redis") ?? "/usr/bin/redis-server")
default:
    FileHandle.standardError.write(Data("usage: match-bench lookup [--keys N,M] | network [--keys N] [--seconds S] [--rounds R] [--open-seconds S] [--server PATH|self] [--redis PATH] | advertisers [--advertisers N] [--keys-per-list K] [--rate R]\n".utf8))
    exit(2)
}
