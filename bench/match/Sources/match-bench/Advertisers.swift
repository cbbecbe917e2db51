// match-bench advertisers: one user asked of many advertisers' lists.
//
// A recommender holding one user and candidate offers from N merchants asks
// whether the user is on each merchant's list. Three ways, side by side on
// the same lists and users:
//   - Roster MatchAdvertisers: one call of N advertiser ids;
//   - Roster Match: N calls, pipelined on one connection;
//   - Redis: N SISMEMBER commands (one set per advertiser), pipelined.
// Closed loop (throughput in advertiser checks per second), then open loop:
// MatchAdvertisers at a fixed rate, latency from the intended send time.

#if canImport(Glibc)
import Glibc
#endif
import Foundation
import MatchServer
import RosterAPI
import RosterRPC
import RosterTransport
import SegmentStore

/// One "call" is a user's question of every advertiser, in one of the three shapes.
struct AdvertisersWire: Wire {
    enum Shape { case matchAdvertisers, matchCalls, redis }
    let shape: Shape
    let advertisers: [String]

    func preface() -> [UInt8] { shape == .redis ? [] : RosterWire(advertiser: "").preface() }

    static func frame(method: UInt32, id: UInt32, message: [UInt8]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(20 + message.count)
        out += withUnsafeBytes(of: UInt32(10 + message.count).bigEndian, Array.init) + [0x01, 0] + withUnsafeBytes(of: id.bigEndian, Array.init)
        out += withUnsafeBytes(of: method.bigEndian, Array.init) + [0, 0, 0, 0, 0, 0]
        return out + message
    }

    func request(_ probes: UnsafeRawPointer, batch: Int, id: UInt32) -> [UInt8] {
        let hash = Data(bytes: probes, count: 16)
        switch shape {
        case .matchAdvertisers:
            let message = MatchAdvertisersRequest(hash: hash, advertiserIDs: advertisers).serializedBytes()
            return Self.frame(method: MatchService.Method.matchAdvertisers.id, id: id, message: message)
        case .matchCalls:
            var out = [UInt8]()
            for (k, advertiser) in advertisers.enumerated() {
                let message = MatchRequest(advertiserID: advertiser, hash: hash).serializedBytes()
                out += Self.frame(method: MatchService.Method.match.id, id: id &* UInt32(advertisers.count) &+ UInt32(k), message: message)
            }
            return out
        case .redis:
            var out = [UInt8]()
            for advertiser in advertisers {
                out += Array("*3\r\n$9\r\nSISMEMBER\r\n$\(advertiser.utf8.count)\r\n\(advertiser)\r\n$16\r\n".utf8)
                out += UnsafeRawBufferPointer(start: probes, count: 16)
                out += [13, 10]
            }
            return out
        }
    }

    /// The whole answer of one user's question: one reply, or N.
    func reply(_ b: [UInt8], at o: Int) -> (length: Int, hits: Int)? {
        switch shape {
        case .matchAdvertisers:
            return RosterWire(advertiser: "").reply(b, at: o)
        case .matchCalls:
            var at = o
            for _ in advertisers {
                guard let (length, _) = RosterWire(advertiser: "").reply(b, at: at) else { return nil }
                at += length
            }
            return (at - o, 0)
        case .redis:
            var at = o, hits = 0
            for _ in advertisers {
                guard let (length, h) = RedisWire().reply(b, at: at) else { return nil }
                at += length
                hits += h
            }
            return (at - o, hits)
        }
    }
}

