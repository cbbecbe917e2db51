import ArgumentParser
import IngestCoordinator
import Foundation
import HashParsing
import HexDigits
import RosterAPI
import RosterClient

extension ClientOptions {
    func adminOptions() -> CallOptions { callOptions.bearer(adminToken) }
    func operatorOptions() -> CallOptions { callOptions.bearer(operatorToken) }
    func matchOptions() -> CallOptions { callOptions.bearer(token) }

    /// Where a call to `service` goes, with the token its audience holds:
    /// the coordinator's IngestAdmin with --operator-token, its Tier and
    /// TaskQueue with --token (an application's client token reads
    /// placement; a worker passes its worker token); the match server's
    /// MatchAdmin with --admin-token and MatchService with --token.
    func route(_ service: String) -> (endpoints: Endpoints, options: CallOptions) {
        switch service {
        case IngestAdmin.name: (coordinator, operatorOptions())
        case Tier.name, TaskQueue.name: (coordinator, matchOptions())
        case MatchAdmin.name: (Endpoints([match]), adminOptions())
        default: (Endpoints([match]), matchOptions())
        }
    }
}

/// Runs `body` with a client for `endpoint`, and closes the client after it,
/// whether `body` returns or throws.
func withRPCClient<T>(_ endpoint: Endpoint, tls: ClientTLS?, connections: Int = 1, _ body: (RPCClient) async throws -> T) async throws -> T {
    let rpc = RPCClient(host: endpoint.host, port: endpoint.port, configuration: .init(connections: connections, tls: tls))
    do {
        let result = try await body(rpc)
        await rpc.close()
        return result
    } catch {
        await rpc.close()
        throw error
    }
}

/// Runs `body` with a transport to the coordinators at `endpoints`, which
/// follows the leader; closes the connections after.
func withCoordinator<T>(_ endpoints: Endpoints, tls: ClientTLS?, _ body: (FailoverTransport<RPCClient>) async throws -> T) async throws -> T {
    let transport = FailoverTransport(endpoints.all.map { RPCClient(host: $0.host, port: $0.port, configuration: .init(tls: tls)) },
                                      failover: [.unavailable, .deadlineExceeded])
    do {
        let result = try await body(transport)
        for rpc in transport.transports { await rpc.close() }
        return result
    } catch {
        for rpc in transport.transports { await rpc.close() }
        throw error
    }
}

/// Runs `body` with a router to the tier the coordinators of `client`
/// place lists on; closes its connections after.
func withTierClient<T>(_ client: ClientOptions, hedgeAfter: Duration? = nil,
                       _ body: (TierRouter<RPCClient, FailoverTransport<RPCClient>>) async throws -> T) async throws -> T {
    let tier = TierClient(coordinators: client.coordinator.all.map { ($0.host, $0.port) }, token: client.token,
                          // 0 is no deadline; the router splits its deadline over holders, so "none" is a day.
                          timeout: client.timeout ?? .seconds(86_400),
                          hedgeAfter: hedgeAfter, tls: try client.clientTLS())
    do {
        let result = try await body(tier.router)
        await tier.close()
        return result
    } catch {
        await tier.close()
        throw error
    }
}

