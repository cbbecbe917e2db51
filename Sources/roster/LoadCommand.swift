import ArgumentParser
import Foundation
import LoadHarness
import RosterAPI
import RosterClient
import Synchronization

struct LoadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "load",
        abstract: "Open-loop load on the match server at a fixed rate, with latency percentiles.",
        discussion: """
            Calls are sent on a fixed schedule (--rate per second) whatever the server
            does, and each latency is measured from the call's intended send time, so
            queueing is never hidden (no coordinated omission). A line of stats is printed
            every second, then a report.

            --rate takes one rate (held for --duration) or a staircase
            FROM:TO:step=BY/HOLD, which holds each rate for HOLD: 1000:20000:step=1000/5s
            runs 1,000 calls/s for 5 s, 2,000 for 5 s, ... up to 20,000. Sending stops
            when the schedule ends; replies are awaited at most --grace, and calls still
            unanswered then count as DEADLINE_EXCEEDED. --warmup sends at the first rate
            for a while before the run, and counts none of it. A staircase ends with a
            table of its steps.

            Exit status: 0 after a run, whether it held the rate or not (the report says
            which); 1 when an answer was wrong (--verify), or on another error.

            Examples:
              roster load --advertiser acme --rate 10000 --duration 30s
              roster load --advertiser acme --rate 10000:100000:step=10000/5s
              roster load --advertiser acme --rate 50000 --total 1000000
              roster load --advertiser acme --rate 2000 --batch 100 \\
                --hashes members.txt --hit-ratio 0.3
              roster load --advertiser acme --rate 10000 --json --hgrm latency.hgrm
              roster load --advertiser acme --rate 10000:100000:step=10000/5s \\
                --html report.html --csv seconds.csv
              roster load --advertiser @advertisers.txt --rate 10000
                (calls spread over every advertiser in the file)
              roster load --call IngestAdmin.ListFiles --data '{"limit": 10}' --rate 500
              roster load --call MatchService.Match --data-file reqs.jsonl --rate 20000
              roster load --call IngestAdmin.Status --data '{}' --rate 50 -H x-id:load1
              roster load --advertiser acme --rate 20000 --warmup 5s --duration 30s
            """)

    @OptionGroup var client: ClientOptions

    @OptionGroup var metadata: MetadataOptions

    @Option(help: "The advertiser to query; several, comma-separated, or @FILE (one per line): calls go to each in turn.")
    var advertiser: String?

    @Option(help: ArgumentHelp("Load any RPC (Service.Method, as `roster call --list` names them) instead of Match/MatchMany.",
                               discussion: "Coordinator methods go to the (first) --coordinator, the others to --match."))
    var call: String?

    @Option(help: "With --call: the request as JSON (protobuf's JSON mapping; bytes fields in base64).")
    var data: String?

    @Option(help: "With --call: a file of requests, one JSON object per line, sent in turn.")
    var dataFile: String?

    @Option(help: "Calls per second, or a staircase FROM:TO:step=BY/HOLD (1000:20000:step=1000/5s).")
    var rate: String = "1000"

    @Option(help: "How long to run a constant --rate (30s, 500ms, 2m).")
    var duration: DurationArgument = DurationArgument(argument: "10s")!

    @Option(help: "Send this many calls in all (at a constant --rate), instead of running for --duration.")
    var total: Int?

    @Option(help: "Send at the first rate for this long before the run (5s); none of it is counted (0: no warm-up).")
    var warmup: DurationArgument = DurationArgument(argument: "0")!

    @Option(help: "How long to wait for replies once sending has stopped (calls unanswered then are DEADLINE_EXCEEDED).")
    var grace: DurationArgument = DurationArgument(argument: "2s")!

    @Option(help: "TCP connections to the match server.")
    var connections: Int = 4

    @Option(help: "Most calls in flight at once; a call waits for a free slot (and that wait counts).")
    var concurrency: Int = 512

    @Option(help: "Hashes per call: 1 sends Match, more sends MatchMany.")
    var batch: Int = 1

    @Option(help: "A file of member hashes (one per line) to draw hits from.")
    var hashes: String?

    @Option(help: "Fraction of queried hashes drawn from --hashes, the rest random (default 0.5; needs --hashes).")
    var hitRatio: Double?

    @Flag(help: "Load a tier: each call goes to a match server holding the advertiser, from the placement of --coordinator, failing over between them.")
    var tier = false

    @Flag(help: "Check every answer: hashes drawn from --hashes must match, random ones must not; wrong answers are counted.")
    var verify = false

    @Option(help: "With --tier: also ask the next holder when one has not answered within this (100ms); off by default (docs/SERVING.md).")
    var hedge: DurationArgument?

    @Flag(help: "Print the report as JSON.")
    var json = false

    @Option(help: "Write the latency percentile distribution (.hgrm, milliseconds) to this file.")
    var hgrm: String?

    @Option(help: "Write one row per second (asked and achieved calls/s, errors, p50, p99, in flight, sender lag) to this CSV file.")
    var csv: String?

    @Option(help: "Write a self-contained HTML page with the latency-by-percentile and calls/s-and-p99-over-time plots to this file.")
    var html: String?

    /// The schedule --rate, --duration and --total describe.
    func schedule() throws -> RateSchedule {
        var schedule: RateSchedule
        do {
            schedule = try RateSchedule(parsing: rate, duration: duration.duration)
        } catch {
            throw ValidationError("--rate: \(error)")
        }
        if let total {
            guard total > 0 else { throw ValidationError("--total must be at least 1") }
            guard schedule.steps.count == 1 else { throw ValidationError("--total goes with one --rate, not a staircase") }
            schedule = RateSchedule(rate: schedule.steps[0].rate, duration: .nanoseconds(Int64((Double(total) / schedule.steps[0].rate * 1e9).rounded(.up))))
        }
        return schedule
    }

    func validate() throws {
        let schedule = try schedule()
        if tier && schedule.steps.count > 1 { throw ValidationError("--tier takes one --rate, not a staircase") }
        guard (1...256).contains(connections) else { throw ValidationError("--connections must be between 1 and 256") }
        guard (1...100_000).contains(concurrency) else { throw ValidationError("--concurrency must be between 1 and 100,000") }
        guard (1...100_000).contains(batch) else { throw ValidationError("--batch must be between 1 and 100,000") }
        if let hitRatio {
            guard (0...1).contains(hitRatio) else { throw ValidationError("--hit-ratio must be between 0 and 1") }
            guard hashes != nil else { throw ValidationError("--hit-ratio needs --hashes: the members to draw hits from") }
        }
        if verify && hashes == nil { throw ValidationError("--verify needs --hashes: the members every advertiser's list holds") }
        if call == nil {
            guard advertiser != nil else { throw ValidationError("name the --advertiser to query, or an RPC to --call") }
            if data != nil || dataFile != nil { throw ValidationError("--data and --data-file go with --call") }
        } else {
            if (data == nil) == (dataFile == nil) { throw ValidationError("--call needs its request: --data '{...}' or --data-file FILE") }
            if tier || verify || hashes != nil || batch != 1 {
                throw ValidationError("--call sends the requests given as they are: --tier, --verify, --hashes and --batch do not apply")
            }
        }
    }

    /// The advertisers named by --advertiser.
    func advertisers() throws -> [String] {
        let names: [String]
        guard let advertiser else { return [] }
        if advertiser.hasPrefix("@") {
            let path = String(advertiser.dropFirst())
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw CLIError("cannot read \(path)") }
            names = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
        } else {
            names = advertiser.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        }
        let advertisers = names.filter { !$0.isEmpty }
        guard !advertisers.isEmpty else { throw CLIError("--advertiser names no advertiser") }
        return advertisers
    }

    /// Every report file this run writes, each made (empty) now: a path that
    /// cannot be written fails before the run, not after it.
    func prepareReportFiles() throws {
        for path in [hgrm, csv, html].compactMap({ $0 }) {
            guard FileManager.default.createFile(atPath: path, contents: nil) else {
                let folder = (path as NSString).deletingLastPathComponent
                let reason = FileManager.default.fileExists(atPath: folder.isEmpty ? "." : folder) ? "permission denied, or a folder of that name" : "no folder \(folder)"
                throw CLIError("cannot write \(path): \(reason)")
            }
        }
    }

    func write(_ text: String, to path: String?) throws {
        guard let path else { return }
        do { try text.write(toFile: path, atomically: true, encoding: .utf8) } catch {
            throw CLIError("cannot write \(path): \(error.localizedDescription)")
        }
    }

    func run() async throws {
        try prepareReportFiles()
        if let call { return try await runCall(call) }
        let advertisers = try self.advertisers()
        let members: [Data] = try hashes.map { path -> [Data] in
            let (packed, type) = try readHashFile(path, skipInvalid: true, limit: 1_000_000)
            // Misses are drawn as random 16-byte keys, and batches packed 16 bytes a hash.
            guard type == .md5 else { throw CLIError("\(path) holds SHA-256 hashes; roster load asks MD5 lists only") }
            let width = type.byteCount
            return stride(from: 0, to: packed.count, by: width).map { Data(packed[(packed.startIndex + $0)..<(packed.startIndex + $0 + width)]) }
        } ?? []
        let keyPool = KeyPool(members: members, hitRatio: members.isEmpty ? 0 : hitRatio ?? 0.5, size: 65_536)
        let memberSet = verify ? Set(members.map { Data($0) }) : []
        let schedule = try self.schedule()
        let report: LoadReport
        if tier {
            report = try await runTier(schedule: schedule, advertisers: advertisers, keyPool: keyPool, memberSet: memberSet)
        } else {
            // Checked before the run, through the client library: the server is there and knows every advertiser.
            let tls = try client.clientTLS()
            try await withRPCClient(client.match, tls: tls, connections: 1) { rpc in
                let stub = MatchService.Client(transport: rpc)
                let options = metadata.applied(to: client.matchOptions())
                // Fail fast, with one line, if the server is not there or an advertiser is unknown.
                for advertiser in advertisers {
                    do {
                        _ = try await stub.match(MatchRequest(advertiserID: advertiser, hash: keyPool.hash(0)), options: options)
                    } catch let error as RPCError where error.code == .notFound {
                        throw CLIError("advertiser '\(advertiser)' has no list on the match server at \(client.match): \(error.message)", status: error.code)
                    } catch let error as RPCError {
                        let what = error.code == .unavailable ? "cannot reach the match server at \(client.match)" : "the match server at \(client.match) refused a check call"
                        throw CLIError("\(what) for advertiser \(advertiser): \(error)", status: error.code)
                    }
                }
                return ()
            }
            report = try await runOpenLoop(schedule: schedule, advertisers: advertisers, keyPool: keyPool, memberSet: memberSet, tls: tls)
        }
        try finish(report, title: "roster load: \(advertiser ?? "") at \(client.match), \(schedule)" + (batch > 1 ? ", MatchMany ×\(batch)" : ", Match"),
                   keys: true, steps: schedule.steps.count > 1)
    }

    /// The schedule of the warm-up: the first step's rate for --warmup; nil without one.
    func warmupSchedule(_ schedule: RateSchedule) -> RateSchedule? {
        guard warmup.duration > .zero, let first = schedule.steps.first else { return nil }
        return RateSchedule(steps: [RateSchedule.Step(rate: first.rate, duration: warmup.duration)])
    }

    func announceWarmup(_ schedule: RateSchedule) {
        guard !json else { return }
        print(String(format: "warm-up: %.0f calls/s for %.1f s, not counted", schedule.meanRate, schedule.duration.seconds))
        flushOutput()
    }

    /// `--tier`: a task per call through the tier's router, every answer
    /// checked with --verify.
    func runTier(schedule: RateSchedule, advertisers: [String], keyPool: KeyPool, memberSet: Set<Data>) async throws -> LoadReport {
        let verifying = verify
        /// Whether `matched` is right for key `hash` (a random key is taken
        /// as a stranger: one in 2^128 is a member).
        @Sendable func check(_ hash: Data, _ matched: Bool) throws {
            if verifying && matched != memberSet.contains(hash) {
                throw WrongAnswer("\(hash.map { String(format: "%02x", $0) }.joined()) answered \(matched)")
            }
        }
        @Sendable func checkMany(_ request: MatchManyRequest, _ response: MatchManyResponse) throws {
            guard verifying else { return }
            for i in 0..<Int(response.count) {
                try check(request.hashes.subdata(in: (request.hashes.startIndex + i * 16)..<(request.hashes.startIndex + i * 16 + 16)), response.isMatched(i))
            }
        }
        let batchSize = self.batch
        let requests = (0..<256).map { n in
            MatchManyRequest(advertiserID: advertisers[0], hashes: keyPool.batch(n * batchSize, count: batchSize))
        }
        let onTick = liveLine
        let tally = KeyTally()
        let warmupSchedule = self.warmupSchedule(schedule)
        return try await withTierClient(client, hedgeAfter: hedge?.duration) { router in
            for advertiser in advertisers {
                _ = try await userFacing("cannot reach the tier through \(client.coordinator) for advertiser \(advertiser)") {
                    try await router.match(advertiser: advertiser, hash: keyPool.hash(0))
                }
            }
            @Sendable func call(_ i: Int, counted: Bool) async throws {
                let advertiserID = advertisers[i % advertisers.count]
                if batchSize == 1 {
                    let hash = keyPool.hash(i)
                    let matched = try await router.match(advertiser: advertiserID, hash: hash).matched
                    if counted { tally.add(hits: matched ? 1 : 0, of: 1) }
                    try check(hash, matched)
                } else {
                    let request = requests[i & 255]
                    let response = try await router.matchMany(advertiser: advertiserID, hashes: request.hashes)
                    if counted { tally.add(hits: Int(response.matchedCount), of: Int(response.count)) }
                    try checkMany(request, response)
                }
            }
            if let warmupSchedule {
                announceWarmup(warmupSchedule)
                _ = await LoadGenerator(configuration: .init(rate: warmupSchedule.steps[0].rate, duration: warmupSchedule.duration,
                                                             concurrency: concurrency, keysPerCall: batchSize)).run { try await call($0, counted: false) }
            }
            let generator = LoadGenerator(configuration: .init(rate: schedule.steps[0].rate, duration: schedule.duration,
                                                               concurrency: concurrency, keysPerCall: batchSize))
            var report = await generator.run(onTick: onTick) { try await call($0, counted: true) }
            (report.hits, report.misses) = tally.counts
            return report
        }
    }

    /// `--call`: any RPC, its requests from JSON through the schema's registry,
    /// checked (each decodes, and the first is answered) before the run.
    func runCall(_ name: String) async throws {
        let method = try CallCommand.find(name)
        var texts: [String]
        if let data {
            texts = [data]
        } else {
            let path = dataFile!
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw CLIError("cannot read \(path)") }
            texts = text.split(whereSeparator: \.isNewline).map(String.init).filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
            guard !texts.isEmpty else { throw CLIError("\(path) holds no request") }
        }
        let (endpoints, routed) = client.route(method.descriptor.service)
        let options = metadata.applied(to: routed)
        let endpoint = endpoints.all[0]
        var requests: [OpenLoopEngine.Request] = []
        var first: JSONValue?
        for (i, text) in texts.enumerated() {
            func encode<Request: ProtoJSONMessage>(_ type: Request.Type, _ json: JSONValue) throws -> OpenLoopEngine.Request {
                OpenLoopEngine.Request(method: method.descriptor, message: try Request(json: json), metadata: options.metadata, timeout: options.timeout)
            }
            do {
                let json = try JSONValue(parsing: text)
                requests.append(try encode(method.requestType, json))
                if first == nil { first = json }
            } catch {
                throw CLIError("bad request for \(method.shortName)\(texts.count > 1 ? " on line \(i + 1)" : ""): \(error)")
            }
        }
        let tls = try client.clientTLS()
        try await withRPCClient(endpoint, tls: tls) { rpc in
            _ = try await userFacing("\(method.shortName) fails at \(endpoint) before the run") {
                try await method.call(first!, on: rpc, options: options)
            }
        }
        let schedule = try self.schedule()
        func engine(_ schedule: RateSchedule) -> OpenLoopEngine {
            OpenLoopEngine(configuration: .init(
                host: endpoint.host, port: endpoint.port, tls: tls, schedule: schedule, connections: connections, maxInFlight: concurrency,
                grace: grace.duration))
        }
        if let warmupSchedule = self.warmupSchedule(schedule) {
            announceWarmup(warmupSchedule)
            _ = try await userFacing("cannot load \(endpoint)") { try await engine(warmupSchedule).run(requests: requests) }
        }
        let report = try await userFacing("cannot load \(endpoint)") {
            try await engine(schedule).run(requests: requests, onTick: liveLine)
        }
        try finish(report, title: "roster load: \(method.shortName) at \(endpoint), \(schedule)", keys: false, steps: schedule.steps.count > 1)
    }

    /// The live line, once a second (not with --json).
    var liveLine: @Sendable (LoadGenerator.Tick) -> Void {
        let quiet = json
        return { tick in
            guard !quiet else { return }
            print(String(format: "%3ds  %7d calls/s  p50 %7.2f ms  p99 %7.2f ms  in flight %5d  errors %d  sender lag %.1f ms%@",
                         tick.second, tick.calls, tick.p50.ms, tick.p99.ms, tick.inFlight, tick.errors, tick.lag.ms,
                         tick.lag > .milliseconds(100) ? "  (behind schedule)" : ""))
            flushOutput()
        }
    }

    /// The report: the files asked for, then the summary (or JSON), then
    /// the verdict: a wrong answer fails the run (exit 1). `keys`: the calls
    /// were Match or MatchMany (keys per second, hits, wrong answers mean
    /// something); `steps`: a staircase, whose steps get a table.
    func finish(_ report: LoadReport, title: String, keys: Bool, steps: Bool) throws {
        try write(report.hgrm, to: hgrm)
        try write(report.csv, to: csv)
        try write(report.html(title: title), to: html)
        print(json ? Self.json(report, batch: batch, keys: keys, steps: steps) : Self.text(report, batch: batch, keys: keys, steps: steps))
        if let shortfall = report.shortfall, !json { print("NOTE: \(shortfall)") }
        if report.wrongAnswers > 0 {
            throw CLIError("\(report.wrongAnswers) of \(report.ok) answers were wrong: the served lists differ from --hashes")
        }
    }

    /// A staircase's steps from the run's seconds: per asked rate, the
    /// calls/s achieved, the worst second's p99, errors, and the sender's
    /// worst lag.
    static func stepRows(_ r: LoadReport) -> [(asked: Double, achieved: Double, p99: Duration, errors: Int, lag: Duration)] {
        var rows: [(asked: Double, achieved: Double, p99: Duration, errors: Int, lag: Duration)] = []
        var seconds: [Int] = []
        for tick in r.timeline {
            if let last = rows.last, abs(last.asked - tick.asked) < 0.5 {
                rows[rows.count - 1].p99 = max(last.p99, tick.p99)
                rows[rows.count - 1].errors += tick.errors
                rows[rows.count - 1].lag = max(last.lag, tick.lag)
                rows[rows.count - 1].achieved += Double(tick.calls)
                seconds[seconds.count - 1] += 1
            } else {
                rows.append((tick.asked, Double(tick.calls), tick.p99, tick.errors, tick.lag))
                seconds.append(1)
            }
        }
        for i in rows.indices { rows[i].achieved /= Double(seconds[i]) }
        return rows
    }

    /// The run itself, on the open-loop engine: every request encoded once,
    /// each reply read for its keys' answers (and checked with --verify).
    func runOpenLoop(schedule: RateSchedule, advertisers: [String], keyPool: KeyPool, memberSet: Set<Data>,
                     tls: ClientTLS?) async throws -> LoadReport {
        let options = metadata.applied(to: client.matchOptions())
        let count = max(4096, advertisers.count)
        var payloads: [OpenLoopEngine.Request] = []
        var expected: [[Bool]] = []
        for j in 0..<count {
            let advertiserID = advertisers[j % advertisers.count]
            if batch == 1 {
                let hash = keyPool.hash(j)
                payloads.append(OpenLoopEngine.Request(method: MatchService.Method.match, message: MatchRequest(advertiserID: advertiserID, hash: hash),
                                                              metadata: options.metadata, timeout: options.timeout))
                expected.append([memberSet.contains(hash)])
            } else {
                let hashes = keyPool.batch(j * batch, count: batch)
                payloads.append(OpenLoopEngine.Request(method: MatchService.Method.matchMany,
                                                              message: MatchManyRequest(advertiserID: advertiserID, hashes: hashes),
                                                              metadata: options.metadata, timeout: options.timeout))
                expected.append(verify ? (0..<batch).map { memberSet.contains(hashes.subdata(in: (hashes.startIndex + $0 * 16)..<(hashes.startIndex + $0 * 16 + 16))) } : [])
            }
        }
        let (single, verifying, table) = (batch == 1, verify, expected)
        let inspect: OpenLoopEngine.Inspect = { request, message in
            var hits = 0, wrong = false
            if single {
                let matched = (try? MatchResponse(decoding: message))?.matched ?? false
                hits = matched ? 1 : 0
                wrong = verifying && matched != table[request][0]
                return .init(hits: hits, misses: 1 - hits, wrong: wrong)
            }
            guard let response = try? MatchManyResponse(decoding: message) else {
                return .init(hits: 0, misses: 0, wrong: verifying)
            }
            let n = Int(response.count)
            for i in 0..<n {
                let matched = response.isMatched(i)
                if matched { hits += 1 }
                if verifying, i < table[request].count, matched != table[request][i] { wrong = true }
            }
            return .init(hits: hits, misses: n - hits, wrong: wrong)
        }
        func engine(_ schedule: RateSchedule) -> OpenLoopEngine {
            OpenLoopEngine(configuration: .init(
                host: client.match.host, port: client.match.port, tls: tls, schedule: schedule, connections: connections,
                maxInFlight: concurrency, grace: grace.duration, keysPerCall: batch))
        }
        if let warmupSchedule = self.warmupSchedule(schedule) {
            announceWarmup(warmupSchedule)
            _ = try await userFacing("cannot load the match server at \(client.match)") {
                try await engine(warmupSchedule).run(requests: payloads, inspect: inspect)
            }
        }
        return try await userFacing("cannot load the match server at \(client.match)") {
            try await engine(schedule).run(requests: payloads, inspect: inspect, onTick: liveLine)
        }
    }

    static func text(_ r: LoadReport, batch: Int, keys: Bool = true, steps: Bool = false) -> String {
        var lines = [
            String(format: "asked %.0f calls/s for %.1f s; achieved %.0f calls/s%@, %d calls in %.1f s",
                   r.asked, r.duration.seconds, r.callsPerSecond, keys ? String(format: " (%.0f keys/s)", r.keysPerSecond) : "", r.calls, r.elapsed.seconds),
            String(format: "latency from intended send time: p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms",
                   r.percentile(50).ms, r.percentile(90).ms, r.percentile(99).ms, r.percentile(99.9).ms, r.max.ms),
        ]
        lines.append("statuses: " + (["OK \(r.ok)"] + r.errors.sorted { $0.value > $1.value }.map { "\($0.key) \($0.value)" })
            .joined(separator: ", ") + (r.errors.isEmpty ? " (no errors)" : ""))
        if let window = r.errorWindow {
            lines.append(String(format: "failed calls ended between %.3f s and %.3f s: a window of %.1f ms",
                                window.first.seconds, window.last.seconds, (window.last - window.first).ms))
        }
        if r.hits + r.misses > 0 {
            lines.append("keys matched: \(r.hits)  not matched: \(r.misses)")
        }
        if r.unsent > 0 {
            lines.append("unsent: \(r.unsent) calls the harness could not send before the schedule ended")
        }
        if let cpu = r.harnessMicrosecondsPerCall, let total = r.harnessCPU {
            lines.append(String(format: "harness CPU: %.2f µs per call, %.0f%% of one core", cpu, 100 * total.seconds / max(0.001, r.elapsed.seconds)))
        }
        if keys { lines.append("wrong answers: \(r.wrongAnswers)") }
        if steps {
            lines.append("STEP  ASKED/s    ACHIEVED/s  WORST p99 ms  ERRORS  SENDER LAG ms")
            for (i, row) in stepRows(r).enumerated() {
                lines.append(String(format: "%-5d %-10.0f %-11.0f %-13.3f %-7d %.1f", i + 1, row.asked, row.achieved, row.p99.ms, row.errors, row.lag.ms))
            }
        }
        return lines.joined(separator: "\n")
    }

    static func json(_ r: LoadReport, batch: Int, keys: Bool = true, steps: Bool = false) -> String {
        let keyFields: Set<String> = ["keysPerSecond", "wrongAnswers", "hits", "misses", "batch"]
        let stepsValue = JSONValue.array(stepRows(r).map { row in
            .object([("askedCallsPerSecond", .number(String(format: "%.1f", row.asked))),
                     ("callsPerSecond", .number(String(format: "%.1f", row.achieved))),
                     ("worstP99Ms", .number(String(format: "%.3f", row.p99.ms))),
                     ("errors", .number(String(row.errors))),
                     ("maxSenderLagMs", .number(String(format: "%.3f", row.lag.ms)))])
        })
        let fields: [(String, JSONValue)] = [
            ("askedCallsPerSecond", .number(String(format: "%.1f", r.asked))),
            ("durationSeconds", .number(String(format: "%.3f", r.elapsed.seconds))),
            ("calls", .number(String(r.calls))),
            ("batch", .number(String(batch))),
            ("callsPerSecond", .number(String(format: "%.1f", r.callsPerSecond))),
            ("keysPerSecond", .number(String(format: "%.1f", r.keysPerSecond))),
            ("latencyMs", .object([50, 90, 99, 99.9].map { p in (String(format: "p%g", p), .number(String(format: "%.3f", r.percentile(p).ms))) }
                + [("max", .number(String(format: "%.3f", r.max.ms)))])),
            ("ok", .number(String(r.ok))),
            ("errors", .object(r.errors.sorted { $0.key.rawValue < $1.key.rawValue }.map { ("\($0.key)", .number(String($0.value))) })),
            ("heldRate", .bool(r.heldRate)),
            ("maxSenderLagMs", .number(String(format: "%.3f", r.maxLag.ms))),
            ("wrongAnswers", .number(String(r.wrongAnswers))),
            ("hits", .number(String(r.hits))),
            ("misses", .number(String(r.misses))),
            ("sent", .number(String(r.sent))),
            ("unsent", .number(String(r.unsent))),
            ("harnessCpuMicrosPerCall", r.harnessMicrosecondsPerCall.map { .number(String(format: "%.3f", $0)) } ?? .null),
            ("errorWindowMs", r.errorWindow.map { .number(String(format: "%.3f", ($0.last - $0.first).ms)) } ?? .null),
            ("inFlightCapWaits", .number(String(r.inFlightCapWaits))),
        ]
        let value = JSONValue.object(fields.filter { keys || !keyFields.contains($0.0) } + (steps ? [("steps", stepsValue)] : []))
        return value.serialized(pretty: true)
    }
}

/// Keys matched and not, counted by the calls of a `--tier` run.
final class KeyTally: Sendable {
    private let state = Mutex((hits: 0, misses: 0))

    func add(hits: Int, of keys: Int) { state.withLock { $0.hits += hits; $0.misses += keys - hits } }
    var counts: (Int, Int) { state.withLock { ($0.hits, $0.misses) } }
}

/// Precomputed keys to query: a mix of known members and random hashes.
struct KeyPool: Sendable {
    let keys: [Data]

    init(members: [Data], hitRatio: Double, size: Int) {
        var rng = SystemRandomNumberGenerator()
        keys = (0..<size).map { _ in
            if !members.isEmpty, Double.random(in: 0..<1, using: &rng) < hitRatio {
                return members[Int.random(in: 0..<members.count, using: &rng)]
            }
            return Data((0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) })
        }
    }

    func hash(_ i: Int) -> Data { keys[i % keys.count] }

    func batch(_ start: Int, count: Int) -> Data {
        var out = Data(capacity: count * 16)
        for i in 0..<count { out.append(keys[(start + i) % keys.count]) }
        return out
    }
}