func advertisersBench(advertiserCount: Int, keysPerList: Int, seconds: Double, roundCount: Int, rate: Int, openSeconds: Double,
                      serverPath: String, redisPath: String) async throws {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("match-bench-adv-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: root.appendingPathComponent("segments"), withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: root) }
    // Users: each is on about a third of the lists; the rest of each list is other people.
    var rng = SplitMix64(seed: 77)
    let users = (0..<20_000).map { _ in Key16(hi: rng.next(), lo: rng.next()) }
    let advertisers = (0..<advertiserCount).map { "adv\($0)" }
    progress("writing \(advertiserCount) lists of \(keysPerList) keys")
    var lists: [[Key16]] = []
    for (a, advertiser) in advertisers.enumerated() {
        var keys = users.enumerated().filter { ($0.offset + a) % 3 == 0 }.map(\.element)
        while keys.count < keysPerList { keys.append(Key16(hi: rng.next(), lo: rng.next())) }
        keys.sort()
        var unique = [Key16]()
        unique.reserveCapacity(keys.count)
        for k in keys where unique.last != k { unique.append(k) }
        _ = try SegmentWriter.create(unique, count: unique.count, at: root.appendingPathComponent("segments/\(advertiser).seg").path,
                                     advertiserID: advertiser, version: 1)
        lists.append(unique)
    }
    // Half the users asked are strangers to every list.
    var probes = [UInt8]()
    for i in 0..<100_000 {
        probes += i % 2 == 0 ? users[Int(rng.next() % UInt64(users.count))].bytes : Key16(hi: rng.next(), lo: rng.next()).bytes
    }

    precondition(benchTokens == nil, "MATCH_BENCH_TOKENS is for `match-bench network` only")
    progress("starting the match server")
    let (roster, rosterPort) = try startRoster(serverPath, root: root)
    defer { kill(roster.processIdentifier, SIGKILL); roster.waitUntilExit() }
    let client = RPCClient(host: "127.0.0.1", port: rosterPort)
    let publications = advertisers.map { PublishRequest(advertiserID: $0, version: 1, segments: [SegmentRef(path: "segments/\($0).seg")]) }
    _ = try await MatchAdmin.Client(transport: client).publishMany(PublishManyRequest(publications: publications))
    await client.close()

    progress("starting redis-server and loading \(advertiserCount) sets")
    let (redis, redisPort, admin) = try startRedis(redisPath)
    defer { kill(redis.processIdentifier, SIGKILL); redis.waitUntilExit() }
    for (advertiser, keys) in zip(advertisers, lists) {
        var i = 0
        while i < keys.count {
            let end = min(keys.count, i + 1000)
            _ = redisCommand(admin, [Array("SADD".utf8), Array(advertiser.utf8)] + keys[i..<end].map(\.bytes))
            i = end
        }
        settleRedis(admin, key: Array(advertiser.utf8), members: keys)
    }
    lists = []

    let shapes: [(String, Wire, Int, Int32, Int)] = [
        ("MatchAdvertisers (1 call)", AdvertisersWire(shape: .matchAdvertisers, advertisers: advertisers), rosterPort, roster.processIdentifier, 8),
        ("Match (\(advertiserCount) calls, pipelined)", AdvertisersWire(shape: .matchCalls, advertisers: advertisers), rosterPort, roster.processIdentifier, 1),
        ("Redis SISMEMBER (\(advertiserCount), pipelined)", AdvertisersWire(shape: .redis, advertisers: advertisers), redisPort, redis.processIdentifier, 1),
    ]
    // Warm both servers' pages.
    for (_, wire, port, _, depth) in shapes { _ = closedLoop(wire: wire, port: port, connections: 1, depth: depth, batch: 1, probes: probes, seconds: 0.3) }

    print("One user asked of \(advertiserCount) advertisers' lists (\(keysPerList) keys each). Medians of \(roundCount) alternating rounds of \(Int(seconds)) s; 1 connection; a call is one user's whole question.")
    print()
    print("| shape | users in flight | users/s | advertiser checks/s | p50 µs | p99 µs | server CPU µs/user | checks/s vs Redis |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    var rounds: [[(LoadResult, CPUTime)]] = Array(repeating: [], count: shapes.count)
    for _ in 0..<roundCount {
        for (s, (_, wire, port, pid, depth)) in shapes.enumerated() {
            let cpu0 = cpuTime(pid: pid)
            let result = closedLoop(wire: wire, port: port, connections: 1, depth: depth, batch: 1, probes: probes, seconds: seconds)
            let cpu = (cpuTime(pid: pid) - cpu0) / (Double(result.requests) * (1 + 0.5 / seconds))
            rounds[s].append((result, cpu))
        }
    }
    func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
    let redisRate = (0..<roundCount).map { Double(rounds[2][$0].0.requests) / rounds[2][$0].0.seconds }
    for (s, (name, _, _, _, depth)) in shapes.enumerated() {
        let rates = rounds[s].map { Double($0.0.requests) / $0.0.seconds }
        let ratio = median((0..<roundCount).map { rates[$0] / max(1, redisRate[$0]) })
        let cpu = rounds[s].map(\.1)
        print(String(format: "| %@ | %d | %.0f | %.0f | %.0f | %.0f | %.1f + %.1f | %.2fx |", name, depth, median(rates),
                     median(rates) * Double(advertiserCount), median(rounds[s].map { $0.0.p(0.5) }), median(rounds[s].map { $0.0.p(0.99) }),
                     median(cpu.map(\.user)), median(cpu.map(\.system)), ratio))
    }
    print()
    print("| open loop, one user's question at \(rate) users/s for \(Int(openSeconds)) s, in alternating rounds | p50 µs | p99 µs | p99.9 µs | max µs | p99 of 1-s windows: median / worst µs |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    let open = shapes.filter { $0.0.hasPrefix("MatchAdvertisers") || $0.0.hasPrefix("Redis") }
    let results = alternatingOpenLoops(open.map { ($0.1, $0.2, $0.3) }, rate: rate, probes: probes, seconds: openSeconds)
    for ((name, _, _, _, _), r) in zip(open, results) {
        let w = r.windowP99
        print(String(format: "| %@ | %.0f | %.0f | %.0f | %.0f | %.0f / %.0f |", name, r.p(0.5), r.p(0.99), r.p(0.999),
                     Double(r.latencies.last ?? 0) / 1000, w.isEmpty ? .nan : w[w.count / 2], w.last ?? .nan))
    }
}