struct SubmitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "submit",
        abstract: "Queue a lake file for ingest now (without waiting for the next scan).",
        discussion: """
            The path is the file's place in the lake: <advertiser-id>/<file>.

            Examples:
              roster submit acme/members-2026-11.txt
              roster submit acme/members.txt --wait
            """)

    @OptionGroup var client: CoordinatorClientOptions

    @Argument(help: "The file's path in the lake: <advertiser-id>/<file>.")
    var path: String

    @Flag(help: "Wait until the file is live (or fails), showing progress.")
    var wait = false

    func run() async throws {
        try await client.withAdmin(submit)
    }

    private func submit(_ coordinator: IngestAdmin.Client<FailoverTransport<RPCClient>>) async throws {
        var request = SubmitFileRequest()
        request.path = path
        let response = try await userFacing("cannot submit \(path)") {
            try await coordinator.submitFile(request, options: client.operatorOptions())
        }
        print(response.queued
              ? "queued \(path) as version \(response.version) of \(response.advertiserID)"
              : "\(path) is already known as version \(response.version) (\(StatusFormat.state(response.state)))")
        guard wait else { return }
        let final = try await StatusFormat.watch(coordinator: coordinator, options: client.operatorOptions(), only: response.version)
        if let final, final.state != .live {
            throw CLIError("version \(final.version) ended \(StatusFormat.state(final.state)): \(final.error)")
        }
    }
}

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show files being ingested and recent ones: state, blocks, bytes, rate, ETA, invalid lines.",
        discussion: """
            Examples:
              roster status
              roster status --watch
              roster status --json
              roster status --advertiser acme   (acme's versions, newest first)
            """)

    @OptionGroup var client: CoordinatorClientOptions

    @Flag(help: "Redraw progress every second until every file has finished; waits for work to appear first (see --wait-for-work).")
    var watch = false

    @Option(help: "With --watch and nothing in flight: seconds to wait for a file to appear (the lake is scanned every few seconds) before showing the table and exiting.")
    var waitForWork: Double = 15

    @Flag(help: "Print the StatusResponse as JSON.")
    var json = false

    @Option(help: "One advertiser's versions instead, newest first, with their states, keys and errors: its history.")
    var advertiser: String?

    @Option(help: "With --advertiser: show at most this many versions (1 to 1,000).")
    var limit: Int = 20

    func validate() throws {
        guard (1...1_000).contains(limit) else { throw ValidationError("--limit must be between 1 and 1,000") }
        if advertiser != nil && watch { throw ValidationError("--advertiser shows a history; --watch follows files in flight: one or the other") }
    }

    func run() async throws {
        try await client.withAdmin(show)
    }

    private func show(_ coordinator: IngestAdmin.Client<FailoverTransport<RPCClient>>) async throws {
        if let advertiser {
            let request = ListFilesRequest(advertiserID: advertiser, limit: UInt32(limit))
            let page = try await userFacing("cannot list the versions of \(advertiser)") {
                try await coordinator.listFiles(request, options: client.operatorOptions())
            }
            if json { return print(page.jsonText(includeDefaults: true)) }
            guard !page.files.isEmpty else { throw CLIError("no versions of advertiser '\(advertiser)'", status: .notFound) }
            print("ID      PATH                      STATE       PROGRESS")
            print(page.files.map(StatusFormat.line).joined(separator: "\n"))
            if page.nextBeforeVersion != 0 { print("(the newest \(page.files.count); --limit shows more)") }
            return
        }
        if watch {
            _ = try await StatusFormat.watch(coordinator: coordinator, options: client.operatorOptions(), only: nil,
                                             waitForWork: .milliseconds(Int64(max(0, waitForWork) * 1000)))
            // Everything has finished: the final table.
            let status = try await userFacing("cannot get the status") {
                try await coordinator.status(StatusRequest(), options: client.operatorOptions())
            }
            print("\n" + StatusFormat.table(status))
            return
        }
        let status = try await userFacing("cannot get the status") {
            try await coordinator.status(StatusRequest(), options: client.operatorOptions())
        }
        if json {
            print(status.jsonText(includeDefaults: true))
        } else {
            print(StatusFormat.table(status))
        }
    }
}

enum StatusFormat {
    static func state(_ state: FileState) -> String { state.name }

    static func bytes(_ n: Double) -> String {
        let units = ["B", "KB", "MB", "GB", "TB"]
        var value = n
        var unit = 0
        while value >= 1000 && unit < units.count - 1 {
            value /= 1000
            unit += 1
        }
        return unit == 0 ? "\(Int(value)) B" : String(format: "%.1f %@", value, units[unit])
    }

    static func bar(_ fraction: Double, width: Int = 20) -> String {
        let filled = Int((max(0, min(1, fraction)) * Double(width)).rounded())
        return "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "]"
    }

    static func line(_ file: FileStatus) -> String {
        // While merging, the bar follows the merges (every block is parsed by then).
        let done = file.state == .merging && file.mergesTotal > 0 ? Double(file.mergesDone) / Double(file.mergesTotal)
            : file.blocksTotal == 0 ? 0 : Double(file.blocksDone) / Double(file.blocksTotal)
        var parts = [
            String(format: "%-6llu", file.version),
            file.path.padding(toLength: max(24, file.path.count), withPad: " ", startingAt: 0),
            state(file.state).padding(toLength: 10, withPad: " ", startingAt: 0),
            bar(file.state == .live ? 1 : done),
            "\(file.blocksDone)/\(file.blocksTotal) blocks",
            "\(bytes(Double(file.bytesDone)))/\(bytes(Double(file.size)))",
        ]
        if file.bytesPerSecond > 0 { parts.append("\(bytes(file.bytesPerSecond))/s") }
        if file.etaSeconds > 0 { parts.append(String(format: "ETA %.0fs", file.etaSeconds)) }
        if file.state == .merging { parts.append("merges \(file.mergesDone)/\(file.mergesTotal)") }
        if file.state == .live || file.state == .held {
            // The type only when it is not the common one: most lists are MD5.
            // A delta's count is estimated on its base (docs/INGEST.md).
            parts.append("\(file.kind == .delta ? "~" : "")\(file.distinctKeys)\(file.hashType == .sha256 ? " SHA-256" : "") keys")
        }
        // What a version is when it is not a whole list, and what it went on.
        switch file.kind {
        case .delta: parts.append(file.baseVersion > 0 ? "delta on \(file.baseVersion)" : file.state == .live || file.state == .retired ? "delta on no list" : "delta")
        case .compaction: parts.append("compaction of \(file.baseVersion)")
        default: break
        }
        if file.invalidLines > 0 {
            let kinds = file.invalidByKind.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            let lines = file.invalidSamples.prefix(5).map { "\($0.line)" }.joined(separator: ",")
            parts.append("invalid \(file.invalidLines) (\(kinds); lines \(lines))")
        }
        if !file.error.isEmpty { parts.append("— \(file.error)") }
        return parts.joined(separator: "  ")
    }

    static func table(_ status: StatusResponse) -> String {
        var out = "\(status.advertisersLive) advertisers live, \(status.workersSeen) workers, "
            + "\(status.tasksQueued) tasks queued, \(status.tasksLeased) leased\n"
        for problem in status.problems { out += "PROBLEM: \(problem)\n" }
        if !status.nodes.isEmpty {
            out += "NODE          ADDRESS                 WEIGHT  HEALTH  LISTS  BYTES       SEEN\n"
            for node in status.nodes {
                out += node.nodeID.padding(toLength: max(13, node.nodeID.count), withPad: " ", startingAt: 0) + " "
                    + node.address.padding(toLength: max(23, node.address.count), withPad: " ", startingAt: 0) + " "
                    + String(format: "%-7.2f ", node.weight) + (node.healthy ? "ok      " : "DOWN    ")
                    + String(node.advertisers).padding(toLength: 6, withPad: " ", startingAt: 0) + " "
                    + bytes(Double(node.bytesServed)).padding(toLength: 11, withPad: " ", startingAt: 0) + " "
                    + String(format: "%.1f s ago", Double(node.lastSeenMsAgo) / 1000) + "\n"
            }
        }
        let shown = status.files.filter { !finished.contains($0.state) }.count
        if status.filesInFlight > UInt32(shown) {
            let counts = [FileState.queued, .parsing, .merging, .publishing].compactMap { state in
                status.filesByState[state.name].map { "\($0) \(state.name)" }
            }.joined(separator: ", ")
            out += "\(status.filesInFlight) files in flight (\(counts)); the oldest \(shown) below\n"
        }
        if status.files.isEmpty { return out + "no files yet" }
        out += "ID      PATH                      STATE       PROGRESS\n"
        out += status.files.map(line).joined(separator: "\n")
        return out
    }

    /// States a watch stops at: ended, or held by the shrink guard (an operator's turn).
    static let finished: [FileState] = [.live, .held, .failed, .rejected, .superseded, .retired]

    /// Redraws progress each second until the watched files finish; returns
    /// the last status of `only`. Watching everything (`only` nil) with
    /// nothing in flight waits up to `waitForWork` for a file to appear: a
    /// file just dropped into the lake is not known before the next scan.
    /// A version newer than any the first poll saw counts as work even if it
    /// was never seen in flight: a small file goes from unknown to live
    /// between two polls.
    static func watch(coordinator: IngestAdmin.Client<FailoverTransport<RPCClient>>, options: CallOptions, only: UInt64?,
                      waitForWork: Duration = .zero) async throws -> FileStatus? {
        let tty = isatty(STDOUT_FILENO) != 0
        let clock = ContinuousClock()
        let giveUp = clock.now + waitForWork
        var drawn = 0
        var sawWork = false
        var newestAtStart: UInt64?
        while true {
            let status = try await userFacing("cannot get the status") { try await coordinator.status(StatusRequest(), options: options) }
            let files = only.map { id in status.files.filter { $0.version == id } } ?? status.files
            let active = files.filter { !finished.contains($0.state) }
            let newest = status.files.map(\.version).max() ?? 0
            sawWork = sawWork || !active.isEmpty || newestAtStart.map { newest > $0 } == true
            if newestAtStart == nil { newestAtStart = newest }
            let waiting = only == nil && !sawWork && clock.now < giveUp
            var text = waiting ? "waiting for a file to ingest (the lake is scanned every few seconds; Ctrl-C to stop)"
                : files.isEmpty ? "no files" : files.map(line).joined(separator: "\n")
            if tty { text = fit(text, columns: terminalColumns()) }
            if tty && drawn > 0 { print("\u{1B}[\(drawn)A\u{1B}[J", terminator: "") }
            if tty || !waiting || drawn == 0 { print(text) }
            flushOutput()
            drawn = text.split(separator: "\n", omittingEmptySubsequences: false).count
            if active.isEmpty && !waiting && (only == nil || !files.isEmpty) { return files.first }
            if only != nil && files.isEmpty {
                throw CLIError("version \(only!) is no longer listed")
            }
            try await Task.sleep(for: .seconds(1))
        }
    }

    /// The terminal's width (80 when it cannot be told).
    static func terminalColumns() -> Int {
        var size = winsize()
        guard ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 else { return 80 }
        return Int(size.ws_col)
    }

    /// Cuts every line to fit `columns` (ending a cut line with "…"), so that
    /// no line wraps and the redraw (which moves up one row per line) stays true.
    static func fit(_ text: String, columns: Int) -> String {
        let width = max(20, columns - 1)
        return text.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            line.count <= width ? String(line) : String(line.prefix(width - 1)) + "…"
        }.joined(separator: "\n")
    }
}

struct MatchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "match",
        abstract: "Ask whether hashes or emails are members of an advertiser's list.",
        discussion: """
            Examples:
              roster match --advertiser acme --hash 0cc175b9c0f1b6a831c399e269772661
              roster match --advertiser acme --email " Ann@Example.com "
                  (trimmed, lowercased, hashed with the list's type: MD5, or SHA-256)
              roster match --advertiser acme --file hashes.txt
                  (one MatchMany call per 10,000)
              roster match --advertisers acme,globex,initech --email ann@example.com
                  (one hash, many lists: MatchAdvertisers; @file: one id a line)
            Exit status: 0 when every key asked about is a member, 3 when some are not, 1
            on error.
            """)

    @OptionGroup var client: ClientOptions

    @Option(help: "The advertiser id.")
    var advertiser: String?

    @Option(help: "Many advertiser ids for one --hash or --email (MatchAdvertisers): comma-separated, or @file with one a line.")
    var advertisers: String?

    @Option(help: "A hash of the list's type: an MD5 (32 hex digits) or a SHA-256 (64).")
    var hash: String?

    @Option(help: "An email address; trimmed, lowercased and hashed here with the list's type (MD5 or SHA-256).")
    var email: String?

    @Option(help: "A file of hashes (MD5 or SHA-256, one type), one per line, asked with MatchMany.")
    var file: String?

    @Flag(help: "Print JSON.")
    var json = false

    @Flag(help: "Ask the tier: find the match servers holding the list from the coordinator's placement (--coordinator), failing over between them.")
    var tier = false

    func validate() throws {
        guard [hash, email, file].compactMap({ $0 }).count == 1 else {
            throw ValidationError("give exactly one of --hash, --email or --file")
        }
        guard (advertiser == nil) != (advertisers == nil) else {
            throw ValidationError("give exactly one of --advertiser or --advertisers")
        }
        if advertisers != nil {
            guard file == nil else { throw ValidationError("--advertisers asks about one --hash or --email, not a --file") }
        }
        if let hash, MemberHash(hex: hash) == nil {
            if hash.count == 32 || hash.count == 64, let bad = hash.firstIndex(where: { !$0.isHexDigit }) {
                throw ValidationError("--hash must be hex digits: '\(hash[bad])' at position \(hash.distance(from: hash.startIndex, to: bad) + 1) is not one")
            }
            throw ValidationError("--hash must be 32 hex digits (an MD5) or 64 (a SHA-256), got \(hash.count) characters")
        }
        if let email {
            let trimmed = email.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !trimmed.isEmpty else { throw ValidationError("--email is empty") }
            guard !trimmed.contains(where: \.isWhitespace) else {
                throw ValidationError("--email '\(trimmed)' has a space inside it: an address has none (spaces around it are trimmed)")
            }
        }
    }

    func run() async throws {
        if let advertisers { return try await askMany(advertisers) }
        let advertiser = self.advertiser ?? ""
        if tier {
            return try await withTierClient(client) { router in
                try await ask(one: { try await router.match(advertiser: advertiser, hash: $0.bytes) },
                              many: { packed, type in
                                  try await Membership.ask(packed: packed, width: type.byteCount) {
                                      try await router.matchMany(advertiser: advertiser, hashes: $0, type: type)
                                  }
                              })
            }
        }
        // The library users get: its streaming `membership` for a file.
        let roster = MatchClient(host: client.match.host, port: client.match.port, token: client.token,
                                 timeout: client.timeout, tls: try client.clientTLS())
        do {
            try await ask(one: { try await roster.stub.match(MatchRequest(advertiserID: advertiser, hash: $0.bytes), options: roster.options) },
                          many: { try await roster.membership(advertiser: advertiser, packed: $0, type: $1) })
            await roster.close()
        } catch {
            await roster.close()
            throw error
        }
    }

    /// One line per hash (or a JSON array), written as bytes in large chunks:
    /// a million answers print in well under a second.
    static func write(packed: Data, width: Int, answers: Membership, json: Bool) throws {
        var out: [UInt8] = []
        out.reserveCapacity(1 << 20)
        let member = Array("\tmember\n".utf8), notMember = Array("\tnot a member\n".utf8)
        let jsonTrue = Array("\", \"matched\": true}".utf8), jsonFalse = Array("\", \"matched\": false}".utf8)
        if json { out.append(contentsOf: "[\n".utf8) }
        packed.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) in
            for i in 0..<answers.count {
                if json { out.append(contentsOf: i == 0 ? "  {\"hash\": \"".utf8 : ",\n  {\"hash\": \"".utf8) }
                HexDigits.appendLowercase(UnsafeRawBufferPointer(rebasing: bytes[(i * width)..<(i * width + width)]), to: &out)
                if json {
                    out.append(contentsOf: answers[i] ? jsonTrue : jsonFalse)
                } else {
                    out.append(contentsOf: answers[i] ? member : notMember)
                }
                if out.count >= 1 << 20 {
                    writeStandardOutput(Data(out))
                    out.removeAll(keepingCapacity: true)
                }
            }
        }
        if json { out.append(contentsOf: "\n]\n".utf8) }
        writeStandardOutput(Data(out))
    }

    /// One hash against many advertisers: a line each, in the order given.
    private func askMany(_ list: String) async throws {
        let ids: [String]
        if list.hasPrefix("@") {
            guard let text = FileManager.default.contents(atPath: String(list.dropFirst())) else { throw CLIError("cannot read \(list.dropFirst())") }
            ids = String(decoding: text, as: UTF8.self).split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        } else {
            ids = list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        }
        guard !ids.isEmpty else { throw CLIError("--advertisers names no advertiser") }
        let key = hash.flatMap { MemberHash(hex: $0) } ?? MemberHash(email: email ?? "")
        // An email is sent hashed both ways: each list is asked with its own type.
        let other = email.map { MemberHash(email: $0, type: .sha256) }
        let answers: [Bool?]
        if tier {
            // Split by placement, the groups asked in parallel, failing over per advertiser.
            answers = try await withTierClient(client) { router in
                try await userFacing("match failed") {
                    try await router.matchAdvertisers(hash: key.bytes, otherHash: other?.bytes ?? Data(), advertisers: ids)
                }
            }
        } else {
            let roster = MatchClient(host: client.match.host, port: client.match.port, token: client.token,
                                     timeout: client.timeout, tls: try client.clientTLS())
            do {
                answers = try await userFacing("match failed") { try await roster.matchAdvertisers(hash: key, otherHash: other, advertisers: ids) }
                await roster.close()
            } catch {
                await roster.close()
                throw error
            }
        }
        if json {
            let rows = zip(ids, answers).map { id, answer in
                "  {\"advertiser\": \(JSONValue.string(id).serialized()), \"matched\": \(answer.map { "\($0)" } ?? "null")}"
            }
            print("[\n" + rows.joined(separator: ",\n") + "\n]")
        } else {
            for (id, answer) in zip(ids, answers) {
                print("\(id)\t\(answer.map { $0 ? "member" : "not a member" } ?? (hash != nil ? "no list of this hash type" : "no list"))")
            }
            let members = answers.filter { $0 == true }.count
            FileHandle.standardError.write(Data("\(key.hex) is a member of \(members) of \(ids.count) advertisers\n".utf8))
        }
        if answers.contains(where: { $0 != true }) { throw ExitCode(3) }
    }

    private func ask(one: (MemberHash) async throws -> MatchResponse, many: (Data, HashType) async throws -> Membership) async throws {
        let advertiser = self.advertiser ?? ""
        if let file {
            let (packed, type) = try readHashFile(file)
            let answers = try await userFacing("match failed") { try await many(packed, type) }
            try Self.write(packed: packed, width: type.byteCount, answers: answers, json: json)
            // On standard error: standard output holds the answers alone (TSV or JSON).
            if !json { FileHandle.standardError.write(Data("\(answers.members) of \(answers.count) are members of \(advertiser)\n".utf8)) }
            if answers.members < answers.count { throw ExitCode(3) }
            return
        }
        var key = hash.flatMap { MemberHash(hex: $0) } ?? MemberHash(email: email ?? "")
        let response: MatchResponse
        if let email {
            // The list's type is the server's to know: MD5 first; a list of
            // SHA-256 answers INVALID_ARGUMENT (the only error a 16-byte hash
            // of a served list can get), and the same address is asked as SHA-256.
            do {
                response = try await one(key)
            } catch let error as RPCError where error.code == .invalidArgument {
                key = MemberHash(email: email, type: .sha256)
                response = try await userFacing("match failed") { try await one(key) }
            } catch {
                response = try await userFacing("match failed") { throw error }
            }
        } else {
            response = try await userFacing("match failed") { try await one(key) }
        }
        if json {
            print("{\"hash\": \"\(key.hex)\", \"matched\": \(response.matched), \"version\": \"\(response.version)\"}")
        } else {
            print("\(key.hex) is \(response.matched ? "a member" : "not a member") of \(advertiser) (version \(response.version))")
        }
        if !response.matched { throw ExitCode(3) }
    }
}

/// Reads a file of hashes, one per line, by ingest's rules (`LineParser`):
/// one type per file, MD5 or SHA-256, found as ingest finds it
/// (`HashSniffer`); blank lines are skipped, and so is a first line that is
/// a header (`email_md5`), so a list file from the lake can be asked about
/// as it is. Any other line is an error naming it, or, with `skipInvalid`,
/// is left out. At most `limit` hashes are read. The hashes come packed,
/// whole (16 or 32 bytes each): no allocation per hash.
func readHashFile(_ path: String, skipInvalid: Bool = false, limit: Int = .max) throws -> (Data, HashType) {
    guard let data = FileManager.default.contents(atPath: path) else { throw CLIError("cannot read \(path)") }
    let kind = data.withUnsafeBytes { HashSniffer.detect(head: UnsafeRawBufferPointer(rebasing: $0.prefix(HashSniffer.headBytes)),
                                                         isWholeFile: $0.count <= HashSniffer.headBytes) }
    var out = Data(capacity: min(limit, data.count / kind.hexDigits + 1) * kind.byteCount)
    var count = 0
    var bad: (line: Int, kind: InvalidLineKind)?
    data.withUnsafeBytes { (file: UnsafeRawBufferPointer) in
        var lineStart = 0, lineNumber = 0
        while lineStart < file.count, count < limit {
            lineNumber += 1
            let rest = UnsafeRawBufferPointer(rebasing: file[lineStart...])
            let length = rest.firstIndex(of: UInt8(ascii: "\n")) ?? rest.count
            let line = UnsafeRawBufferPointer(rebasing: rest[..<length])
            lineStart += length + 1
            switch LineParser.parse(line, isFirstLineOfFile: lineNumber == 1, hashKind: kind) {
            case .key(let key):
                if kind == .md5 {
                    withUnsafeBytes(of: (key.hi.bigEndian, key.lo.bigEndian)) { out.append(contentsOf: $0) }
                } else {
                    // Whole, as callers send it: a key is a SHA-256's first 16 bytes only.
                    let bom = lineNumber == 1 && line.starts(with: [0xEF, 0xBB, 0xBF])
                    guard let hash = MemberHash(hexUTF8: bom ? UnsafeRawBufferPointer(rebasing: line[3...]) : line) else { continue }
                    out.append(hash.bytes)
                }
                count += 1
            case .skipped:
                continue
            case .invalid(let kind):
                if !skipInvalid {
                    bad = (lineNumber, kind)
                    return
                }
            }
        }
    }
    if let bad {
        let what = switch bad.kind {
        case .wrongHashType: "not a hash of the file's type, \(kind) (one type per file)"
        case .unhashedEmail: "an email, not its hash (use --email for one address)"
        case .malformed: "not a \(kind.hexDigits)-hex-digit hash"
        }
        throw CLIError("\(path):\(bad.line): \(what)")
    }
    guard count > 0 else { throw CLIError("\(path) holds no MD5 or SHA-256 hashes") }
    return (out, HashType(rawValue: kind.wireValue))
}

struct CallCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "call",
        abstract: "Call any RPC with a JSON request; prints the JSON response (defaults shown).",
        discussion: """
            JSON follows the protobuf mapping: lowerCamelCase field names (schema names
            work too), 64-bit integers as strings, bytes as base64, enums by name.
            MatchService calls go to --match with --token; MatchAdmin to --match with
            --admin-token; IngestAdmin to --coordinator with --operator-token; Tier and
            TaskQueue to --coordinator with --token.

            Examples:
              roster call --list
              roster call --describe IngestAdmin.SubmitFile   (its messages, expanded)
              roster call --describe FileStatus                  (a message by name)
              roster call IngestAdmin.SubmitFile '{"path": "acme/members.txt"}'
              roster call MatchService.Match \\
                '{"advertiserId": "acme", "hash": "DMF1ucDxtqgxw5niaXcmYQ=="}'
              roster call IngestAdmin.ListFiles @request.json   (@-: standard input)
              roster call -H x-request-id:42 IngestAdmin.Status  (metadata, repeatable)
            """)

    @OptionGroup var client: ClientOptions

    @Flag(help: "List every RPC.")
    var list = false

    @Option(help: "Print an RPC's request and response messages (Service.Method), or a message or enum by name, with the messages and enums they use.")
    var describe: String?

    @OptionGroup var metadata: MetadataOptions

    @Argument(help: "Service.Method, e.g. IngestAdmin.Status.")
    var method: String?

    @Argument(help: "The request as JSON (default {}); @file reads it from a file, @- (or -) from standard input.")
    var request: String?


    /// A message of the schema by name (`FileStatus` or `roster.v1.FileStatus`).
    static func message(named name: String) -> (any ProtoJSONMessage.Type)? {
        RosterSchema.messages.first { $0.protoName == name || $0.protoName.split(separator: ".").last.map(String.init) == name }
    }

    /// An enum of the schema by name (`FileState`).
    static func enumDefinition(named name: String) -> String? {
        RosterSchema.enums.first { $0.schemaDefinition.split(separator: "\n").contains { $0 == "enum \(name) {" } }?.schemaDefinition
    }

    /// `type`'s definition, then those of the messages and enums its fields use, each once.
    static func definitions(_ type: any ProtoJSONMessage.Type, seen: inout Set<String>) -> [String] {
        guard seen.insert(type.protoName).inserted else { return [] }
        var out = [type.schemaDefinition]
        for line in type.schemaDefinition.split(separator: "\n") {
            let code = line.trimmingCharacters(in: .whitespaces)
            guard !code.hasPrefix("//"), code.hasSuffix(";"), code.contains("=") else { continue }
            // "repeated T name = n;", "T name = n;", "map<K, T> name = n;"
            var words = code.replacingOccurrences(of: "map<", with: "").replacingOccurrences(of: ">", with: "")
                .replacingOccurrences(of: ",", with: " ").split(separator: " ").map(String.init)
            if words.first == "repeated" { words.removeFirst() }
            for word in words.prefix(2) {
                if let nested = message(named: word) {
                    out += definitions(nested, seen: &seen)
                } else if let definition = enumDefinition(named: word), seen.insert("enum " + word).inserted {
                    out.append(definition)
                }
            }
        }
        return out
    }

    static func find(_ name: String) throws -> MethodDescription {
        if let method = RosterSchema.methods.first(where: { $0.shortName == name || "\($0.descriptor.service).\($0.descriptor.method)" == name }) {
            return method
        }
        let names = RosterSchema.methods.map(\.shortName)
        let suggestion = Suggestion.closest(to: name, among: names)
            // A method named right under a wrong (or retired) service: Coordinator.ListFiles.
            ?? Suggestion.closest(to: String(name.split(separator: ".").last ?? ""), among: names, by: { String($0.split(separator: ".").last ?? "") })
        throw CLIError("no RPC named \(name)" + (suggestion.map { "; did you mean \($0)?" } ?? "") + " (`roster call --list` shows them all)")
    }

    /// Who calls each service, for `--list`: the services grouped by audience.
    static let audiences: [(title: String, services: [String])] = [
        ("Applications (--token)", [MatchService.name]),
        ("Operators (--operator-token; the match server's MatchAdmin: --admin-token)", [IngestAdmin.name, MatchAdmin.name]),
        ("The serving tier (match servers register with a node token; applications read placement with --token)", [Tier.name]),
        ("Internal: block workers only (a worker token); listed to debug a worker", [TaskQueue.name]),
    ]

    /// A method's description for `--list`: its doc comment's first sentence, whole.
    static func summary(_ doc: String) -> String {
        let text = doc.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ")
        guard let end = text.range(of: ". ") else { return text }
        return String(text[..<end.lowerBound]) + "."
    }

    func run() async throws {
        if list {
            for (title, services) in Self.audiences {
                print(title + ":")
                for service in services {
                for m in RosterSchema.methods where m.descriptor.service == service {
                    let doc = m.doc.isEmpty ? "" : "  — " + Self.summary(m.doc)
                    print("  \(m.shortName)(\(m.requestType.protoName.split(separator: ".").last!)) returns "
                          + "(\(m.responseType.protoName.split(separator: ".").last!))\(doc)")
                }
                }
            }
            return
        }
        if let describe {
            var seen: Set<String> = []
            if !describe.contains("."), let type = Self.message(named: describe) {
                print(Self.definitions(type, seen: &seen).joined(separator: "\n\n"))
                print("\nAs JSON, with every field at its default:\n" + type.init().jsonText(includeDefaults: true))
                return
            }
            if !describe.contains("."), let definition = Self.enumDefinition(named: describe) {
                print(definition + "\n\nIn JSON a value is written by its name; its number is accepted too.")
                return
            }
            let m = try Self.find(describe)
            if !m.doc.isEmpty { print(m.doc.split(separator: "\n").map { "/// " + $0 }.joined(separator: "\n")) }
            print("rpc \(m.descriptor.method)(\(m.requestType.protoName)) returns (\(m.responseType.protoName)); // id 0x\(String(m.descriptor.id, radix: 16))\n")
            print((Self.definitions(m.requestType, seen: &seen) + Self.definitions(m.responseType, seen: &seen)).joined(separator: "\n\n"))
            print("\nDefault request as JSON:\n" + m.requestType.init().jsonText(includeDefaults: true))
            return
        }
        guard let name = method else { throw ValidationError("name an RPC (Service.Method), or use --list") }
        let m = try Self.find(name)
        var text = request ?? "{}"
        if text == "-" || text == "@-" {
            text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
        } else if text.hasPrefix("@") {
            let path = String(text.dropFirst())
            guard let data = FileManager.default.contents(atPath: path) else { throw CLIError("cannot read \(path)") }
            text = String(decoding: data, as: UTF8.self)
        }
        let json: JSONValue
        do {
            json = try JSONValue(parsing: text)
            _ = try m.requestType.init(json: json)
        } catch {
            throw CLIError("bad request for \(m.shortName): \(error)")
        }
        let service = m.descriptor.service
        let (endpoints, routed) = client.route(service)
        let callOptions = metadata.applied(to: routed)
        do {
            let response = try await withCoordinator(endpoints, tls: try client.clientTLS()) { rpc in
                try await userFacing("\(m.shortName) failed") { try await m.call(json, on: rpc, options: callOptions) }
            }
            print(response.serialized(pretty: true))
        } catch var error as CLIError where error.status == .invalidArgument {
            if let hint = Self.hexHint(json) { error.description += " (\(hint))" }
            throw error
        }
    }

    /// For a request the server refused: a string that looks like hex where
    /// bytes are base64 in JSON, with what it is in base64.
    static func hexHint(_ json: JSONValue) -> String? {
        switch json {
        case .string(let text) where text.count >= 16 && text.count % 2 == 0 && text.allSatisfy(\.isHexDigit):
            var bytes: [UInt8] = []
            var index = text.startIndex
            while index < text.endIndex {
                let next = text.index(index, offsetBy: 2)
                bytes.append(UInt8(text[index..<next], radix: 16)!)
                index = next
            }
            return "bytes fields are base64 in JSON: '\(text)' looks like hex, which in base64 is \"\(Data(bytes).base64EncodedString())\""
        case .object(let fields):
            return fields.lazy.compactMap { hexHint($0.1) }.first
        case .array(let values):
            return values.lazy.compactMap { hexHint($0) }.first
        default:
            return nil
        }
    }
}

/// `-H key:value`, as grpcurl's: metadata sent with every call (`call`, `load`).
struct MetadataOptions: ParsableArguments {
    @Option(name: .customShort("H"), help: "Metadata to send, key:value (repeatable), as grpcurl's -H.")
    var header: [String] = []

    func validate() throws {
        for h in header where !h.contains(":") || h.hasPrefix(":") {
            throw ValidationError("-H '\(h)' is not key:value")
        }
    }

    /// `options` with the headers added (keys lowercased, values trimmed).
    func applied(to options: CallOptions) -> CallOptions {
        var options = options
        for h in header {
            let colon = h.firstIndex(of: ":")!
            options.metadata[h[..<colon].trimmingCharacters(in: .whitespaces).lowercased()] = h[h.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return options
    }
}

/// "Did you mean …?" for a mistyped name (a flag, a command, an RPC): the
/// closest candidate by edit distance, case-insensitive, if it is close
/// enough to be a typo (`within` edits; by default 2, or a third of the name).
enum Suggestion {
    static func closest(to name: String, among candidates: [String], within: Int? = nil,
                        by key: (String) -> String = { $0 }) -> String? {
        let typed = name.lowercased()
        guard !typed.isEmpty else { return nil }
        var best: (name: String, score: Int)?
        for candidate in candidates.sorted() {
            let score = distance(typed, key(candidate).lowercased())
            if best == nil || score < best!.score { best = (candidate, score) }
        }
        guard let best, best.score <= (within ?? max(2, typed.count / 3)) else { return nil }
        return best.name
    }

    /// Levenshtein distance.
    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var previous = Array(0...b.count)
        for (i, x) in a.enumerated() {
            var current = [i + 1] + Array(repeating: 0, count: b.count)
            for (j, y) in b.enumerated() {
                current[j + 1] = min(previous[j + 1] + 1, current[j] + 1, previous[j] + (x == y ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}
